// Control-plane benchmarks against a real lathe-server process on loopback:
// durable submits per second, submit-to-running latency with an idle worker,
// GetJob requests per second, WatchJob event delivery with many watchers,
// checkpoint download throughput against reading the same file locally
// from the page cache (and the server's memory meanwhile), and start-up time
// and memory with a large history, and the scheduler's cost behind a long
// queue. The benchmark itself plays the worker
// through the WorkerService, so no training runs: these numbers are the
// server's own.
//
// usage: lathe-bench-control [--quick] [--out FILE.md] [--only PHASE,...]
#include <grpcpp/grpcpp.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/wire.h"
#include "client/file_stream.h"
#include "common/channel.h"
#include "common/files.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "server/core/store.h"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"

namespace lathe::bench {
namespace {

using Clock = std::chrono::steady_clock;
using testing::ServerProcess;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int64_t WallUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(
      v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

double Median(std::vector<double> v) { return Percentile(std::move(v), 0.5); }

// Resident and peak memory of a process, in MiB.
std::pair<double, double> MemoryMb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  double rss = 0, hwm = 0;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stod(line.substr(6)) / 1024;
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::stod(line.substr(6)) / 1024;
  }
  return {rss, hwm};
}

// A channel to `server` with the admin's token, or with a worker token
// (created once per server) for the WorkerService.
std::shared_ptr<grpc::Channel> Channel(const ServerProcess& server,
                                       bool worker) {
  static std::mutex mu;
  static std::map<std::string, std::string> worker_tokens;
  std::string file = server.admin_token_file();
  if (worker) {
    std::lock_guard<std::mutex> lock(mu);
    std::string& t = worker_tokens[server.data_dir()];
    if (t.empty()) t = server.NewToken("bench-worker", "", "worker");
    file = t;
  }
  std::ifstream in(file);
  std::string token;
  std::getline(in, token);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, (16 << 20) - 1);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 20);
  // Separate connections per client: no multiplexing onto one socket.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = lathe::MakeChannel(server.grpc_address(), {token, {}}, args);
  return channel.ok() ? *channel : nullptr;
}

struct Row {
  std::string what;
  std::string result;
  std::string target;
  std::string verdict;
};

class Bench {
 public:
  explicit Bench(bool quick) : quick_(quick) {}

  bool Start(std::string* why) {
    server_ = std::make_unique<ServerProcess>(
        dir_.path() + "/server", 0,
        std::vector<std::string>{"--http-listen", "127.0.0.1:0"});
    if (!server_->Start(why)) return false;
    jobs_ = lathe::v1::JobService::NewStub(Channel(*server_, false));
    workers_ = lathe::v1::WorkerService::NewStub(Channel(*server_, true));
    dataset_ = UploadDataset(*server_);
    if (dataset_.empty()) {
      *why = "dataset upload failed";
      return false;
    }
    return true;
  }

  // Uploads a one-row dataset; its reference, or empty on failure.
  static std::string UploadDataset(const ServerProcess& server) {
    grpc::ClientContext ctx;
    lathe::v1::UploadDatasetResponse resp;
    auto w = lathe::v1::DatasetService::NewStub(Channel(server, false))
                 ->UploadDataset(&ctx, &resp);
    lathe::v1::UploadDatasetRequest req;
    req.set_name("d.jsonl");
    req.set_chunk("{\"text\":\"x\",\"label\":1}\n");
    w->Write(req);
    w->WritesDone();
    return w->Finish().ok() ? resp.dataset().ref() : "";
  }

  lathe::v1::SubmitJobRequest SubmitRequest() const {
    lathe::v1::SubmitJobRequest req;
    req.mutable_spec()->set_task("text-classification");
    req.mutable_spec()->set_model("preset:bert-tiny");
    req.mutable_spec()->set_train_data(dataset_);
    return req;
  }

