#include "worker/agent/agent.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/status.h"
#include "common/tar.h"
#include "nlohmann/json.hpp"
#include "worker/agent/agent_util.h"
#include "worker/agent/child.h"

namespace lathe::worker {
namespace {

namespace fs = std::filesystem;
using lathe::v1::Assignment;
using lathe::v1::Event;
using nlohmann::json;

constexpr size_t kChunk = 1 << 20;

// Copies the numbers of a metrics object into `out`; nested arrays and
// objects (a confusion matrix) become dotted names ("confusion_matrix.0.1").
// At most 4096 entries, so a huge matrix cannot flood the event log.
void FlattenMetrics(const json& value, const std::string& prefix,
                    google::protobuf::Map<std::string, double>* out) {
  if (out->size() >= 4096) return;
  if (value.is_number()) {
    (*out)[prefix] = value.get<double>();
  } else if (value.is_boolean()) {
    (*out)[prefix] = value.get<bool>() ? 1.0 : 0.0;
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) {
      FlattenMetrics(value[i], absl::StrCat(prefix, ".", i), out);
    }
  } else if (value.is_object()) {
    for (auto& [k, v] : value.items()) {
      FlattenMetrics(v, prefix.empty() ? k : absl::StrCat(prefix, ".", k), out);
    }
  }
}

// Maps one line of the child's protocol to an event; nullopt for lines that
// need more than a plain relay (checkpoints, errors).
Event EventFromLine(const json& j) {
  Event e;
  const std::string type = j.value("type", "");
  if (type == "train") {
    e.set_type(lathe::v1::EVENT_TYPE_TRAIN_METRICS);
    auto* t = e.mutable_train();
    t->set_step(j.value("step", int64_t{0}));
    t->set_total_steps(j.value("total_steps", int64_t{0}));
    t->set_loss(j.value("loss", 0.0));
    t->set_learning_rate(j.value("learning_rate", 0.0));
    t->set_samples_per_second(j.value("samples_per_second", 0.0));
    t->set_tokens_per_second(j.value("tokens_per_second", 0.0));
    t->set_epoch(j.value("epoch", 0.0));
    t->set_eta_seconds(j.value("eta_seconds", 0.0));
    e.set_step(t->step());
  } else if (type == "eval") {
    e.set_type(lathe::v1::EVENT_TYPE_EVAL_METRICS);
    e.set_step(j.value("step", int64_t{0}));
    if (j.contains("metrics") && j["metrics"].is_object()) {
      FlattenMetrics(j["metrics"], "", e.mutable_eval());
    }
  } else {
    e.set_type(lathe::v1::EVENT_TYPE_LOG);
    e.set_message(j.value("message", j.dump()));
  }
  return e;
}

// Memory of the device in MiB: physical memory for cpu, nvidia-smi's answer
// for cuda:N; 0 when unknown.
int64_t DeviceMemoryMb(const std::string& device) {
  if (device == "cpu") {
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page >> 20 : 0;
  }
  const std::string index = device.substr(device.find(':') + 1);
  if (index.empty() ||
      index.find_first_not_of("0123456789") != std::string::npos) {
    return 0;
  }
  const std::string cmd =
      "nvidia-smi --query-gpu=memory.total "
      "--format=csv,noheader,nounits -i " +
      index + " 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return 0;
  char buf[64] = {0};
  const bool got = std::fgets(buf, sizeof(buf), p) != nullptr;
  ::pclose(p);
  return got ? std::strtoll(buf, nullptr, 10) : 0;
}

// Writes a stream of chunks to `path` through a temporary name, renaming it
// into place only when the content has the expected SHA-256.
template <typename Response>
absl::Status StreamToFile(grpc::ClientReader<Response>* reader,
                          const std::string& path, const std::string& sha256,
                          const std::string& what) {
  const std::string tmp = absl::StrCat(path, ".part-", ::getpid());
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot create ", tmp));
  Response chunk;
  Sha256 hash;
  while (reader->Read(&chunk)) {
    out.write(chunk.data().data(),
              static_cast<std::streamsize>(chunk.data().size()));
    hash.Update(chunk.data());
  }
  absl::Status s = FromGrpc(reader->Finish());
  out.close();
  if (s.ok() && !out)
    s = absl::InternalError(absl::StrCat("cannot write ", tmp));
  if (s.ok() && hash.Hex() != sha256) {
    s = absl::DataLossError(absl::StrCat(what, " arrived damaged (SHA-256)"));
  }
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::InternalError(absl::StrCat("cannot store ", path));
  }
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

}  // namespace

