// lathe-server: the control server. One object (ServerProcess) owns the
// lifecycle: validate flags, build, start, serve, and drain on SIGTERM.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/files.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "prometheus/exposer.h"
#include "server/api/services.h"
#include "server/core/artifacts.h"
#include "server/core/job_manager.h"
#include "server/core/metrics.h"
#include "server/core/store.h"
#include "server/fetch/remote_fetch.h"
#include "server/http/gateway.h"
#include "server/identity_files.h"
#include "server/local_workers.h"
#include "server/tls.h"
#include "server/webhooks/sender.h"
#include "server/webhooks/signature.h"

namespace lathe::server {
namespace {

constexpr char kUsage[] =
    "usage: lathe-server [flags]\n"
    "  --listen HOST:PORT          gRPC address (default 127.0.0.1:50051;\n"
    "                              port 0 picks a free port)\n"
    "  --metrics-listen HOST:PORT  Prometheus /metrics (default "
    "127.0.0.1:9464)\n"
    "  --http-listen HOST:PORT     also serve the dashboard and the JSON API\n"
    "                              over HTTP (HTTPS with --tls-cert); off\n"
    "                              unless given; port 0 picks a free port\n"
    "  --data-dir DIR              database, artifacts and logs (default\n"
    "                              ./lathe-data)\n"
    "  --local-workers N           start N worker agents beside the server\n"
    "  --allow-root DIR            a directory jobs may read models and "
    "file://\n"
    "                              datasets from (repeatable)\n"
    "  --worker-device DEV         device of the local workers (default cpu)\n"
    "  --worker-device-count N     devices of each local worker from\n"
    "                              --worker-device on (default 1; on cpu, N\n"
    "                              training processes for multi-device jobs)\n"
    "  --heartbeat-timeout-ms MS   drop a silent worker after MS (default "
    "15000)\n"
    "  --max-upload-mb MB          largest dataset or checkpoint file (4096)\n"
    "  --max-model-mb MB           largest model pushed to the model store,\n"
    "                              all files together (20480)\n"
    "  --max-model-files N         most files in one pushed model (10000)\n"
    "  --max-running-per-owner N   running jobs one owner may have (0: any)\n"
    "  --gang-reservation-s S      how long a job for several workers may\n"
    "                              hold the idle workers it gathers (60)\n"
    "  --audit-retention-days D    keep the audit log D days (default 90)\n"
    "  --submit-rate N             submits per second per token, members and\n"
    "                              viewers (default 20; 0: no limit)\n"
    "  --submit-burst N            submits one token may send at once (100)\n"
    "  --max-streams-per-user N    open watches, downloads and uploads per\n"
    "                              user (default 64; 0: no limit)\n"
    "  --stream-idle-timeout-s S   end an upload that sent nothing for S\n"
    "                              seconds (default 300; 0: never)\n"
    "  --keep-checkpoints K        keep the last K checkpoints of a job and "
    "its\n"
    "                              best (default 3; 0 keeps all)\n"
    "  --tls-cert FILE             serve gRPC over TLS with this PEM\n"
    "                              certificate chain (with --tls-key); both\n"
    "                              files are reread when they change\n"
    "  --tls-key FILE              the certificate's PEM private key\n"
    "  --tls-client-ca FILE        require client certificates that chain to\n"
    "                              this PEM bundle (mTLS)\n"
    "  --tls-local-ca FILE         the CA local workers verify the server\n"
    "                              with (default: the --tls-cert file)\n"
    "  --allow-uri-host HOST       a host job webhooks may call and https://\n"
    "                              or s3:// datasets may come from\n"
    "                              (repeatable; *.example.com for its\n"
    "                              subdomains; loopback and link-local only\n"
    "                              when named exactly)\n"
    "  --s3-endpoint URL           http(s)://HOST[:PORT] of an S3-compatible\n"
    "                              store for s3:// datasets (default: AWS);\n"
    "                              credentials from AWS_ACCESS_KEY_ID,\n"
    "                              AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,\n"
    "                              region from AWS_REGION\n"
    "  --uri-ca FILE               PEM bundle to verify https:// dataset\n"
    "                              sources and the S3 endpoint with\n"
    "                              (default: the system's)\n"
    "  --webhook-secret-file FILE  the whsec_ secret webhooks are signed with\n"
    "                              (default DATA_DIR/webhook.secret, created\n"
    "                              on first start)\n"
    "  --webhook-ca FILE           PEM bundle to verify https webhook\n"
    "                              receivers with (default: the system's)\n"
    "  --insecure                  allow --listen and --http-listen on an\n"
    "                              address other than loopback without TLS,\n"
    "                              and --metrics-listen (plain HTTP) on one\n"
    "The chosen addresses are written to DATA_DIR/server.json once serving.\n";

struct Flags {
  std::string listen = "127.0.0.1:50051";
  std::string metrics_listen = "127.0.0.1:9464";
  std::string http_listen;  // empty: no HTTP listener
  std::string data_dir = "lathe-data";
  int local_workers = 0;
  std::vector<std::string> allow_roots;
  std::string worker_device = "cpu";
  int64_t worker_device_count = 1;
  int64_t heartbeat_timeout_ms = 15000;
  int64_t gang_reservation_s = 60;
  int64_t max_upload_mb = 4096;
  int64_t max_model_mb = 20480;
  int64_t max_model_files = 10000;
  int64_t max_running_per_owner = 0;
  int64_t keep_checkpoints = 3;
  int64_t audit_retention_days = 90;
  int64_t submit_rate = 20;
  int64_t submit_burst = 100;
  int64_t max_streams_per_user = 64;
  int64_t stream_idle_timeout_s = 300;
  bool insecure = false;
  ServerTlsFiles tls;        // --tls-cert, --tls-key, --tls-client-ca
  std::string tls_local_ca;  // --tls-local-ca
  std::vector<std::string> allow_uri_hosts;
  std::string webhook_secret_file;  // empty: DATA_DIR/webhook.secret
  std::string webhook_ca;
  std::string s3_endpoint;
  std::string uri_ca;
};

std::string HostOf(const std::string& addr) {
  auto colon = addr.rfind(':');
  return colon == std::string::npos ? addr : addr.substr(0, colon);
}

// 127.0.0.0/8, ::1 and localhost; a Unix socket is local too.
bool IsLoopback(const std::string& addr) {
  if (absl::StartsWith(addr, "unix:")) return true;
  const std::string host = HostOf(addr);
  return host == "localhost" || host == "[::1]" || host == "::1" ||
         absl::StartsWith(host, "127.");
}

// A listener beyond loopback carries tokens and every job's data over the
// network: gRPC needs TLS there, and the metrics endpoint (plain HTTP; the
// Prometheus exposer has no TLS) needs the operator to say so.
absl::Status CheckListeners(const Flags& f) {
  RETURN_IF_ERROR(CheckServerTlsFiles(f.tls));
  if (!f.tls_local_ca.empty() && !f.tls.enabled()) {
    return absl::InvalidArgumentError(
        "--tls-local-ca needs --tls-cert and --tls-key");
  }
  if (f.local_workers > 0 && !f.tls.client_ca.empty()) {
    return absl::InvalidArgumentError(
        "--local-workers cannot be combined with --tls-client-ca: the local "
        "workers have no client certificate to present. Run the workers as "
        "separate lathe-worker processes with --tls-cert/--tls-key, or drop "
        "--tls-client-ca");
  }
  if (!f.insecure && !IsLoopback(f.listen) && !f.tls.enabled()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--listen ", f.listen,
        " is not a loopback address, and it needs TLS: without it tokens and "
        "every job's data would cross the network in the clear. Pass "
        "--tls-cert/--tls-key, listen on 127.0.0.1 (and reach it through an "
        "SSH tunnel), or pass --insecure to serve it without TLS on a "
        "network you trust."));
  }
  if (!f.http_listen.empty() && !f.insecure && !IsLoopback(f.http_listen) &&
      !f.tls.enabled()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--http-listen ", f.http_listen,
        " is not a loopback address, and it needs TLS: without it tokens and "
        "every job's data would cross the network in the clear. Pass "
        "--tls-cert/--tls-key (the HTTP listener serves HTTPS with them), "
        "listen on 127.0.0.1, or pass --insecure to serve it without TLS on "
        "a network you trust."));
  }
  if (!f.insecure && !IsLoopback(f.metrics_listen)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--metrics-listen ", f.metrics_listen,
        " is not a loopback address, and the metrics endpoint is plain HTTP "
        "(it has no TLS, whatever --tls-cert says). Listen on 127.0.0.1 (and "
        "scrape it through a tunnel or a TLS proxy), or pass --insecure to "
        "serve it on a network you trust."));
  }
  if (!f.tls_local_ca.empty()) {
    std::ifstream in(f.tls_local_ca);
    if (!in) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls-local-ca ", f.tls_local_ca, ": cannot read the file"));
    }
  }
  return absl::OkStatus();
}

