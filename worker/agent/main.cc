// lathe-worker: the worker agent. `lathe-worker train ...` runs the training
// child directly (it executes lathe-train, which links LibTorch).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/files.h"
#include "worker/agent/agent.h"

namespace {

constexpr char kUsage[] =
    "usage: lathe-worker [flags]\n"
    "       lathe-worker train --spec SPEC.json --out DIR\n"
    "  --server HOST:PORT   the lathe-server to dial (default $LATHE_SERVER "
    "or\n"
    "                       127.0.0.1:50051)\n"
    "  --name NAME          worker name (default: the host name)\n"
    "  --device DEV         cpu (default) or cuda:N\n"
    "  --device-count N     train on N devices from --device on (cuda:N,\n"
    "                       cuda:N+1, ...; on cpu, N processes); a job that\n"
    "                       asks for several runs data-parallel (default 1)\n"
    "  --work-dir DIR       dataset cache and job folders\n"
    "                       (default ./lathe-worker-data)\n"
    "  --assets-dir DIR     tokenizer assets for presets (default: beside the\n"
    "                       binaries)\n"
    "  --train-binary PATH  the training child (default: lathe-train beside\n"
    "                       this binary)\n"
    "  --device-memory-mb MB  device memory to advertise (default: detected)\n"
    "  --gang-address HOST  where other workers reach this one when a job\n"
    "                       spread over several workers has its rank 0\n"
    "                       here (default 127.0.0.1: one machine only)\n"
    "  --token-file FILE    the worker-role token (default $LATHE_TOKEN)\n"
    "  --tls-ca FILE        dial the server over TLS and verify it against\n"
    "                       this PEM bundle\n"
    "  --tls-cert FILE      with --tls-key: the client certificate to present\n"
    "                       (a server with --tls-client-ca requires one)\n"
    "  --tls-key FILE       the client certificate's PEM private key\n"
    "  --tls-server-name NAME  the name the server's certificate must carry\n"
    "                       (default: the host in --server)\n"
    "On SIGTERM the worker checkpoints its running job, gives it back to the\n"
    "queue and exits.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "train") {
    std::string bin = lathe::ExecutableDir() + "/lathe-train";
    std::vector<char*> args = {bin.data()};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    args.push_back(nullptr);
    ::execv(bin.c_str(), args.data());
    std::perror("lathe-worker: cannot execute lathe-train");
    return 1;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  lathe::KeepFreedMemoryForStreaming();

  lathe::worker::AgentOptions opts;
  std::string token_file;
  if (const char* env = std::getenv("LATHE_SERVER")) opts.server = env;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    std::string v;
    auto eq = a.find('=');
    if (eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      std::fprintf(stderr, "lathe-worker: %s needs a value\n%s", a.c_str(),
                   kUsage);
      return 2;
    }
    if (a == "--server")
      opts.server = v;
    else if (a == "--name")
      opts.name = v;
    else if (a == "--device")
      opts.device = v;
    else if (a == "--device-count")
      opts.device_count = std::atoi(v.c_str());
    else if (a == "--work-dir")
      opts.work_dir = v;
    else if (a == "--assets-dir")
      opts.assets_dir = v;
    else if (a == "--device-memory-mb")
      opts.device_memory_mb = std::atoll(v.c_str());
    else if (a == "--train-binary")
      opts.train_binary = v;
    else if (a == "--token-file")
      token_file = v;
    else if (a == "--gang-address")
      opts.gang_address = v;
    else if (a == "--tls-ca")
      opts.tls.ca = v;
    else if (a == "--tls-cert")
      opts.tls.cert = v;
    else if (a == "--tls-key")
      opts.tls.key = v;
    else if (a == "--tls-server-name")
      opts.tls_server_name = v;
    else {
      std::fprintf(stderr, "lathe-worker: unknown flag %s\n%s", a.c_str(),
                   kUsage);
      return 2;
    }
  }
  if (opts.gang_address.empty() || opts.gang_address.size() > 253 ||
      opts.gang_address.find_first_of(": /") != std::string::npos) {
    std::fprintf(stderr,
                 "lathe-worker: --gang-address must be a host name or IPv4 "
                 "address\n");
    return 2;
  }
  if (opts.device != "cpu" && opts.device.rfind("cuda:", 0) != 0) {
    std::fprintf(stderr, "lathe-worker: --device must be cpu or cuda:N\n");
    return 2;
  }
  if (opts.device_count < 1 || opts.device_count > 64) {
    std::fprintf(stderr, "lathe-worker: --device-count must be in [1, 64]\n");
    return 2;
  }
  if (auto token = lathe::ReadToken(token_file); !token.ok()) {
    std::fprintf(stderr, "lathe-worker: %s\n",
                 std::string(token.status().message()).c_str());
    return 2;
  } else {
    opts.token = *token;
  }
  if (opts.tls.cert.empty() != opts.tls.key.empty()) {
    std::fprintf(stderr, "lathe-worker: %s\n",
                 opts.tls.cert.empty() ? "--tls-key needs --tls-cert"
                                       : "--tls-cert needs --tls-key");
    return 2;
  }
  if (!opts.tls_server_name.empty() && !opts.tls.enabled()) {
    std::fprintf(stderr, "lathe-worker: --tls-server-name needs --tls-ca\n");
    return 2;
  }
  auto agent = lathe::worker::Agent::Create(opts);
  if (!agent.ok()) {
    std::fprintf(stderr, "lathe-worker: %s\n",
                 agent.status().ToString().c_str());
    return 1;
  }
  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    std::fprintf(stderr, "lathe-worker: stopping (signal %d)\n", sig);
    (*agent)->Stop();
  });
  signals.detach();
  auto s = (*agent)->Run();
  if (!s.ok()) {
    std::fprintf(stderr, "lathe-worker: %s\n",
                 std::string(s.message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "lathe-worker: stopped\n");
  return 0;
}