Agent::Agent(AgentOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(AgentOptions options) {
  if (options.name.empty()) {
    char host[256] = {0};
    ::gethostname(host, sizeof(host) - 1);
    options.name = host;
  }
  if (options.device_memory_mb == 0) {
    options.device_memory_mb = DeviceMemoryMb(options.device);
  }
  if (options.train_binary.empty()) {
    options.train_binary = ExecutableDir() + "/lathe-train";
  }
  if (::access(options.train_binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "training binary ", options.train_binary, " is not executable"));
  }
  options.work_dir = CanonicalPath(options.work_dir);
  RETURN_IF_ERROR(MakeDirs(options.work_dir + "/cache/datasets"));
  RETURN_IF_ERROR(MakeDirs(options.work_dir + "/cache/models"));
  RETURN_IF_ERROR(MakeDirs(options.work_dir + "/jobs"));
  auto agent = std::unique_ptr<Agent>(new Agent(std::move(options)));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  if (!agent->options_.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(agent->options_.tls_server_name);
  }
  ASSIGN_OR_RETURN(
      auto channel,
      MakeChannel(agent->options_.server,
                  ChannelOptions{agent->options_.token, agent->options_.tls},
                  args));
  agent->stub_ = lathe::v1::WorkerService::NewStub(channel);
  return agent;
}

std::string Agent::WorkerId() {
  absl::MutexLock lock(&mu_);
  return worker_id_;
}

std::vector<std::string> Agent::Devices() const {
  std::vector<std::string> devices;
  int first = 0;
  const bool cuda = absl::StartsWith(options_.device, "cuda:");
  if (cuda) first = std::atoi(options_.device.c_str() + 5);
  for (int i = 0; i < std::max(1, options_.device_count); ++i) {
    devices.push_back(cuda ? absl::StrCat("cuda:", first + i)
                           : options_.device);
  }
  return devices;
}

absl::Status Agent::Register() {
  lathe::v1::RegisterWorkerRequest req;
  req.set_name(options_.name);
  for (const std::string& name : Devices()) {
    req.add_devices(name);
    auto* device = req.add_device_info();
    device->set_name(name);
    device->set_memory_mb(options_.device_memory_mb);
  }
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  req.set_hostname(host);
  lathe::v1::RegisterWorkerResponse resp;
  auto ctx = Ctx(absl::Seconds(10));
  RETURN_IF_ERROR(FromGrpc(stub_->RegisterWorker(ctx.get(), req, &resp)));
  absl::MutexLock lock(&mu_);
  worker_id_ = resp.worker_id();
  heartbeat_interval_ =
      absl::Milliseconds(std::max<int64_t>(100, resp.heartbeat_interval_ms()));
  Log(absl::StrCat("registered with ", options_.server, " as ", worker_id_,
                   " (", options_.name, ", ", absl::StrJoin(Devices(), ", "),
                   ")"));
  return absl::OkStatus();
}

void Agent::ApplyCommands(const lathe::v1::HeartbeatResponse& resp,
                          const std::string& job) {
  if (job.empty()) return;
  for (const auto& c : resp.cancel_job_ids()) {
    if (c == job) cancel_ = true;
  }
  for (const auto& c : resp.pause_job_ids()) {
    if (c == job) pause_ = true;
  }
  for (const auto& c : resp.checkpoint_job_ids()) {
    if (c == job) checkpoint_ = true;
  }
}

void Agent::HeartbeatLoop() {
  // One long-lived stream carries the heartbeats; when it breaks (the server
  // restarts, the network drops) it is opened again. Only silence longer
  // than the server's timeout costs the lease.
  while (!stop_) {
    absl::Duration interval;
    std::string id;
    {
      absl::MutexLock lock(&mu_);
      interval = heartbeat_interval_;
      id = worker_id_;
    }
    if (id.empty() || reregister_) {
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    grpc::ClientContext ctx;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) break;
      heartbeat_ctx_ = &ctx;
    }
    auto stream = stub_->HeartbeatStream(&ctx);
    while (!stop_ && WorkerId() == id) {
      lathe::v1::HeartbeatRequest req;
      req.set_worker_id(id);
      if (!stream->Write(req)) break;
      lathe::v1::HeartbeatResponse resp;
      if (!stream->Read(&resp)) break;
      std::string job;
      {
        absl::MutexLock lock(&mu_);
        job = current_job_;
      }
      ApplyCommands(resp, job);
      absl::SleepFor(interval);
    }
    {
      absl::MutexLock lock(&mu_);
      heartbeat_ctx_ = nullptr;
    }
    ctx.TryCancel();
    grpc::Status s = stream->Finish();
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      // The server forgot us (our lease lapsed): our job, if any, was
      // requeued, so stop it and register again.
      reregister_ = true;
      absl::MutexLock lock(&mu_);
      if (!current_job_.empty()) cancel_ = true;
    }
    if (!stop_) absl::SleepFor(interval);
  }
}