// The TLS flags of a local worker: it dials this server on loopback and
// verifies it with --tls-local-ca, by default the server's own certificate
// file (gRPC takes the certificate there as a trust anchor, self-signed or
// not; tests/e2e/tls_test.cc), against the certificate's host name rather
// than the loopback address it dials. Empty without TLS.
std::vector<std::string> LocalWorkerTlsArgs(const Flags& f) {
  if (!f.tls.enabled()) return {};
  std::vector<std::string> args = {
      "--tls-ca", f.tls_local_ca.empty() ? f.tls.cert : f.tls_local_ca};
  if (std::string name = CertificateHostName(f.tls.cert); !name.empty()) {
    args.insert(args.end(), {"--tls-server-name", name});
  }
  return args;
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    auto eq = a.find('=');
    if (eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (a != "--help" && a != "-h" && a != "--insecure") {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
      }
      v = argv[++i];
    }
    auto int_flag = [&](int64_t* out, int64_t lo, int64_t hi) -> absl::Status {
      if (!absl::SimpleAtoi(v, out) || *out < lo || *out > hi) {
        return absl::InvalidArgumentError(absl::StrCat(
            a, ": \"", v, "\" is not an integer in [", lo, ", ", hi, "]"));
      }
      return absl::OkStatus();
    };
    if (a == "--insecure") {  // a switch; --insecure=false turns it off
      f.insecure = eq == std::string::npos || v == "true" || v == "1";
      continue;
    }
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--listen") {
      f.listen = v;
    } else if (a == "--metrics-listen") {
      f.metrics_listen = v;
    } else if (a == "--http-listen") {
      f.http_listen = v;
    } else if (a == "--data-dir") {
      f.data_dir = v;
    } else if (a == "--local-workers") {
      int64_t n;
      RETURN_IF_ERROR(int_flag(&n, 0, 64));
      f.local_workers = static_cast<int>(n);
    } else if (a == "--allow-root") {
      f.allow_roots.push_back(CanonicalPath(v));
    } else if (a == "--worker-device") {
      f.worker_device = v;
    } else if (a == "--worker-device-count") {
      RETURN_IF_ERROR(int_flag(&f.worker_device_count, 1, 64));
    } else if (a == "--heartbeat-timeout-ms") {
      RETURN_IF_ERROR(int_flag(&f.heartbeat_timeout_ms, 2000, 3600000));
    } else if (a == "--gang-reservation-s") {
      RETURN_IF_ERROR(int_flag(&f.gang_reservation_s, 1, 86400));
    } else if (a == "--max-running-per-owner") {
      RETURN_IF_ERROR(int_flag(&f.max_running_per_owner, 0, 1 << 20));
    } else if (a == "--submit-rate") {
      RETURN_IF_ERROR(int_flag(&f.submit_rate, 0, 1000000));
    } else if (a == "--submit-burst") {
      RETURN_IF_ERROR(int_flag(&f.submit_burst, 1, 1000000));
    } else if (a == "--stream-idle-timeout-s") {
      RETURN_IF_ERROR(int_flag(&f.stream_idle_timeout_s, 0, 86400));
    } else if (a == "--max-streams-per-user") {
      RETURN_IF_ERROR(int_flag(&f.max_streams_per_user, 0, 1000000));
    } else if (a == "--audit-retention-days") {
      RETURN_IF_ERROR(int_flag(&f.audit_retention_days, 1, 36500));
    } else if (a == "--keep-checkpoints") {
      RETURN_IF_ERROR(int_flag(&f.keep_checkpoints, 0, 1 << 20));
    } else if (a == "--max-upload-mb") {
      RETURN_IF_ERROR(int_flag(&f.max_upload_mb, 1, 1 << 20));
    } else if (a == "--max-model-mb") {
      RETURN_IF_ERROR(int_flag(&f.max_model_mb, 1, 1 << 24));
    } else if (a == "--max-model-files") {
      RETURN_IF_ERROR(int_flag(&f.max_model_files, 1, 1000000));
    } else if (a == "--tls-cert") {
      f.tls.cert = v;
    } else if (a == "--tls-key") {
      f.tls.key = v;
    } else if (a == "--tls-client-ca") {
      f.tls.client_ca = v;
    } else if (a == "--tls-local-ca") {
      f.tls_local_ca = v;
    } else if (a == "--allow-uri-host") {
      f.allow_uri_hosts.push_back(v);
    } else if (a == "--webhook-secret-file") {
      f.webhook_secret_file = v;
    } else if (a == "--webhook-ca") {
      f.webhook_ca = v;
    } else if (a == "--s3-endpoint") {
      f.s3_endpoint = v;
    } else if (a == "--uri-ca") {
      f.uri_ca = v;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a));
    }
  }
  RETURN_IF_ERROR(CheckListeners(f));
  return f;
}

