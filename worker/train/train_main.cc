// lathe-train --spec SPEC.json --out DIR: the training child. Writes one JSON
// event per line to stdout (flushed per line) and nothing else; diagnostics go
// to stderr. Exit codes: 0 success, 2 invalid input (data, params, model,
// resume directory), 3 out of memory, 1 other failure; a non-zero exit is
// preceded by an {"type":"error","message":...} line. SIGUSR1 asks for a
// checkpoint at the next step boundary ("checkpoint now").
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "common/files.h"
#include "nlohmann/json.hpp"
#include "worker/train/trainer.h"

namespace {

void EmitLine(const nlohmann::json& event) {
  const std::string line =
      event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

int Fail(int code, const std::string& message) {
  EmitLine({{"type", "error"}, {"message", message}});
  std::fprintf(stderr, "lathe-train: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // First, so that an early "checkpoint now" cannot kill the child.
  lathe::InstallCheckpointSignalHandler();
  std::string spec_path;
  std::string out_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--spec" || arg == "--out") && i + 1 < argc) {
      (arg == "--spec" ? spec_path : out_dir) = argv[++i];
    } else if (arg == "--help" || arg == "-h") {
      std::fprintf(stderr, "usage: lathe-train --spec SPEC.json --out DIR\n");
      return 0;
    } else {
      return Fail(
          2, "usage: lathe-train --spec SPEC.json --out DIR (bad argument \"" +
                 arg + "\")");
    }
  }
  if (spec_path.empty() || out_dir.empty()) {
    return Fail(2, "usage: lathe-train --spec SPEC.json --out DIR");
  }
  auto text = lathe::ReadFile(spec_path);
  if (!text.ok()) return Fail(2, std::string(text.status().message()));
  auto spec = lathe::TrainSpec::FromJson(*text);
  if (!spec.ok()) return Fail(2, std::string(spec.status().message()));
  const absl::Status status =
      lathe::RunTraining(*spec, lathe::CanonicalPath(out_dir), EmitLine);
  if (!status.ok()) {
    return Fail(lathe::ExitCodeForStatus(status),
                std::string(status.message()));
  }
  return 0;
}