absl::Status Agent::Run() {
  std::thread heartbeats([this] { HeartbeatLoop(); });
  absl::Duration backoff = absl::Milliseconds(200);
  while (!stop_) {
    if (WorkerId().empty() || reregister_) {
      absl::Status s = Register();
      // A credential the server refuses stays refused: say so and stop
      // (a supervisor that restarts the worker will show the same).
      if (absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s)) {
        stop_ = true;
        heartbeats.join();
        return absl::Status(
            s.code(),
            absl::StrCat("cannot register with ", options_.server, ": ",
                         absl::StatusCodeToString(s.code()), ": ", s.message(),
                         " (a worker needs a worker-role token: "
                         "--token-file FILE)"));
      }
      if (!s.ok()) {
        Log(absl::StrCat("cannot register with ", options_.server, ": ",
                         absl::StatusCodeToString(s.code()), ": ", s.message(),
                         "; retrying"));
        absl::SleepFor(backoff);
        backoff = std::min(backoff * 2, absl::Seconds(5));
        continue;
      }
      reregister_ = false;
      backoff = absl::Milliseconds(200);
    }
    lathe::v1::AcquireJobRequest req;
    req.set_worker_id(WorkerId());
    req.set_wait_ms(10000);
    lathe::v1::AcquireJobResponse resp;
    auto ctx = Ctx(absl::Seconds(15));
    {
      absl::MutexLock lock(&mu_);
      if (stop_) break;
      acquire_ctx_ = ctx.get();
    }
    grpc::Status s = stub_->AcquireJob(ctx.get(), req, &resp);
    {
      absl::MutexLock lock(&mu_);
      acquire_ctx_ = nullptr;
    }
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      reregister_ = true;
      continue;
    }
    if (!s.ok()) {
      if (stop_) break;
      Log(absl::StrCat("acquire failed: ", s.error_message(), "; retrying"));
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(5));
      continue;
    }
    backoff = absl::Milliseconds(200);
    if (resp.has_assignment()) {
      if (stop_) {
        Finish(resp.assignment(), lathe::v1::QUEUED, "worker is shutting down",
               lathe::v1::FAILURE_KIND_UNSPECIFIED);
        break;
      }
      RunJob(resp.assignment());
    }
  }
  heartbeats.join();
  return absl::OkStatus();
}

void Agent::Stop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
  if (acquire_ctx_ != nullptr) acquire_ctx_->TryCancel();
  // The heartbeat stream stays open while a running job drains; it ends
  // when the heartbeat loop sees stop_.
}

absl::StatusOr<std::string> Agent::FetchDataset(const lathe::v1::Dataset& ds) {
  const std::string path =
      absl::StrCat(options_.work_dir, "/cache/datasets/", ds.sha256());
  if (PathExists(path)) return path;  // written only after verification
  lathe::v1::FetchDatasetRequest req;
  req.set_ref(ds.ref());
  auto ctx = Ctx(absl::Minutes(30));
  auto reader = stub_->FetchDataset(ctx.get(), req);
  RETURN_IF_ERROR(StreamToFile(reader.get(), path, ds.sha256(), ds.ref()));
  return path;
}

absl::StatusOr<std::string> Agent::FetchDatasetForChild(
    const lathe::v1::Dataset& ds) {
  ASSIGN_OR_RETURN(const std::string path, FetchDataset(ds));
  if (!absl::EndsWith(ds.name(), ".tar")) return path;
  // A folder dataset: unpacked once per digest, renamed into place when
  // complete, so the child sees the folder the user gave.
  const std::string dir = path + ".d";
  if (PathExists(dir)) return dir;
  const std::string tmp = absl::StrCat(dir, ".tmp-", ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  absl::Status s = ExtractTar(path, tmp);
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return absl::InvalidArgumentError(
        absl::StrCat(ds.name(), ": ", s.message()));
  }
  fs::rename(tmp, dir, ec);
  if (ec && !PathExists(dir)) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp));
  }
  fs::remove_all(tmp, ec);
  return dir;
}