class ServerProcess {
 public:
  explicit ServerProcess(Flags flags) : flags_(std::move(flags)) {}

  absl::Status Run() {
    flags_.data_dir = CanonicalPath(flags_.data_dir);
    RETURN_IF_ERROR(MakeDirs(flags_.data_dir + "/logs"));
    // The database, the artifacts and the token files are this user's alone.
    ::chmod(flags_.data_dir.c_str(), 0700);
    ASSIGN_OR_RETURN(store_, Store::Open(flags_.data_dir + "/lathe.db"));
    ASSIGN_OR_RETURN(artifacts_,
                     ArtifactStore::Open(flags_.data_dir + "/artifacts"));
    metrics_ = std::make_unique<Metrics>();
    JobManagerOptions opts;
    opts.allowed_roots = flags_.allow_roots;
    opts.heartbeat_timeout = absl::Milliseconds(flags_.heartbeat_timeout_ms);
    opts.gang_reservation = absl::Seconds(flags_.gang_reservation_s);
    opts.max_upload_bytes = flags_.max_upload_mb << 20;
    opts.max_running_per_owner = static_cast<int>(flags_.max_running_per_owner);
    opts.keep_checkpoints = static_cast<int>(flags_.keep_checkpoints);
    opts.models.max_model_bytes = flags_.max_model_mb << 20;
    opts.models.max_files = static_cast<int>(flags_.max_model_files);
    opts.allowed_uri_hosts = flags_.allow_uri_hosts;
    RemoteFetchOptions fetch;
    fetch.policy = UriPolicy(flags_.allow_uri_hosts);
    fetch.ca_file = flags_.uri_ca;
    fetch.s3_endpoint = flags_.s3_endpoint;
    fetch.s3_region = RemoteFetcher::RegionFromEnvironment();
    fetch.credentials = RemoteFetcher::CredentialsFromEnvironment();
    fetch.log = [](const std::string& line) {
      std::fprintf(stderr, "lathe-server: %s\n", line.c_str());
    };
    ASSIGN_OR_RETURN(remote_data_, RemoteFetcher::Create(std::move(fetch)));
    opts.remote_data = remote_data_.get();
    // Commits reach the webhook sender once it exists (it needs the
    // manager to record its deliveries).
    opts.on_commit = [this](const lathe::v1::Job& job,
                            const std::vector<lathe::v1::Event>& events) {
      if (WebhookSender* w = webhooks_ptr_.load()) w->OnCommit(job, events);
    };
    ASSIGN_OR_RETURN(manager_,
                     JobManager::Create(opts, store_.get(), artifacts_.get(),
                                        metrics_.get()));
    RETURN_IF_ERROR(StartWebhooks());
    ASSIGN_OR_RETURN(identities_, Identities::Open(store_.get()));
    RETURN_IF_ERROR(WriteFirstAdminToken(identities_.get(), flags_.data_dir));
    audit_ = std::make_unique<AuditLog>(
        store_.get(), absl::Hours(24) * flags_.audit_retention_days,
        /*max_rows=*/10'000'000);

    try {
      exposer_ = std::make_unique<prometheus::Exposer>(flags_.metrics_listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat(
          "cannot serve metrics on ", flags_.metrics_listen, ": ", e.what()));
    }
    exposer_->RegisterCollectable(metrics_->registry());
    const auto metric_ports = exposer_->GetListeningPorts();
    const std::string metrics_addr =
        absl::StrCat(HostOf(flags_.metrics_listen), ":",
                     metric_ports.empty() ? 0 : metric_ports[0]);

    Gate gate(Core{manager_.get(), manager_->models(), artifacts_.get(),
                   identities_.get(), audit_.get()},
              metrics_.get(),
              LimitOptions{static_cast<double>(flags_.submit_rate),
                           static_cast<double>(flags_.submit_burst),
                           static_cast<int>(flags_.max_streams_per_user)},
              absl::Seconds(flags_.stream_idle_timeout_s));
    JobServiceImpl jobs(&gate);
    DatasetServiceImpl datasets(&gate);
    ModelServiceImpl models(&gate);
    WorkerServiceImpl workers(&gate);
    AdminServiceImpl admin(&gate);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(flags_.listen, ServerCredentials(flags_.tls),
                             &port);
    builder.SetMaxReceiveMessageSize(8 << 20);
    // Large HTTP/2 frames: a 1 MiB download chunk crosses in one frame
    // rather than 64 (the receive window stays the default, so a client
    // cannot make the server buffer more for an upload).
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, (16 << 20) - 1);
    builder.RegisterService(&jobs);
    builder.RegisterService(&datasets);
    builder.RegisterService(&models);
    builder.RegisterService(&workers);
    builder.RegisterService(&admin);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", flags_.listen));
    }
    const std::string grpc_addr =
        absl::StrCat(HostOf(flags_.listen), ":", port);

    std::string http_addr;
    if (!flags_.http_listen.empty()) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(64 << 20);
      http_ = std::make_unique<HttpGateway>(
          HttpOptions{flags_.http_listen, flags_.tls.cert, flags_.tls.key,
                      flags_.tls.client_ca, flags_.max_upload_mb << 20},
          server_->InProcessChannel(args), &gate);
      auto bound = http_->Start();
      if (!bound.ok()) {
        server_->Shutdown();
        return bound.status();
      }
      http_addr = *bound;
      gate.SetHttp(std::stoi(http_addr.substr(http_addr.rfind(':') + 1)),
                   flags_.tls.enabled());
    }

    std::thread reaper([this, &gate] {
      int round = 0;
      while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(500))) {
        manager_->ExpireWorkers();
        gate.watchdog()->Sweep(absl::Now());
        FlushIdentities();
        if (round++ % 10 == 0) PublishGauges();
      }
      FlushIdentities();
    });

    if (flags_.local_workers > 0) {
      const std::string dial = absl::StrCat(
          HostOf(flags_.listen) == "0.0.0.0" || HostOf(flags_.listen) == "[::]"
              ? "127.0.0.1"
              : HostOf(flags_.listen),
          ":", port);
      ASSIGN_OR_RETURN(
          const std::string token_file,
          WriteLocalWorkerToken(identities_.get(), flags_.data_dir));
      std::vector<std::vector<std::string>> argvs;
      std::vector<std::string> logs;
      for (int i = 0; i < flags_.local_workers; ++i) {
        argvs.push_back({ExecutableDir() + "/lathe-worker", "--server", dial,
                         "--name", absl::StrCat("local-", i), "--work-dir",
                         absl::StrCat(flags_.data_dir, "/workers/", i),
                         "--device", flags_.worker_device, "--device-count",
                         absl::StrCat(flags_.worker_device_count),
                         "--token-file", token_file});
        for (auto& arg : LocalWorkerTlsArgs(flags_))
          argvs.back().push_back(arg);
        logs.push_back(
            absl::StrCat(flags_.data_dir, "/logs/worker-", i, ".log"));
      }
      local_ =
          std::make_unique<LocalWorkers>(std::move(argvs), std::move(logs));
      RETURN_IF_ERROR(local_->Start());
    }

    nlohmann::json info = {{"grpc", grpc_addr},
                           {"metrics", metrics_addr},
                           {"pid", static_cast<int64_t>(::getpid())}};
    if (http_) {
      info["http"] = http_addr;
      info["http_url"] = absl::StrCat(http_->scheme(), "://", http_addr);
    }
    RETURN_IF_ERROR(
        WriteFileAtomic(flags_.data_dir + "/server.json", info.dump() + "\n"));
    std::fprintf(stderr,
                 "lathe-server: serving gRPC on %s, metrics on "
                 "http://%s/metrics, data in %s, %d local worker(s)\n",
                 grpc_addr.c_str(), metrics_addr.c_str(),
                 flags_.data_dir.c_str(), flags_.local_workers);
    if (http_) {
      std::fprintf(stderr, "lathe-server: dashboard and JSON API on %s://%s/\n",
                   http_->scheme(), http_addr.c_str());
    }

    WaitForSignal();
    std::fprintf(stderr, "lathe-server: shutting down\n");
    server_->GetHealthCheckService()->SetServingStatus(false);
    // Local workers first: they give their jobs back through the server.
    if (local_) local_->Stop(10);
    if (http_) http_->Stop();
    manager_->Shutdown();
    webhooks_ptr_.store(nullptr);
    webhooks_.reset();
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
    stop_.Notify();
    reaper.join();
    server_->Wait();
    std::fprintf(stderr, "lathe-server: stopped\n");
    return absl::OkStatus();
  }

 private:
  // Gauges read rather than kept: running jobs per owner, and the data
  // directory's disk (for the disk-filling alert).
  void PublishGauges() {
    metrics_->SetRunningByOwner(manager_->RunningByOwner());
    struct statvfs fs;
    if (::statvfs(flags_.data_dir.c_str(), &fs) == 0) {
      metrics_->SetDataDisk(
          static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize),
          static_cast<double>(fs.f_blocks) * static_cast<double>(fs.f_frsize));
    }
  }

  absl::Status StartWebhooks() {
    const std::string secret_file = flags_.webhook_secret_file.empty()
                                        ? flags_.data_dir + "/webhook.secret"
                                        : flags_.webhook_secret_file;
    ASSIGN_OR_RETURN(std::string secret,
                     LoadOrCreateWebhookSecret(secret_file));
    WebhookOptions w;
    w.policy = UriPolicy(flags_.allow_uri_hosts);
    w.secret = std::move(secret);
    w.ca_file = flags_.webhook_ca;
    JobManager* manager = manager_.get();
    ASSIGN_OR_RETURN(
        webhooks_,
        WebhookSender::Create(
            std::move(w),
            [manager](const std::string& id, const std::string& message) {
              if (absl::Status s = manager->AddNote(id, message); !s.ok()) {
                std::fprintf(stderr, "lathe-server: job %s: %s (%s)\n",
                             id.c_str(), message.c_str(), s.ToString().c_str());
              }
            },
            [manager](const std::string& id) -> absl::StatusOr<int64_t> {
              ASSIGN_OR_RETURN(auto listing, manager->ListCheckpoints(id));
              return listing.second;
            }));
    webhooks_ptr_.store(webhooks_.get());
    return absl::OkStatus();
  }

  // SIGTERM and SIGINT were blocked in every thread before any started;
  // this thread takes them synchronously.
  static void WaitForSignal() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    sigwait(&set, &sig);
  }

  // The audit log's queue and the tokens' last-use times, to the database.
  void FlushIdentities() {
    if (absl::Status s = audit_->Flush(); !s.ok()) {
      std::fprintf(stderr, "lathe-server: audit log: %s\n",
                   s.ToString().c_str());
    }
    if (absl::Status s = identities_->FlushLastUsed(); !s.ok()) {
      std::fprintf(stderr, "lathe-server: token last use: %s\n",
                   s.ToString().c_str());
    }
  }

  Flags flags_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<Metrics> metrics_;
  // Before the manager, which holds a pointer to it.
  std::unique_ptr<RemoteFetcher> remote_data_;
  std::unique_ptr<JobManager> manager_;
  std::unique_ptr<Identities> identities_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<LocalWorkers> local_;
  std::unique_ptr<HttpGateway> http_;
  std::unique_ptr<WebhookSender> webhooks_;
  std::atomic<WebhookSender*> webhooks_ptr_{nullptr};
  absl::Notification stop_;
};

}  // namespace
}  // namespace lathe::server

int main(int argc, char** argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto flags = lathe::server::ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "lathe-server: %s\n%s",
                 std::string(flags.status().message()).c_str(),
                 lathe::server::kUsage);
    return 2;
  }
  lathe::server::ServerProcess process(std::move(*flags));
  absl::Status s = process.Run();
  if (!s.ok()) {
    std::fprintf(stderr, "lathe-server: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
