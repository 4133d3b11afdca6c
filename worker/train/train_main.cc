// lathe-train --spec SPEC.json --out DIR: the training child. Writes one JSON
// event per line to stdout (flushed per line) and nothing else; diagnostics go
// to stderr. Exit codes: 0 success, 2 invalid input (data, params, model,
// resume directory), 3 out of memory, 1 other failure; a non-zero exit is
// preceded by an {"type":"error","message":...} line. SIGUSR1 asks for a
// checkpoint at the next step boundary ("checkpoint now").
//
// lathe-train init-model PRESET --out DIR [--seed N] [--assets DIR]: writes a
// random-initialisation base model in the Hugging Face layout (for
// pre-training from scratch, or to push to the model store).
//
// lathe-train predict --model DIR --task TASK --input FILE [--param K=V]...
// [--device cpu|cuda:N]: prints one JSON object per input row (what
// `lathe predict` runs on a worker).
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "absl/strings/numbers.h"
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

int InitModel(int argc, char** argv) {
  const char* usage =
      "usage: lathe-train init-model PRESET --out DIR [--seed N] "
      "[--assets DIR]";
  std::string preset, out, assets, seed = "42";
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--out" || arg == "--seed" || arg == "--assets") &&
        i + 1 < argc) {
      (arg == "--out" ? out : arg == "--seed" ? seed : assets) = argv[++i];
    } else if (preset.empty() && arg[0] != '-') {
      preset = arg;
    } else {
      std::fprintf(stderr, "%s (bad argument \"%s\")\n", usage, arg.c_str());
      return 2;
    }
  }
  int64_t seed_value = 0;
  if (preset.empty() || out.empty() || !absl::SimpleAtoi(seed, &seed_value)) {
    std::fprintf(stderr, "%s\n", usage);
    return 2;
  }
  const absl::Status status =
      lathe::WritePresetModel(preset, assets, seed_value, out);
  if (!status.ok()) {
    std::fprintf(stderr, "lathe-train: %s\n",
                 std::string(status.message()).c_str());
    return lathe::ExitCodeForStatus(status);
  }
  std::printf("%s\n", out.c_str());
  return 0;
}

int PredictCommand(int argc, char** argv) {
  const char* usage =
      "usage: lathe-train predict --model DIR --task TASK --input FILE "
      "[--param K=V]... [--device cpu|cuda:N]";
  std::string model, task, input, device = "cpu";
  std::map<std::string, std::string> params;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s\n", usage);
      return 2;
    }
    const std::string value = argv[++i];
    if (arg == "--model") {
      model = value;
    } else if (arg == "--task") {
      task = value;
    } else if (arg == "--input") {
      input = value;
    } else if (arg == "--device") {
      device = value;
    } else if (arg == "--param" && value.find('=') != std::string::npos) {
      params[value.substr(0, value.find('='))] =
          value.substr(value.find('=') + 1);
    } else {
      std::fprintf(stderr, "%s (bad argument \"%s\")\n", usage, arg.c_str());
      return 2;
    }
  }
  if (model.empty() || task.empty() || input.empty()) {
    std::fprintf(stderr, "%s\n", usage);
    return 2;
  }
  auto rows = lathe::RunPrediction(model, task, input, input, params, device);
  if (!rows.ok()) {
    std::fprintf(stderr, "lathe-train: %s\n",
                 std::string(rows.status().message()).c_str());
    return lathe::ExitCodeForStatus(rows.status());
  }
  for (const auto& row : *rows) {
    const std::string line =
        row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

// Every training step allocates and frees the same activation and gradient
// buffers, many of them megabytes. With glibc's defaults those above its
// (adaptive) mmap threshold are mapped and unmapped each step, and the heap
// top is trimmed back to the system, so the next step faults the pages in
// again: about 30,000 page faults per step on preset:bert-mini at batch 32.
// Keeping buffers up to 64 MiB in the heap, and trimming only above 256 MiB
// of free top, removes most of them (docs/benchmarks.md has the measurement).
void TuneAllocatorForTraining() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  TuneAllocatorForTraining();
  if (argc > 1 && std::string(argv[1]) == "init-model") {
    return InitModel(argc, argv);
  }
  if (argc > 1 && std::string(argv[1]) == "predict") {
    return PredictCommand(argc, argv);
  }
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