absl::StatusOr<std::string> Agent::PrepareModel(const Assignment& a) {
  const lathe::v1::ResolvedModel& m = a.model();
  switch (m.kind()) {
    case lathe::v1::MODEL_SOURCE_KIND_PRESET:
      return m.preset();
    case lathe::v1::MODEL_SOURCE_KIND_LOCAL_PATH:
      return m.local_path();
    case lathe::v1::MODEL_SOURCE_KIND_MANIFEST:
      break;
    default:
      return a.spec().model();  // a job stored by an older server
  }
  if (m.digest().size() != 64 ||
      m.digest().find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::DataLossError("the model digest is malformed");
  }
  const std::string dir =
      absl::StrCat(options_.work_dir, "/cache/models/", m.digest());
  auto log = [&](const std::string& msg) {
    Log(msg);
    Event e;
    e.set_type(lathe::v1::EVENT_TYPE_LOG);
    e.set_message(msg);
    Report(a, {e});
  };
  // The directory appears only by rename, after every file was verified.
  if (PathExists(dir)) {
    log(absl::StrCat("model ", m.digest(), " from cache (", m.origin(), ")"));
    return dir;
  }
  const std::string tmp =
      absl::StrCat(options_.work_dir, "/cache/models/.tmp-", m.digest(), "-",
                   ::getpid(), "-", absl::ToUnixNanos(absl::Now()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  auto fetch = [&]() -> absl::Status {
    int64_t bytes = 0;
    for (const auto& f : m.files()) {
      // The server checked these paths; check again before writing.
      const std::string& p = f.path();
      bool clean = !p.empty() && p[0] != '/' && p.size() <= 512 &&
                   p.find('\\') == std::string::npos;
      for (size_t start = 0; clean && start <= p.size();) {
        size_t end = p.find('/', start);
        if (end == std::string::npos) end = p.size();
        const std::string part = p.substr(start, end - start);
        clean = !part.empty() && part != "." && part != "..";
        start = end + 1;
      }
      if (!clean) {
        return absl::DataLossError(absl::StrCat("unsafe model path ", p));
      }
      const std::string dest = tmp + "/" + p;
      RETURN_IF_ERROR(MakeDirs(dest.substr(0, dest.rfind('/'))));
      lathe::v1::FetchModelFileRequest req;
      req.set_sha256(f.sha256());
      auto ctx = Ctx(absl::Minutes(60));
      auto reader = stub_->FetchModelFile(ctx.get(), req);
      RETURN_IF_ERROR(
          StreamToFile(reader.get(), dest, f.sha256(), "model file " + p));
      bytes += f.size();
    }
    if (::rename(tmp.c_str(), dir.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot store ", dir));
    }
    log(absl::StrCat("model ", m.digest(), " fetched (", m.origin(), ", ",
                     m.files_size(), " files, ", bytes, " bytes)"));
    return absl::OkStatus();
  };
  absl::Status s = fetch();
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  return dir;
}

absl::StatusOr<Event> Agent::UploadCheckpoint(const Assignment& a, int64_t step,
                                              const std::string& dir) {
  Event e;
  e.set_type(lathe::v1::EVENT_TYPE_CHECKPOINT);
  e.set_step(step);
  auto* cp = e.mutable_checkpoint();
  cp->set_step(step);
  std::vector<std::string> names;
  std::error_code ec;
  // Sub-folders (a LoRA checkpoint's merged/ model) travel as relative
  // names such as "merged/model.safetensors".
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file()) {
      names.push_back(fs::relative(it->path(), dir).generic_string());
    }
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list checkpoint ", dir, ": ", ec.message()));
  }
  std::sort(names.begin(), names.end());
  // Fault injection for tests: LATHE_FAULT_STALL_UPLOAD_STEP=N stalls the
  // first attempt's upload of the checkpoint at step N after its first chunk.
  const char* stall_env = std::getenv("LATHE_FAULT_STALL_UPLOAD_STEP");
  const bool stall = stall_env != nullptr && a.attempt() == 1 &&
                     std::strtoll(stall_env, nullptr, 10) == step;
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
    ASSIGN_OR_RETURN(int64_t size, FileSize(path));
    lathe::v1::FileInfo info;
    info.set_name(name);
    info.set_size(size);
    info.set_sha256(sha);
    // The server may be restarting: retry an unavailable one for a while.
    absl::Status sent;
    for (int tries = 0; tries < 30; ++tries) {
      auto ctx = Ctx(absl::Minutes(30));
      lathe::v1::UploadCheckpointFileResponse resp;
      auto writer = stub_->UploadCheckpointFile(ctx.get(), &resp);
      std::ifstream in(path, std::ios::binary);
      std::string buf(kChunk, '\0');
      bool first = true;
      while (first || in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        lathe::v1::UploadCheckpointFileRequest msg;
        if (first) {
          msg.set_job_id(a.job_id());
          msg.set_attempt(a.attempt());
          msg.set_step(step);
          *msg.mutable_file() = info;
        }
        msg.set_chunk(buf.data(), static_cast<size_t>(in.gcount()));
        if (!writer->Write(msg)) break;
        if (first && stall) {
          Log(absl::StrCat("stalling upload of the checkpoint at step ", step,
                           " (fault injection)"));
          absl::SleepFor(absl::Hours(1));
        }
        first = false;
      }
      writer->WritesDone();
      sent = FromGrpc(writer->Finish());
      if (!absl::IsUnavailable(sent) || stop_) break;
      absl::SleepFor(absl::Seconds(1));
    }
    RETURN_IF_ERROR(sent);
    *cp->add_files() = info;
  }
  return e;
}

bool Agent::Report(const Assignment& a, std::vector<Event> events) {
  lathe::v1::ReportEventsRequest req;
  req.set_job_id(a.job_id());
  req.set_attempt(a.attempt());
  for (auto& e : events) *req.add_events() = std::move(e);
  for (int tries = 0; tries < 5; ++tries) {
    lathe::v1::ReportEventsResponse resp;
    auto ctx = Ctx(absl::Seconds(10));
    grpc::Status s = stub_->ReportEvents(ctx.get(), req, &resp);
    if (s.ok()) {
      if (resp.cancel_requested()) cancel_ = true;
      if (resp.pause_requested()) pause_ = true;
      if (resp.checkpoint_requested()) checkpoint_ = true;
      return true;
    }
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
        s.error_code() == grpc::StatusCode::NOT_FOUND) {
      Log(absl::StrCat("job ", a.job_id(),
                       " is no longer ours: ", s.error_message()));
      return false;
    }
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      Log(absl::StrCat("report refused: ", s.error_message()));
      return true;
    }
    absl::SleepFor(absl::Seconds(1));
  }
  return true;
}