  void Submits() {
    const int clients = 16;
    const double duration = quick_ ? 2 : 5;
    std::atomic<int64_t> ok{0}, failed{0};
    std::vector<double> latencies_ms;
    std::mutex mu;
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        auto stub = lathe::v1::JobService::NewStub(Channel(*server_, false));
        std::vector<double> mine;
        while (Seconds(start, Clock::now()) < duration) {
          grpc::ClientContext ctx;
          lathe::v1::SubmitJobResponse resp;
          const auto t0 = Clock::now();
          if (stub->SubmitJob(&ctx, SubmitRequest(), &resp).ok()) {
            ok++;
            mine.push_back(Seconds(t0, Clock::now()) * 1000);
          } else {
            failed++;
          }
        }
        std::lock_guard<std::mutex> lock(mu);
        latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
      });
    }
    for (auto& t : threads) t.join();
    const double rate = static_cast<double>(ok) / Seconds(start, Clock::now());
    rows_.push_back(
        {absl::StrFormat("durable submits/s, %d clients", clients),
         absl::StrFormat("%.0f/s (p50 %.1f ms, p99 %.1f ms, %d failed)", rate,
                         Median(latencies_ms), Percentile(latencies_ms, 0.99),
                         static_cast<int>(failed)),
         ">= 2000/s", rate >= 2000 ? "met" : "missed"});
    // Drain the queue so later measurements start from an empty one.
    DrainQueue();
  }

  std::string RegisterWorker() {
    lathe::v1::RegisterWorkerRequest req;
    req.set_name("bench");
    req.add_devices("cpu");
    lathe::v1::RegisterWorkerResponse resp;
    grpc::ClientContext ctx;
    workers_->RegisterWorker(&ctx, req, &resp);
    return resp.worker_id();
  }

  // Takes every queued job and finishes it, as a worker would.
  void DrainQueue() {
    const std::string w = RegisterWorker();
    while (true) {
      lathe::v1::AcquireJobRequest req;
      req.set_worker_id(w);
      req.set_wait_ms(0);
      lathe::v1::AcquireJobResponse resp;
      grpc::ClientContext ctx;
      if (!workers_->AcquireJob(&ctx, req, &resp).ok() ||
          !resp.has_assignment()) {
        return;
      }
      Finish(resp.assignment());
    }
  }

  void Finish(const lathe::v1::Assignment& a) {
    lathe::v1::FinishAttemptRequest req;
    req.set_job_id(a.job_id());
    req.set_attempt(a.attempt());
    req.set_outcome(lathe::v1::SUCCEEDED);
    lathe::v1::FinishAttemptResponse resp;
    grpc::ClientContext ctx;
    workers_->FinishAttempt(&ctx, req, &resp);
  }

  // Submits a job and takes it as a fresh worker: the job is RUNNING. The
  // worker heartbeats until the phase ends, as a real one would, so a long
  // upload on a busy machine does not lose it the job.
  void StartJob(lathe::v1::SubmitJobResponse* job,
                lathe::v1::AcquireJobResponse* a) {
    const std::string w = RegisterWorker();
    StopHeartbeats();
    heartbeat_stop_ = false;
    heartbeats_ = std::thread([this, w] {
      auto stub = lathe::v1::WorkerService::NewStub(Channel(*server_, true));
      while (!heartbeat_stop_) {
        lathe::v1::HeartbeatRequest req;
        req.set_worker_id(w);
        lathe::v1::HeartbeatResponse resp;
        grpc::ClientContext ctx;
        stub->Heartbeat(&ctx, req, &resp);
        for (int i = 0; i < 10 && !heartbeat_stop_; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    });
    grpc::ClientContext sctx;
    // First in the queue even when earlier phases left jobs queued.
    lathe::v1::SubmitJobRequest submit = SubmitRequest();
    submit.mutable_spec()->set_priority(1000);
    jobs_->SubmitJob(&sctx, submit, job);
    lathe::v1::AcquireJobRequest req;
    req.set_worker_id(w);
    req.set_wait_ms(1000);
    grpc::ClientContext ctx;
    workers_->AcquireJob(&ctx, req, a);
  }

  void SubmitToRunning() {
    const std::string w = RegisterWorker();
    const int n = quick_ ? 50 : 300;
    std::vector<double> ms;
    for (int i = 0; i < n; ++i) {
      // The idle worker waits in its long poll before the submit.
      std::atomic<int64_t> got_us{0};
      lathe::v1::Assignment assignment;
      std::thread poll([&] {
        lathe::v1::AcquireJobRequest req;
        req.set_worker_id(w);
        req.set_wait_ms(10000);
        lathe::v1::AcquireJobResponse resp;
        grpc::ClientContext ctx;
        workers_->AcquireJob(&ctx, req, &resp);
        got_us = WallUs();
        assignment = resp.assignment();
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      grpc::ClientContext ctx;
      lathe::v1::SubmitJobResponse resp;
      const int64_t t0 = WallUs();
      jobs_->SubmitJob(&ctx, SubmitRequest(), &resp);
      poll.join();
      if (assignment.job_id() == resp.job().id()) {
        ms.push_back(static_cast<double>(got_us - t0) / 1000.0);
      }
      Finish(assignment);
    }
    const double p50 = Median(ms), p99 = Percentile(ms, 0.99);
    rows_.push_back(
        {"submit to running, idle worker (submit sent -> worker "
         "holds the job)",
         absl::StrFormat("p50 %.1f ms, p99 %.1f ms (n=%d)", p50, p99,
                         static_cast<int>(ms.size())),
         "p50 < 20 ms", p50 < 20 ? "met" : "missed"});
  }

  void GetJobs() {
    grpc::ClientContext sctx;
    lathe::v1::SubmitJobResponse job;
    jobs_->SubmitJob(&sctx, SubmitRequest(), &job);
    const int clients = 8;
    const double duration = quick_ ? 2 : 5;
    std::atomic<int64_t> ok{0};
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        auto stub = lathe::v1::JobService::NewStub(Channel(*server_, false));
        lathe::v1::GetJobRequest req;
        req.set_id(job.job().id());
        while (Seconds(start, Clock::now()) < duration) {
          grpc::ClientContext ctx;
          lathe::v1::GetJobResponse resp;
          if (stub->GetJob(&ctx, req, &resp).ok()) ok++;
        }
      });
    }
    for (auto& t : threads) t.join();
    rows_.push_back(
        {absl::StrFormat("GetJob requests/s, %d clients", clients),
         absl::StrFormat(
             "%.0f/s", static_cast<double>(ok) / Seconds(start, Clock::now())),
         "(no target)", ""});
    DrainQueue();
  }

  void Watchers() {
    const int watchers = quick_ ? 100 : 1000;
    const int events = quick_ ? 20 : 50;
    lathe::v1::SubmitJobResponse job;
    lathe::v1::AcquireJobResponse a;
    StartJob(&job, &a);
    // Watchers start after the events so far and measure the ones to come.
    int64_t after_seq = 0;
    {
      lathe::v1::GetJobRequest req;
      req.set_id(job.job().id());
      lathe::v1::GetJobResponse resp;
      grpc::ClientContext ctx;
      jobs_->GetJob(&ctx, req, &resp);
      after_seq = resp.job().last_event_seq();
    }
    std::mutex mu;
    std::vector<double> delays_ms;
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    auto channel = Channel(*server_, false);
    for (int i = 0; i < watchers; ++i) {
      threads.emplace_back([&] {
        auto stub = lathe::v1::JobService::NewStub(channel);
        lathe::v1::WatchJobRequest req;
        req.set_id(job.job().id());
        grpc::ClientContext ctx;
        req.set_after_seq(after_seq);
        auto reader = stub->WatchJob(&ctx, req);
        lathe::v1::WatchJobResponse r;
        std::vector<double> mine;
        bool first = true;
        while (reader->Read(&r)) {
          if (first) {
            ready++;
            first = false;
            continue;
          }
          if (r.event().type() == lathe::v1::EVENT_TYPE_LOG) {
            const int64_t sent = std::stoll(r.event().message());
            mine.push_back(static_cast<double>(WallUs() - sent) / 1000.0);
          }
        }
        std::lock_guard<std::mutex> lock(mu);
        delays_ms.insert(delays_ms.end(), mine.begin(), mine.end());
      });
    }
    while (ready < watchers)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (int e = 0; e < events; ++e) {
      lathe::v1::ReportEventsRequest req;
      req.set_job_id(a.assignment().job_id());
      req.set_attempt(a.assignment().attempt());
      auto* ev = req.add_events();
      ev->set_type(lathe::v1::EVENT_TYPE_LOG);
      ev->set_message(std::to_string(WallUs()));
      lathe::v1::ReportEventsResponse resp;
      grpc::ClientContext ctx;
      workers_->ReportEvents(&ctx, req, &resp);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    Finish(a.assignment());
    for (auto& t : threads) t.join();
    const double p50 = Median(delays_ms), p99 = Percentile(delays_ms, 0.99);
    rows_.push_back(
        {absl::StrFormat("WatchJob event delivery, %d watchers", watchers),
         absl::StrFormat("p50 %.1f ms, p99 %.1f ms (%zu deliveries)", p50, p99,
                         delays_ms.size()),
         "p99 < 50 ms with 1,000 watchers",
         watchers < 1000 ? "(quick: fewer watchers)"
                         : (p99 < 50 ? "met" : "missed")});
  }

  void Downloads() {
    const int64_t size = quick_ ? (64ll << 20) : (1ll << 30);
    lathe::v1::SubmitJobResponse job;
    lathe::v1::AcquireJobResponse a;
    StartJob(&job, &a);
    // A file of random bytes, uploaded as a checkpoint file.
    const std::string path = dir_.path() + "/big.bin";
    {
      std::ofstream out(path, std::ios::binary);
      std::mt19937_64 rng(1);
      std::vector<uint64_t> buf(1 << 17);
      for (int64_t done = 0; done < size;
           done += static_cast<int64_t>(buf.size() * 8)) {
        for (auto& x : buf) x = rng();
        out.write(reinterpret_cast<const char*>(buf.data()),
                  static_cast<std::streamsize>(buf.size() * 8));
      }
    }
    const std::string sha = *Sha256File(path);
    {
      grpc::ClientContext ctx;
      lathe::v1::UploadCheckpointFileResponse resp;
      auto writer = workers_->UploadCheckpointFile(&ctx, &resp);
      std::ifstream in(path, std::ios::binary);
      std::string buf(1 << 20, '\0');
      bool first = true;
      while (first || in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        lathe::v1::UploadCheckpointFileRequest msg;
        if (first) {
          msg.set_job_id(a.assignment().job_id());
          msg.set_attempt(a.assignment().attempt());
          msg.set_step(1);
          msg.mutable_file()->set_name("model.safetensors");
          msg.mutable_file()->set_size(size);
          msg.mutable_file()->set_sha256(sha);
          first = false;
        }
        msg.set_chunk(buf.data(), static_cast<size_t>(in.gcount()));
        writer->Write(msg);
      }
      writer->WritesDone();
      if (!writer->Finish().ok()) {
        rows_.push_back({"checkpoint download", "upload failed", "", ""});
        return;
      }
    }
    {
      lathe::v1::ReportEventsRequest req;
      req.set_job_id(a.assignment().job_id());
      req.set_attempt(a.assignment().attempt());
      auto* ev = req.add_events();
      ev->set_type(lathe::v1::EVENT_TYPE_CHECKPOINT);
      ev->mutable_checkpoint()->set_step(1);
      auto* f = ev->mutable_checkpoint()->add_files();
      f->set_name("model.safetensors");
      f->set_size(size);
      f->set_sha256(sha);
      lathe::v1::ReportEventsResponse resp;
      grpc::ClientContext ctx;
      workers_->ReportEvents(&ctx, req, &resp);
    }
    const std::string blob = server_->data_dir() + "/artifacts/blobs/" +
                             sha.substr(0, 2) + "/" + sha;
    // The baseline: the same blob read by this process with 1 MiB reads.
    // The file was just written and uploaded, so it comes from the page
    // cache: a memory-copy rate, not a disk rate.
    auto read_local = [&] {
      const auto t0 = Clock::now();
      std::ifstream in(blob, std::ios::binary);
      std::string buf(1 << 20, '\0');
      while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) ||
             in.gcount() > 0) {
      }
      return static_cast<double>(size) / Seconds(t0, Clock::now()) / 1e9;
    };
    // Read as the CLI reads a download over gRPC (ReadFileStream); the
    // bytes are counted and dropped.
    auto download = [&] {
      auto channel = Channel(*server_, false);
      const auto t0 = Clock::now();
      lathe::v1::DownloadCheckpointFileRequest req;
      req.set_job_id(job.job().id());
      req.set_checkpoint("1");
      req.set_file("model.safetensors");
      grpc::ClientContext ctx;
      int64_t got = 0;
      const absl::Status status = client::ReadFileStream(
          channel,
          absl::StrCat("/", lathe::v1::JobService::service_full_name(),
                       "/DownloadCheckpointFile"),
          req, &ctx, 0, [&](absl::string_view data) {
            got += static_cast<int64_t>(data.size());
            return absl::OkStatus();
          });
      if (got != size) {
        std::fprintf(stderr, "download: %lld of %lld bytes: %s\n",
                     static_cast<long long>(got), static_cast<long long>(size),
                     status.ToString().c_str());
      }
      return got == size
                 ? static_cast<double>(size) / Seconds(t0, Clock::now()) / 1e9
                 : 0.0;
    };
    // The path's physical limit: the same blob sent with sendfile(2) over a
    // loopback TCP connection to a client that reads and drops it.
    auto gbps = [&](int64_t got, double seconds) {
      return got == size ? static_cast<double>(size) / seconds / 1e9 : 0.0;
    };
    auto raw = [&] {
      double seconds = 0;
      const int64_t got = bench::SendfileLoopback(blob, size, &seconds);
      return gbps(got, seconds);
    };
    std::string token;
    std::getline(std::ifstream(server_->admin_token_file()), token);
    const std::string url = absl::StrCat("/v1/jobs/", job.job().id(),
                                         "/checkpoints/1/files/"
                                         "model.safetensors");
    auto http = [&] {
      double seconds = 0;
      const int64_t got = bench::HttpGet(server_->http_address(), url,
                                         "Bearer " + token, &seconds);
      if (got != size) {
        std::fprintf(stderr, "HTTP download: %lld of %lld bytes\n",
                     static_cast<long long>(got), static_cast<long long>(size));
      }
      return gbps(got, seconds);
    };
    std::vector<double> local, wire, over_http, over_grpc;
    for (int i = 0; i < 3; ++i) {
      local.push_back(read_local());
      wire.push_back(raw());
      over_http.push_back(http());
      over_grpc.push_back(download());
    }
    const double d = Median(local), w = Median(wire), h = Median(over_http),
                 g = Median(over_grpc);
    const int mib = static_cast<int>(size >> 20);
    rows_.push_back(
        {absl::StrFormat("checkpoint file, %d MiB: the loopback path's limit",
                         mib),
         absl::StrFormat("raw sendfile over loopback TCP %.2f GB/s (reading "
                         "the file from the page cache: %.2f GB/s)",
                         w, d),
         "the reference for the two rows below", ""});
    rows_.push_back(
        {absl::StrFormat("checkpoint download over HTTP, %d MiB, 1 client",
                         mib),
         absl::StrFormat("%.2f GB/s: %.0f%% of raw sendfile", h, 100 * h / w),
         ">= 80% of raw sendfile", h >= 0.8 * w ? "met" : "missed"});
    rows_.push_back(
        {absl::StrFormat("checkpoint download over gRPC, %d MiB, 1 client",
                         mib),
         absl::StrFormat("%.2f GB/s: %.0f%% of raw sendfile", g, 100 * g / w),
         ">= 80% of raw sendfile", g >= 0.8 * w ? "met" : "missed"});
    // Memory while 8 clients download at once, over each protocol.
    auto memory = [&](const char* protocol,
                      const std::function<double()>& get) {
      const auto before = MemoryMb(server_->pid());
      std::atomic<bool> done{false};
      double peak = before.first;
      std::thread sampler([&] {
        while (!done) {
          peak = std::max(peak, MemoryMb(server_->pid()).first);
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      });
      std::vector<std::thread> clients;
      for (int i = 0; i < 8; ++i) clients.emplace_back(get);
      for (auto& c : clients) c.join();
      done = true;
      sampler.join();
      rows_.push_back(
          {absl::StrFormat("server memory during 8 concurrent %s downloads",
                           protocol),
           absl::StrFormat("RSS %.0f MiB before, %.0f MiB peak (file is %d "
                           "MiB)",
                           before.first, peak, mib),
           "flat (no whole-file buffering)",
           peak - before.first < 0.25 * mib ? "met" : "missed"});
    };
    memory("HTTP", http);
    memory("gRPC", download);
    Finish(a.assignment());
  }

  // A fresh data directory with N finished jobs written straight into the
  // database, then a server started on it.
  void History() {
    const int n = quick_ ? 10000 : 100000;
    TempDir dir;
    const std::string data = dir.path() + "/data";
    MakeDirs(data).IgnoreError();
    {
      auto store = server::Store::Open(data + "/lathe.db");
      if (!store.ok()) return;
    }
    sqlite3* db = nullptr;
    sqlite3_open((data + "/lathe.db").c_str(), &db);
    sqlite3_exec(db, "PRAGMA synchronous=OFF; BEGIN", nullptr, nullptr,
                 nullptr);
    sqlite3_stmt* job_stmt = nullptr;
    sqlite3_stmt* ev_stmt = nullptr;
    sqlite3_prepare_v2(
        db,
        "INSERT INTO jobs(id, state, owner, data) VALUES(?1, ?2, "
        "'bench', ?3)",
        -1, &job_stmt, nullptr);
    sqlite3_prepare_v2(
        db, "INSERT INTO events(job_id, seq, data) VALUES(?1, ?2, ?3)", -1,
        &ev_stmt, nullptr);
    for (int i = 0; i < n; ++i) {
      lathe::v1::Job job;
      job.set_id(absl::StrFormat("job-%012x", i));
      *job.mutable_spec() = SubmitRequest().spec();
      job.set_state(lathe::v1::SUCCEEDED);
      job.set_last_event_seq(3);
      (*job.mutable_eval_metrics())["accuracy"] = 0.9;
      const std::string bytes = job.SerializeAsString();
      sqlite3_bind_text(job_stmt, 1, job.id().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int(job_stmt, 2, lathe::v1::SUCCEEDED);
      sqlite3_bind_blob(job_stmt, 3, bytes.data(),
                        static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
      sqlite3_step(job_stmt);
      sqlite3_reset(job_stmt);
      for (int s = 1; s <= 3; ++s) {
        lathe::v1::Event e;
        e.set_seq(s);
        e.set_type(lathe::v1::EVENT_TYPE_STATE);
        const std::string eb = e.SerializeAsString();
        sqlite3_bind_text(ev_stmt, 1, job.id().c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(ev_stmt, 2, s);
        sqlite3_bind_blob(ev_stmt, 3, eb.data(), static_cast<int>(eb.size()),
                          SQLITE_TRANSIENT);
        sqlite3_step(ev_stmt);
        sqlite3_reset(ev_stmt);
      }
    }
    sqlite3_finalize(job_stmt);
    sqlite3_finalize(ev_stmt);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    std::vector<double> starts;
    double rss = 0;
    std::vector<double> pages;  // ms per dashboard page
    for (int i = 0; i < 3; ++i) {
      ServerProcess s(data, 0, {"--http-listen", "127.0.0.1:0"});
      std::string why;
      const auto t0 = Clock::now();
      if (!s.Start(&why)) return;
      starts.push_back(Seconds(t0, Clock::now()));
      // Touch the history the way users do.
      s.Cli({"list", "--page-size", "100"});
      rss = std::max(rss, MemoryMb(s.pid()).first);
      if (i == 2) pages = DashboardPages(s, n);
      s.Stop();
    }
    const double start = Median(starts);
    rows_.push_back({absl::StrFormat("server start-up to SERVING, %d finished "
                                     "jobs",
                                     n),
                     absl::StrFormat("%.2f s (median of 3)", start), "< 1 s",
                     start < 1 ? "met" : "missed"});
    rows_.push_back(
        {absl::StrFormat("server resident memory, %d finished jobs", n),
         absl::StrFormat("%.0f MiB", rss), "< 150 MB",
         rss < 143 ? "met" : "missed"});
    if (!pages.empty()) {
      const double p50 = Percentile(pages, 0.5), p99 = Percentile(pages, 0.99);
      rows_.push_back(
          {absl::StrFormat("dashboard jobs page over HTTP, %d jobs (50 a "
                           "page: the first, one %d deep, filtered by state, "
                           "by owner, by an owner with no jobs)",
                           n, n / 2),
           absl::StrFormat("p50 %.1f ms, p99 %.1f ms (n=%d)", p50, p99,
                           static_cast<int>(pages.size())),
           "p99 < 100 ms", p99 < 100 ? "met" : "missed"});
    }
  }

  // The requests the dashboard's jobs table makes, timed over HTTP: the
  // first page, a page in the middle (after_id), and the two filters.
  static std::vector<double> DashboardPages(const ServerProcess& s, int n) {
    std::string token;
    std::getline(std::ifstream(s.admin_token_file()), token);
    const std::vector<std::string> paths = {
        "/v1/jobs?page_size=50",
        absl::StrFormat("/v1/jobs?page_size=50&after_id=job-%012x", n / 2),
        "/v1/jobs?page_size=50&state=RUNNING&state=QUEUED",
        "/v1/jobs?page_size=50&owner=bench",
        // No job has this owner: the whole table is looked through.
        "/v1/jobs?page_size=50&owner=nobody"};
    std::vector<double> ms;
    for (int round = 0; round < 25; ++round) {
      for (const auto& path : paths) {
        double seconds = 0;
        if (bench::HttpGet(s.http_address(), path, "Bearer " + token,
                           &seconds) < 0) {
          std::fprintf(stderr, "dashboard page %s failed\n", path.c_str());
          return {};
        }
        ms.push_back(seconds * 1000);
      }
    }
    return ms;
  }

  // A fresh data directory with N queued jobs written straight into the
  // database, each waiting for a GPU worker; then W CPU workers poll
  // (AcquireJob without waiting, from 8 client threads) while CPU jobs are
  // submitted one at a time. What is measured is the scheduler's cost with
  // a long queue: every poll must look past the queued GPU jobs.
  void DeepQueue() {
    const int n = quick_ ? 10000 : 100000;
    const int worker_count = quick_ ? 100 : 1000;
    const int probes = quick_ ? 20 : 100;
    TempDir dir;
    const std::string data = dir.path() + "/data";
    MakeDirs(data).IgnoreError();
    {
      auto store = server::Store::Open(data + "/lathe.db");
      if (!store.ok()) return;
    }
    sqlite3* db = nullptr;
    sqlite3_open((data + "/lathe.db").c_str(), &db);
    sqlite3_exec(db, "PRAGMA synchronous=OFF; BEGIN", nullptr, nullptr,
                 nullptr);
    sqlite3_stmt* job_stmt = nullptr;
    sqlite3_prepare_v2(db,
                       "INSERT INTO jobs(id, state, owner, data) VALUES(?1, "
                       "?2, ?3, ?4)",
                       -1, &job_stmt, nullptr);
    for (int i = 0; i < n; ++i) {
      lathe::v1::Job job;
      job.set_id(absl::StrFormat("job-%012x", i));
      *job.mutable_spec() = SubmitRequest().spec();
      job.mutable_spec()->set_owner(absl::StrCat("team-", i % 16));
      job.mutable_spec()->set_device("cuda");
      job.mutable_spec()->mutable_resources()->set_device_kind("cuda");
      job.mutable_spec()->mutable_resources()->set_device_count(1);
      job.set_state(lathe::v1::QUEUED);
      const std::string bytes = job.SerializeAsString();
      sqlite3_bind_text(job_stmt, 1, job.id().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int(job_stmt, 2, lathe::v1::QUEUED);
      sqlite3_bind_text(job_stmt, 3, job.spec().owner().c_str(), -1,
                        SQLITE_TRANSIENT);
      sqlite3_bind_blob(job_stmt, 4, bytes.data(),
                        static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
      sqlite3_step(job_stmt);
      sqlite3_reset(job_stmt);
    }
    sqlite3_finalize(job_stmt);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(db);

    ServerProcess s(data, 0);
    std::string why;
    if (!s.Start(&why)) return;
    const std::string dataset = UploadDataset(s);
    auto jobs = lathe::v1::JobService::NewStub(Channel(s, false));
    std::vector<std::string> ids;
    {
      auto workers = lathe::v1::WorkerService::NewStub(Channel(s, true));
      for (int i = 0; i < worker_count; ++i) {
        grpc::ClientContext ctx;
        lathe::v1::RegisterWorkerRequest req;
        req.set_name(absl::StrCat("cpu-", i));
        req.add_devices("cpu");
        lathe::v1::RegisterWorkerResponse resp;
        if (workers->RegisterWorker(&ctx, req, &resp).ok()) {
          ids.push_back(resp.worker_id());
        }
      }
    }
    std::mutex mu;
    std::vector<double> acquire_ms, start_ms;
    std::atomic<bool> stop{false};
    std::atomic<int> taken{0};
    std::vector<std::thread> pollers;
    const int threads = 8;
    for (int t = 0; t < threads; ++t) {
      pollers.emplace_back([&, t] {
        auto stub = lathe::v1::WorkerService::NewStub(Channel(s, true));
        std::vector<double> mine, started;
        for (size_t i = static_cast<size_t>(t); !stop; i += threads) {
          lathe::v1::AcquireJobRequest req;
          req.set_worker_id(ids[i % ids.size()]);
          req.set_wait_ms(0);
          lathe::v1::AcquireJobResponse resp;
          grpc::ClientContext ctx;
          const int64_t t0 = WallUs();
          if (!stub->AcquireJob(&ctx, req, &resp).ok()) continue;
          const int64_t t1 = WallUs();
          mine.push_back(static_cast<double>(t1 - t0) / 1000.0);
          if (!resp.has_assignment()) continue;
          const auto& labels = resp.assignment().spec().labels();
          auto sent = labels.find("sent_us");
          if (sent != labels.end()) {
            started.push_back(
                static_cast<double>(t1 - std::stoll(sent->second)) / 1000.0);
          }
          grpc::ClientContext fctx;
          lathe::v1::FinishAttemptRequest freq;
          freq.set_job_id(resp.assignment().job_id());
          freq.set_attempt(resp.assignment().attempt());
          freq.set_outcome(lathe::v1::SUCCEEDED);
          lathe::v1::FinishAttemptResponse fresp;
          stub->FinishAttempt(&fctx, freq, &fresp);
          ++taken;
        }
        std::lock_guard<std::mutex> lock(mu);
        acquire_ms.insert(acquire_ms.end(), mine.begin(), mine.end());
        start_ms.insert(start_ms.end(), started.begin(), started.end());
      });
    }
    for (int i = 0; i < probes; ++i) {
      lathe::v1::SubmitJobRequest req = SubmitRequest();
      req.mutable_spec()->set_train_data(dataset);
      (*req.mutable_spec()->mutable_labels())["sent_us"] =
          std::to_string(WallUs());
      grpc::ClientContext ctx;
      lathe::v1::SubmitJobResponse resp;
      jobs->SubmitJob(&ctx, req, &resp);
      // One probe at a time: the next is sent once this one runs (or 2 s).
      for (int w = 0; w < 200 && taken.load() <= i; ++w) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    stop = true;
    for (auto& p : pollers) p.join();
    s.Stop();
    const double p99 = Percentile(acquire_ms, 0.99);
    const double p50 = Median(start_ms);
    rows_.push_back(
        {absl::StrFormat("AcquireJob, %d queued GPU jobs, %d CPU workers "
                         "polling",
                         n, static_cast<int>(ids.size())),
         absl::StrFormat("p50 %.2f ms, p99 %.2f ms (n=%d)", Median(acquire_ms),
                         p99, static_cast<int>(acquire_ms.size())),
         "p99 < 10 ms", p99 < 10 ? "met" : "missed"});
    rows_.push_back(
        {absl::StrFormat("submit to running behind %d queued jobs, %d "
                         "workers polling",
                         n, static_cast<int>(ids.size())),
         absl::StrFormat("p50 %.1f ms, p99 %.1f ms (n=%d of %d)", p50,
                         Percentile(start_ms, 0.99),
                         static_cast<int>(start_ms.size()), probes),
         "p50 < 20 ms", !start_ms.empty() && p50 < 20 ? "met" : "missed"});
  }

  std::string Table() const {
    std::ostringstream out;
    out << "| measurement | result | target | verdict |\n"
        << "| --- | --- | --- | --- |\n";
    for (const auto& r : rows_) {
      out << "| " << r.what << " | " << r.result << " | " << r.target << " | "
          << r.verdict << " |\n";
    }
    return out.str();
  }

  void Stop() {
    StopHeartbeats();
    if (server_) server_->Stop();
  }

  void StopHeartbeats() {
    heartbeat_stop_ = true;
    if (heartbeats_.joinable()) heartbeats_.join();
  }

 private:
  bool quick_;
  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<lathe::v1::JobService::Stub> jobs_;
  std::unique_ptr<lathe::v1::WorkerService::Stub> workers_;
  std::string dataset_;
  std::vector<Row> rows_;
  std::thread heartbeats_;
  std::atomic<bool> heartbeat_stop_{false};
};

}  // namespace
}  // namespace lathe::bench

int main(int argc, char** argv) {
  // This process is the benchmark's gRPC client: set up as the CLI is.
  lathe::KeepFreedMemoryForStreaming();
  bool quick = false;
  std::string out_path;
  // Comma-separated phases to run; empty: all of them.
  std::string only;
  const std::string kUsage =
      "usage: lathe-bench-control [--quick] [--out FILE] "
      "[--only PHASE,...]\n"
      "  phases: submits, running, get, watchers, downloads, history, queue\n";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--out" && i + 1 < argc) {
      out_path = argv[++i];
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage.c_str(), stdout);
      return 0;
    } else {
      std::fputs(kUsage.c_str(), stderr);
      return 2;
    }
  }
  const auto run = [&](const char* phase) {
    if (only.empty()) return true;
    for (const auto& p : absl::StrSplit(only, ',')) {
      if (p == phase) return true;
    }
    return false;
  };
  lathe::bench::Bench bench(quick);
  std::string why;
  if (!bench.Start(&why)) {
    std::fprintf(stderr, "lathe-bench-control: %s\n", why.c_str());
    return 1;
  }
  if (run("submits")) {
    std::fprintf(stderr, "submits...\n");
    bench.Submits();
  }
  if (run("running")) {
    std::fprintf(stderr, "submit to running...\n");
    bench.SubmitToRunning();
  }
  if (run("get")) {
    std::fprintf(stderr, "get...\n");
    bench.GetJobs();
  }
  if (run("watchers")) {
    std::fprintf(stderr, "watchers...\n");
    bench.Watchers();
  }
  if (run("downloads")) {
    std::fprintf(stderr, "downloads...\n");
    bench.Downloads();
  }
  bench.Stop();
  if (run("queue")) {
    std::fprintf(stderr, "deep queue...\n");
    bench.DeepQueue();
  }
  if (run("history")) {
    std::fprintf(stderr, "history...\n");
    bench.History();
  }
  const std::string table = bench.Table();
  std::cout << table;
  if (!out_path.empty()) {
    const auto slash = out_path.rfind('/');
    if (slash != std::string::npos) {
      lathe::MakeDirs(out_path.substr(0, slash)).IgnoreError();
    }
    std::ofstream(out_path) << table;
  }
  return 0;
}