void Agent::Finish(const Assignment& a, lathe::v1::JobState outcome,
                   const std::string& error, lathe::v1::FailureKind failure) {
  lathe::v1::FinishAttemptRequest req;
  req.set_job_id(a.job_id());
  req.set_attempt(a.attempt());
  req.set_outcome(outcome);
  req.set_error(error);
  req.set_failure(failure);
  // A gang member other than rank 0's names itself.
  if (a.gang_member() > 0) req.set_worker_id(WorkerId());
  for (int tries = 0; tries < 5; ++tries) {
    lathe::v1::FinishAttemptResponse resp;
    auto ctx = Ctx(absl::Seconds(10));
    grpc::Status s = stub_->FinishAttempt(ctx.get(), req, &resp);
    if (s.ok() || s.error_code() != grpc::StatusCode::UNAVAILABLE) {
      if (!s.ok()) Log(absl::StrCat("finish refused: ", s.error_message()));
      return;
    }
    absl::SleepFor(absl::Seconds(1));
  }
}

absl::StatusOr<std::string> Agent::FetchResumeCheckpoint(
    const Assignment& a, const std::string& dir) {
  const lathe::v1::Checkpoint& cp = a.resume_checkpoint();
  const std::string dest = absl::StrCat(dir, "/resume/checkpoint-", cp.step());
  RETURN_IF_ERROR(MakeDirs(dest));
  for (const auto& f : cp.files()) {
    // A relative, clean path: a checkpoint may hold sub-folders (runs/,
    // merged/), never a way out of `dest`.
    bool clean = !f.name().empty() && f.name()[0] != '/' &&
                 f.name().find('\\') == std::string::npos;
    for (absl::string_view part : absl::StrSplit(f.name(), '/')) {
      clean = clean && !part.empty() && part != "." && part != "..";
    }
    if (!clean) {
      return absl::DataLossError(absl::StrCat("unsafe file name ", f.name()));
    }
    if (const size_t slash = f.name().rfind('/'); slash != std::string::npos) {
      RETURN_IF_ERROR(MakeDirs(dest + "/" + f.name().substr(0, slash)));
    }
    lathe::v1::FetchCheckpointFileRequest req;
    req.set_job_id(a.job_id());
    req.set_attempt(a.attempt());
    req.set_checkpoint(absl::StrCat(cp.step()));
    req.set_file(f.name());
    auto ctx = Ctx(absl::Minutes(30));
    auto reader = stub_->FetchCheckpointFile(ctx.get(), req);
    RETURN_IF_ERROR(StreamToFile(reader.get(), dest + "/" + f.name(),
                                 f.sha256(), "checkpoint file " + f.name()));
  }
  return dest;
}

absl::Status Agent::PrepareSpec(const Assignment& a, const std::string& dir,
                                json* spec_out) {
  absl::Status s = MakeDirs(dir + "/output");
  std::string train_path, val_path, resume_dir;
  if (s.ok()) {
    auto p = FetchDatasetForChild(a.train_dataset());
    if (p.ok()) {
      train_path = *p;
    } else {
      s = p.status();
    }
  }
  if (s.ok() && !a.validation_dataset().ref().empty()) {
    auto p = FetchDatasetForChild(a.validation_dataset());
    if (p.ok()) {
      val_path = *p;
    } else {
      s = p.status();
    }
  }
  std::string model_path;
  if (s.ok()) {
    auto p = PrepareModel(a);
    if (p.ok()) {
      model_path = *p;
    } else {
      s = p.status();
    }
  }
  if (s.ok() && a.has_resume_checkpoint()) {
    bool has_state = false;
    for (const auto& f : a.resume_checkpoint().files()) {
      has_state |= f.name() == "trainer_state.json";
    }
    if (has_state) {
      auto p = FetchResumeCheckpoint(a, dir);
      if (p.ok()) {
        resume_dir = *p;
      } else {
        s = p.status();
      }
    } else {
      Event e;
      e.set_type(lathe::v1::EVENT_TYPE_LOG);
      e.set_message(absl::StrCat("the checkpoint at step ",
                                 a.resume_checkpoint().step(),
                                 " holds no training state; starting over"));
      if (a.gang_member() == 0) Report(a, {e});
    }
  }
  *spec_out = {{"job_id", a.job_id()},
               {"task", a.spec().task()},
               {"model", model_path},
               {"train_data", train_path},
               {"train_name", a.train_dataset().name()},
               {"validation_data", val_path},
               {"validation_name", a.validation_dataset().name()},
               {"params", json::object()},
               // The worker's own device: placement matched the job to it.
               {"device", options_.device},
               {"assets_dir", options_.assets_dir}};
  json& spec = *spec_out;
  if (!resume_dir.empty()) spec["resume_from"] = resume_dir;
  if (a.spec().kind() == lathe::v1::JOB_KIND_PREDICT) spec["mode"] = "predict";
  for (const auto& [k, v] : a.spec().params()) spec["params"][k] = v;
  return s;
}

void Agent::RunJob(const Assignment& a) {
  cancel_ = false;
  pause_ = false;
  checkpoint_ = false;
  {
    absl::MutexLock lock(&mu_);
    current_job_ = a.job_id();
  }
  Log(absl::StrCat("running job ", a.job_id(), " attempt ", a.attempt()));
  if (a.gang_member() > 0) {
    RunGangMember(a);
    absl::MutexLock lock(&mu_);
    current_job_.clear();
    return;
  }
  const std::string dir = absl::StrCat(options_.work_dir, "/jobs/", a.job_id(),
                                       "/attempt-", a.attempt());
  auto done = [&](lathe::v1::JobState outcome, const std::string& error,
                  lathe::v1::FailureKind failure) {
    Finish(a, outcome, error, failure);
    Log(absl::StrCat("job ", a.job_id(), " attempt ", a.attempt(), " ended ",
                     lathe::v1::JobState_Name(outcome),
                     error.empty() ? "" : ": " + error));
    absl::MutexLock lock(&mu_);
    current_job_.clear();
  };

  json spec;
  absl::Status s = PrepareSpec(a, dir, &spec);
  // A job for several devices: one training process per device, rank 0 on
  // the first (it reports, evaluates and checkpoints), a c10d store on a
  // free port whose keys carry the job and attempt. In a gang this worker
  // runs ranks 0 to local - 1 and the other members the rest.
  const std::vector<std::string> devices = Devices();
  // Prediction runs in one process whatever the job asked for.
  const int world = a.spec().kind() == lathe::v1::JOB_KIND_PREDICT ? 1
                    : a.gang_size() > 0
                        ? GangWorldSize(a)
                        : std::max(1, a.spec().resources().device_count());
  const int local = a.gang_size() > 0 ? a.gang(0).device_count() : world;
  if (s.ok() && local > static_cast<int>(devices.size())) {
    s = absl::FailedPreconditionError(absl::StrCat("the job asks for ", local,
                                                   " devices; this worker has ",
                                                   devices.size()));
  }
  std::vector<std::string> rank_specs = {dir + "/spec.json"};
  if (s.ok() && world > 1) {
    auto port = FreeLoopbackPort();
    const std::string host =
        a.gang_size() > 0 ? options_.gang_address : std::string("127.0.0.1");
    if (port.ok() && a.gang_size() > 0) {
      // Every member must be there before any rank dials the store.
      auto joined = JoinGang(a, absl::StrCat(host, ":", *port));
      if (!joined.ok()) s = joined.status();
    }
    if (!port.ok()) s = port.status();
    if (s.ok()) {
      for (int r = 0; r < local && s.ok(); ++r) {
        json rank_spec = spec;
        rank_spec["device"] = devices[static_cast<size_t>(r)];
        rank_spec["distributed"] = {
            {"world_size", world},
            {"rank", r},
            {"store_host", host},
            {"store_port", *port},
            {"store_prefix", absl::StrCat(a.job_id(), "/", a.attempt())},
            {"local_ranks", local}};
        if (r > 0) {
          rank_specs.push_back(absl::StrCat(dir, "/spec-rank", r, ".json"));
        }
        s = WriteFileAtomic(rank_specs.back(), rank_spec.dump(2));
      }
    }
  } else if (s.ok()) {
    s = WriteFileAtomic(dir + "/spec.json", spec.dump(2));
  }
  if (absl::IsCancelled(s)) {
    // Stopped while its gang assembled.
    done(cancel_  ? lathe::v1::CANCELLED
         : pause_ ? lathe::v1::PAUSED
                  : lathe::v1::QUEUED,
         cancel_ || pause_ ? "" : "worker is shutting down",
         lathe::v1::FAILURE_KIND_UNSPECIFIED);
    return;
  }
  if (!s.ok()) {
    // The server or the disk failed us, not the job: let it be retried.
    done(lathe::v1::FAILED,
         absl::StrCat("cannot prepare the job: ", s.message()),
         lathe::v1::FAILURE_KIND_CRASH);
    return;
  }
  if (world > 1) {
    std::vector<std::string> placed;
    for (int r = 0; r < local; ++r) {
      placed.push_back(
          absl::StrCat("rank ", r, " on ", devices[static_cast<size_t>(r)]));
    }
    Event e;
    e.set_type(lathe::v1::EVENT_TYPE_LOG);
    e.set_message(absl::StrCat(
        "data parallel: world size ", world, " on ",
        a.gang_size() > 0 ? absl::StrCat(a.gang_size(), " workers; ") : "",
        "worker ", options_.name, " (", WorkerId(),
        "): ", absl::StrJoin(placed, ", ")));
    Report(a, {e});
  }

  auto child =
      ChildProcess::Start({options_.train_binary, "--spec", dir + "/spec.json",
                           "--out", dir + "/output"},
                          dir + "/train.log");
  if (!child.ok()) {
    done(lathe::v1::FAILED, std::string(child.status().message()),
         lathe::v1::FAILURE_KIND_CRASH);
    return;
  }
  // Ranks 1.. of a data-parallel job: they report nothing but their exit.
  struct Peer {
    int rank = 0;
    std::unique_ptr<ChildProcess> process;
    std::string error;  // Its "error" event, if any.
    bool exited = false;
    ChildExit exit;
  };
  std::vector<Peer> peers;
  for (int r = 1; r < local; ++r) {
    auto peer = ChildProcess::Start(
        {options_.train_binary, "--spec", rank_specs[static_cast<size_t>(r)],
         "--out", absl::StrCat(dir, "/output-rank", r)},
        absl::StrCat(dir, "/train-rank", r, ".log"));
    if (!peer.ok()) {
      (*child)->Terminate(options_.kill_grace);
      for (Peer& p : peers) p.process->Terminate(options_.kill_grace);
      done(lathe::v1::FAILED, std::string(peer.status().message()),
           lathe::v1::FAILURE_KIND_CRASH);
      return;
    }
    peers.push_back(Peer{r, *std::move(peer), "", false, ChildExit{}});
  }
  // The first rank to fail takes the whole gang down with it.
  std::string gang_error;
  lathe::v1::FailureKind gang_failure = lathe::v1::FAILURE_KIND_CRASH;
  auto terminate_all = [&] {
    (*child)->Terminate(options_.kill_grace);
    for (Peer& p : peers) {
      if (!p.exited) {
        p.process->Terminate(options_.kill_grace);
        p.exited = true;
        p.exit = p.process->Wait();
      }
    }
  };
  // Reads what the peers said; true when one of them has failed.
  auto poll_peers = [&](absl::Duration wait) {
    bool failed = false;
    for (Peer& p : peers) {
      if (p.exited) continue;
      while (auto line = p.process->ReadLine(wait)) {
        json j = json::parse(*line, nullptr, /*allow_exceptions=*/false);
        if (j.is_object() && j.value("type", "") == "error") {
          p.error = j.value("message", "");
        }
      }
      if (!p.process->eof()) continue;
      p.exited = true;
      p.exit = p.process->Wait();
      if (p.exit.signaled || p.exit.code != 0) {
        failed = true;
        if (gang_error.empty()) {
          gang_error = absl::StrCat(
              "rank ", p.rank, " (", devices[static_cast<size_t>(p.rank)], ") ",
              DescribeExit(p.exit),
              p.error.empty() ? "" : absl::StrCat(": ", p.error),
              "; the whole gang stops");
          gang_failure = FailureKindOf(p.exit);
        }
      }
    }
    return failed;
  };
  std::string error;
  std::string upload_error;
  bool ours = true;
  bool stopped = false;
  // A graceful stop (pause, shutdown): ask for a checkpoint, wait for it to
  // be uploaded, then stop the child.
  bool draining = false;
  absl::Time drain_deadline;
  bool checkpoint_signalled = false;
  // SIGUSR1 is sent only once the child has spoken: before it installs its
  // handler, the signal's default action would kill it.
  bool child_ready = false;
  while (true) {
    if (!stopped && (cancel_ || !ours)) {
      terminate_all();
      stopped = true;
    }
    if (!stopped && !draining && (pause_ || stop_) && !child_ready) {
      // Nothing to save yet: stop at once.
      terminate_all();
      stopped = true;
    }
    if (!stopped && !draining && (pause_ || stop_)) {
      draining = true;
      drain_deadline = absl::Now() + options_.drain_timeout;
      (*child)->Signal(SIGUSR1);
    }
    if (!stopped && draining && absl::Now() > drain_deadline) {
      Log("no checkpoint arrived in time; stopping the child anyway");
      terminate_all();
      stopped = true;
    }
    if (!stopped && !draining && checkpoint_ && !checkpoint_signalled &&
        child_ready) {
      (*child)->Signal(SIGUSR1);
      checkpoint_signalled = true;
    }
    if (!peers.empty() && gang_error.empty() &&
        poll_peers(absl::Milliseconds(1))) {
      Log(absl::StrCat("job ", a.job_id(), ": ", gang_error));
      terminate_all();
    }
    auto line = (*child)->ReadLine(absl::Milliseconds(200));
    if (!line.has_value()) {
      if ((*child)->eof()) break;
      continue;
    }
    child_ready = true;
    if (stopped || !ours) continue;
    json j = json::parse(*line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      Event e;
      e.set_type(lathe::v1::EVENT_TYPE_LOG);
      e.set_message(line->substr(0, 4096));
      ours = Report(a, {e});
      continue;
    }
    const std::string type = j.value("type", "");
    if (type == "error") {
      error = j.value("message", "training failed");
      continue;
    }
    if (type == "checkpoint") {
      const std::string cp_dir = j.value("dir", std::string());
      auto e = UploadCheckpoint(a, j.value("step", int64_t{0}), cp_dir);
      if (!e.ok()) {
        upload_error = std::string(e.status().message());
        Log(absl::StrCat("checkpoint upload failed: ", upload_error));
        continue;
      }
      e->mutable_checkpoint()->set_final(j.value("final", false));
      if (j.contains("metrics") && j["metrics"].is_object()) {
        FlattenMetrics(j["metrics"], "",
                       e->mutable_checkpoint()->mutable_metrics());
      }
      e->mutable_checkpoint()->set_metric_for_best_model(
          j.value("metric_for_best_model", std::string()));
      e->mutable_checkpoint()->set_greater_is_better(
          j.value("greater_is_better", true));
      ours = Report(a, {*e});
      // The server holds it now; the local copy is no longer needed.
      std::error_code ec;
      fs::remove_all(cp_dir, ec);
      if (j.value("requested", false)) {
        checkpoint_signalled = false;
        checkpoint_ = false;
        if (draining && !stopped) {
          terminate_all();
          stopped = true;
        }
      }
      continue;
    }
    ours = Report(a, {EventFromLine(j)});
  }
  ChildExit exit = (*child)->Wait();
  if (!peers.empty()) {
    // Rank 0 is done. After a success the others finish their last
    // collective at once; after anything else they would wait on rank 0
    // until their timeout, so they are stopped.
    const bool rank0_ok = !exit.signaled && exit.code == 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (rank0_ok && absl::Now() < deadline) {
      poll_peers(absl::Milliseconds(100));
      bool all = true;
      for (const Peer& p : peers) all = all && p.exited;
      if (all) break;
    }
    if (!rank0_ok) poll_peers(absl::Milliseconds(1));
    terminate_all();
    if (gang_error.empty() && !rank0_ok && !stopped) {
      // Rank 0's own failure, unless a peer's death caused it.
      for (const Peer& p : peers) {
        if (p.exit.signaled && p.exit.code != SIGTERM) {
          gang_error = absl::StrCat(
              "rank ", p.rank, " (", devices[static_cast<size_t>(p.rank)], ") ",
              DescribeExit(p.exit), "; the whole gang stops");
          break;
        }
      }
    } else if (gang_error.empty() && rank0_ok) {
      for (const Peer& p : peers) {
        if (p.exit.signaled || p.exit.code != 0) {
          gang_error = absl::StrCat(
              "rank ", p.rank, " (", devices[static_cast<size_t>(p.rank)], ") ",
              DescribeExit(p.exit),
              p.error.empty() ? "" : absl::StrCat(": ", p.error));
          gang_failure = FailureKindOf(p.exit);
          break;
        }
      }
    }
  }
  if (!ours) {
    Log(absl::StrCat("stopped job ", a.job_id(), ": attempt is stale"));
    absl::MutexLock lock(&mu_);
    current_job_.clear();
    return;
  }
  if (!gang_error.empty() && !stopped) {
    done(lathe::v1::FAILED, gang_error, gang_failure);
    return;
  }
  const bool succeeded = !exit.signaled && exit.code == 0;
  if (stopped && !succeeded) {
    if (cancel_) {
      done(lathe::v1::CANCELLED, "", lathe::v1::FAILURE_KIND_UNSPECIFIED);
    } else if (pause_) {
      done(lathe::v1::PAUSED, "", lathe::v1::FAILURE_KIND_UNSPECIFIED);
    } else {
      done(lathe::v1::QUEUED, "worker is shutting down",
           lathe::v1::FAILURE_KIND_UNSPECIFIED);
    }
    return;
  }
  if (succeeded) {
    if (!upload_error.empty()) {
      done(lathe::v1::FAILED,
           absl::StrCat("checkpoint upload failed: ", upload_error),
           lathe::v1::FAILURE_KIND_CRASH);
    } else {
      done(lathe::v1::SUCCEEDED, "", lathe::v1::FAILURE_KIND_UNSPECIFIED);
    }
    return;
  }
  const lathe::v1::FailureKind kind = FailureKindOf(exit);
  if (error.empty()) {
    error = exit.signaled
                ? absl::StrCat("training process killed by signal ", exit.code)
                : absl::StrCat("training process exited with code ", exit.code);
    // The end of the child's log usually says why.
    auto log = ReadFile(dir + "/train.log");
    if (log.ok() && !log->empty()) {
      std::string tail = log->substr(log->size() > 600 ? log->size() - 600 : 0);
      error += "; log ends: " + tail;
    }
  }
  done(lathe::v1::FAILED, error, kind);
}

}  // namespace lathe::worker
