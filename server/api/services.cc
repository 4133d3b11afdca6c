#include "server/api/services.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/redact.h"
#include "common/status.h"
#include "server/api/rpc_scope.h"

namespace lathe::server {

using lathe::v1::Job;

namespace {

constexpr size_t kMaxMessage = 1024;
// Below gRPC's default 4 MiB receive limit, so that any client can download.
constexpr size_t kChunk = 2 << 20;
constexpr int kWatchBatch = 256;

grpc::StatusCode ToGrpcCode(absl::StatusCode code) {
  // absl's codes mirror gRPC's canonical codes one to one.
  return static_cast<grpc::StatusCode>(static_cast<int>(code));
}

// Buffers of kChunk bytes for file chunks, reused across chunks and
// streams. A fresh buffer (or a fresh mapping of the file) is touched page
// by page, and at gigabytes per second those page faults, not the copies,
// set the rate; a reused buffer is already resident. At most kIdleChunks
// wait here; the rest are freed, so memory follows the chunks in flight.
class ChunkPool {
 public:
  static char* Get() {
    {
      absl::MutexLock lock(&mu_);
      if (!idle_->empty()) {
        char* b = idle_->back();
        idle_->pop_back();
        return b;
      }
    }
    return static_cast<char*>(std::malloc(kChunk));
  }
  static void Put(void* buffer) {
    {
      absl::MutexLock lock(&mu_);
      if (idle_->size() < kIdleChunks) {
        idle_->push_back(static_cast<char*>(buffer));
        return;
      }
    }
    std::free(buffer);
  }

 private:
  static constexpr size_t kIdleChunks = 16;
  static absl::Mutex mu_;
  static std::vector<char*>* idle_;
};
absl::Mutex ChunkPool::mu_(absl::kConstInit);
std::vector<char*>* ChunkPool::idle_ = new std::vector<char*>();

// One chunk (at most kChunk bytes) of a stored file as a gRPC slice, read
// into a pooled buffer that returns to the pool when the transport releases
// the slice (after the bytes went into the socket).
absl::StatusOr<grpc::Slice> FileChunk(int fd, int64_t offset, size_t n) {
  char* buffer = ChunkPool::Get();
  if (buffer == nullptr) return absl::ResourceExhaustedError("out of memory");
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, buffer + done, n - done,
                                offset + static_cast<int64_t>(done));
    if (got <= 0) {
      ChunkPool::Put(buffer);
      return absl::InternalError("cannot read stored file");
    }
    done += static_cast<size_t>(got);
  }
  return grpc::Slice(buffer, n, &ChunkPool::Put);
}

void AppendVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Streams a stored file from an offset as messages shaped
// {int64 offset = 1; bytes data = 2; ...} (DownloadCheckpointFileResponse,
// FetchDatasetResponse, FetchModelFileResponse). Each message is encoded by
// hand: a few header bytes, then the chunk as its own slice (FileChunk), so
// the file's bytes are read once into a buffer and copied once into the
// socket, instead of also being serialized into gRPC's buffers. `first`
// (serialized fields, may be empty) goes into the first message only. One
// message is in flight at a time; deletes itself when gRPC is done.
class FileStreamReactor final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // `file` is the stored file's path, or why there is none.
  FileStreamReactor(RpcScope rpc, const absl::StatusOr<std::string>& file,
                    int64_t offset, std::string first)
      : rpc_(std::move(rpc)), offset_(offset), first_(std::move(first)) {
    absl::MutexLock lock(&mu_);
    if (!file.ok()) {
      FinishLocked(file.status());
      return;
    }
    fd_ = ::open(file->c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      FinishLocked(absl::DataLossError("stored file is missing"));
      return;
    }
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      FinishLocked(absl::InternalError("cannot read stored file"));
      return;
    }
    size_ = st.st_size;
    if (offset_ < 0 || offset_ > size_) {
      FinishLocked(absl::OutOfRangeError(absl::StrCat(
          "offset ", offset_, " is outside the file (size ", size_, ")")));
      return;
    }
    // The stream reads the file front to back once.
    ::posix_fadvise(fd_, offset_, 0, POSIX_FADV_SEQUENTIAL);
    Next();
  }

  ~FileStreamReactor() override {
    if (fd_ >= 0) ::close(fd_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(absl::CancelledError("client went away"));
      return;
    }
    Next();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    // A write in flight completes (OnWriteDone) before the stream finishes.
    if (!writing_) {
      FinishLocked(absl::CancelledError("client cancelled the download"));
    }
  }

  void OnDone() override { delete this; }

 private:
  void Next() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (cancelled_) {
      FinishLocked(absl::CancelledError("client cancelled the download"));
      return;
    }
    // The first message goes out even for an empty rest: it describes the
    // file.
    if (offset_ == size_ && sent_first_) {
      FinishLocked(absl::OkStatus());
      return;
    }
    const size_t n =
        static_cast<size_t>(std::min<int64_t>(size_ - offset_, kChunk));
    std::string header;
    if (offset_ != 0) {
      header.push_back(0x08);  // field 1 (offset), varint
      AppendVarint(static_cast<uint64_t>(offset_), &header);
    }
    if (!sent_first_) header += first_;
    grpc::Slice slices[2];
    size_t count = 1;
    if (n > 0) {
      header.push_back(0x12);  // field 2 (data), length-delimited
      AppendVarint(n, &header);
      auto chunk = FileChunk(fd_, offset_, n);
      if (!chunk.ok()) {
        FinishLocked(chunk.status());
        return;
      }
      slices[1] = *std::move(chunk);
      count = 2;
    }
    slices[0] = grpc::Slice(header);
    message_ = grpc::ByteBuffer(slices, count);
    offset_ += static_cast<int64_t>(n);
    sent_first_ = true;
    writing_ = true;
    StartWrite(&message_);
  }

  void FinishLocked(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(rpc_.Done(status));
  }

  RpcScope rpc_;
  absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t size_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t offset_ ABSL_GUARDED_BY(mu_);
  const std::string first_;
  grpc::ByteBuffer message_ ABSL_GUARDED_BY(mu_);
  bool sent_first_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* StreamFile(
    RpcScope rpc, const absl::StatusOr<std::string>& file, int64_t offset,
    std::string first) {
  return new FileStreamReactor(std::move(rpc), file, offset, std::move(first));
}

absl::StatusOr<std::string> ResolveCheckpointStream(
    const Core& core, const std::string& job_id, const std::string& checkpoint,
    const std::string& file, std::string* first) {
  ASSIGN_OR_RETURN(ResolvedFile resolved,
                   core.jobs->ResolveCheckpointFile(job_id, checkpoint, file));
  lathe::v1::DownloadCheckpointFileResponse r;
  *r.mutable_file() = resolved.info;
  *first = r.SerializeAsString();
  return resolved.path;
}

const std::string& GatewayKey() {
  static const std::string* key = [] {
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();
    return new std::string(absl::BytesToHexString(
        std::string(reinterpret_cast<const char*>(bytes), sizeof(bytes))));
  }();
  return *key;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // A message may quote what the caller sent (a URI with a password, a
  // pasted token): never send a credential back.
  std::string msg = RedactSecrets(std::string(status.message()));
  if (msg.size() > kMaxMessage) msg = msg.substr(0, kMaxMessage) + "...";
  return grpc::Status(ToGrpcCode(status.code()), msg);
}

// ---- JobService ----

namespace {
// NOT_FOUND, as for a missing job, when the caller may not see job `id`.
absl::Status CheckJobVisible(RpcScope& rpc, const Core& core,
                             const std::string& id) {
  rpc.set_resource(id);
  ASSIGN_OR_RETURN(Job job, core.jobs->Get(id));
  return rpc.SeeJob(id, job.team());
}
}  // namespace

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* ctx,
                                       const lathe::v1::SubmitJobRequest* req,
                                       lathe::v1::SubmitJobResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "SubmitJob");
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(
        *resp->mutable_job(),
        core.jobs->Submit(req->spec(), req->request_id(), rpc.principal()));
    rpc.set_resource(resp->job().id());
    return absl::OkStatus();
  });
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* ctx,
                                    const lathe::v1::GetJobRequest* req,
                                    lathe::v1::GetJobResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "GetJob");
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(*resp->mutable_job(), core.jobs->Get(req->id()));
    return rpc.SeeJob(req->id(), resp->job().team());
  });
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* ctx,
                                      const lathe::v1::ListJobsRequest* req,
                                      lathe::v1::ListJobsResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "ListJobs");
  return rpc.Run([&](const Core& core) -> absl::Status {
    std::vector<int> states(req->states().begin(), req->states().end());
    const Principal& who = rpc.principal();
    const auto team =
        who.admin() ? std::nullopt : std::optional<std::string>(who.team);
    std::string token = req->page_token();
    if (!req->after_id().empty()) {
      if (!token.empty()) {
        return absl::InvalidArgumentError(
            "after_id: give either after_id or page_token, not both");
      }
      ASSIGN_OR_RETURN(token, core.jobs->PageTokenAfter(req->after_id(), team));
    }
    ASSIGN_OR_RETURN(auto page, core.jobs->List(states, req->owner(),
                                                req->page_size(), token, team));
    for (auto& j : page.first) *resp->add_jobs() = std::move(j);
    resp->set_next_page_token(page.second);
    return absl::OkStatus();
  });
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx,
                                       const lathe::v1::CancelJobRequest* req,
                                       lathe::v1::CancelJobResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "CancelJob");
  return rpc.Run([&](const Core& core) -> absl::Status {
    RETURN_IF_ERROR(CheckJobVisible(rpc, core, req->id()));
    ASSIGN_OR_RETURN(*resp->mutable_job(), core.jobs->Cancel(req->id()));
    return absl::OkStatus();
  });
}

grpc::Status JobServiceImpl::PauseJob(grpc::ServerContext* ctx,
                                      const lathe::v1::PauseJobRequest* req,
                                      lathe::v1::PauseJobResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "PauseJob");
  return rpc.Run([&](const Core& core) -> absl::Status {
    RETURN_IF_ERROR(CheckJobVisible(rpc, core, req->id()));
    ASSIGN_OR_RETURN(*resp->mutable_job(), core.jobs->Pause(req->id()));
    return absl::OkStatus();
  });
}

grpc::Status JobServiceImpl::ResumeJob(grpc::ServerContext* ctx,
                                       const lathe::v1::ResumeJobRequest* req,
                                       lathe::v1::ResumeJobResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "ResumeJob");
  return rpc.Run([&](const Core& core) -> absl::Status {
    RETURN_IF_ERROR(CheckJobVisible(rpc, core, req->id()));
    ASSIGN_OR_RETURN(*resp->mutable_job(), core.jobs->Resume(req->id()));
    return absl::OkStatus();
  });
}

grpc::Status JobServiceImpl::RequestCheckpoint(
    grpc::ServerContext* ctx, const lathe::v1::RequestCheckpointRequest* req,
    lathe::v1::RequestCheckpointResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "RequestCheckpoint");
  return rpc.Run([&](const Core& core) -> absl::Status {
    RETURN_IF_ERROR(CheckJobVisible(rpc, core, req->id()));
    ASSIGN_OR_RETURN(*resp->mutable_job(),
                     core.jobs->RequestCheckpoint(req->id()));
    return absl::OkStatus();
  });
}

namespace {

class WatchReactor final
    : public grpc::ServerWriteReactor<lathe::v1::WatchJobResponse>,
      public EventListener,
      public std::enable_shared_from_this<WatchReactor> {
 public:
  static WatchReactor* Start(RpcScope rpc,
                             const lathe::v1::WatchJobRequest& req) {
    auto reactor =
        std::shared_ptr<WatchReactor>(new WatchReactor(std::move(rpc), req));
    reactor->self_ = reactor;
    reactor->Begin();
    return reactor.get();
  }

  void OnJobChanged() override {
    absl::MutexLock lock(&mu_);
    Pump();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    pending_.pop_front();
    if (!ok) {
      FinishLocked(absl::CancelledError("client left"));
      return;
    }
    Pump();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (!writing_) {
      FinishLocked(absl::CancelledError("client cancelled the watch"));
    }
  }

  void OnDone() override { self_.reset(); }

 private:
  WatchReactor(RpcScope rpc, const lathe::v1::WatchJobRequest& req)
      : rpc_(std::move(rpc)), id_(req.id()), seq_(req.after_seq()) {}

  void Begin() {
    absl::MutexLock lock(&mu_);
    auto first = rpc_.Call([&](const Core& core) -> absl::StatusOr<Job> {
      jobs_ = core.jobs;
      if (seq_ < 0)
        return absl::InvalidArgumentError("after_seq: must be >= 0");
      ASSIGN_OR_RETURN(Job job, core.jobs->Get(id_));
      RETURN_IF_ERROR(rpc_.SeeJob(id_, job.team()));
      return job;
    });
    if (!first.ok()) {
      FinishLocked(first.status());
      return;
    }
    lathe::v1::WatchJobResponse r;
    *r.mutable_job() = std::move(*first);
    pending_.push_back(std::move(r));
    Pump();
  }

  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (cancelled_) {
      FinishLocked(absl::CancelledError("client cancelled the watch"));
      return;
    }
    if (pending_.empty()) {
      auto batch = jobs_->PollEvents(id_, seq_, kWatchBatch, weak_from_this());
      if (!batch.ok()) {
        FinishLocked(batch.status());
        return;
      }
      auto& [job, events] = *batch;
      if (events.empty()) {
        if (IsFinal(job.state())) FinishLocked(absl::OkStatus());
        return;
      }
      seq_ = events.back().seq();
      for (size_t i = 0; i < events.size(); ++i) {
        lathe::v1::WatchJobResponse r;
        if (i + 1 < events.size()) {
          *r.mutable_job() = job;
        } else {
          *r.mutable_job() = std::move(job);
        }
        *r.mutable_event() = std::move(events[i]);
        pending_.push_back(std::move(r));
      }
    }
    writing_ = true;
    StartWrite(&pending_.front());
  }

  void FinishLocked(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(rpc_.Done(status));
  }

  RpcScope rpc_;
  const std::string id_;
  std::shared_ptr<WatchReactor> self_;
  absl::Mutex mu_;
  // Set by Begin once the call is admitted.
  JobManager* jobs_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t seq_ ABSL_GUARDED_BY(mu_);
  std::deque<lathe::v1::WatchJobResponse> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerWriteReactor<lathe::v1::WatchJobResponse>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext* ctx, const lathe::v1::WatchJobRequest* req) {
  return WatchReactor::Start(RpcScope(gate_, ctx, kJobs, "WatchJob"), *req);
}

grpc::Status JobServiceImpl::ListCheckpoints(
    grpc::ServerContext* ctx, const lathe::v1::ListCheckpointsRequest* req,
    lathe::v1::ListCheckpointsResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "ListCheckpoints");
  return rpc.Run([&](const Core& core) -> absl::Status {
    RETURN_IF_ERROR(CheckJobVisible(rpc, core, req->job_id()));
    ASSIGN_OR_RETURN(auto list, core.jobs->ListCheckpoints(req->job_id()));
    for (auto& c : list.first) *resp->add_checkpoints() = std::move(c);
    resp->set_best_step(list.second);
    resp->set_http_port(gate_->http_port());
    resp->set_http_tls(gate_->http_tls());
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>*
JobServiceImpl::DownloadCheckpointFile(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer* request) {
  RpcScope rpc(gate_, ctx, kJobs, "DownloadCheckpointFile");
  lathe::v1::DownloadCheckpointFileRequest req;
  std::string first;
  auto path = rpc.Call([&](const Core& core) -> absl::StatusOr<std::string> {
    RETURN_IF_ERROR(ParseRequest(request, &req));
    RETURN_IF_ERROR(CheckJobVisible(rpc, core, req.job_id()));
    return ResolveCheckpointStream(core, req.job_id(), req.checkpoint(),
                                   req.file(), &first);
  });
  return StreamFile(std::move(rpc), path, req.offset(), std::move(first));
}

grpc::Status JobServiceImpl::ListWorkers(
    grpc::ServerContext* ctx, const lathe::v1::ListWorkersRequest* req,
    lathe::v1::ListWorkersResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "ListWorkers");
  return rpc.Run([&](const Core& core) -> absl::Status {
    for (auto& w : core.jobs->ListWorkers()) {
      // Another team's job is not named, only counted.
      std::vector<std::string> ids(w.job_ids().begin(), w.job_ids().end());
      w.clear_job_ids();
      for (const auto& id : ids) {
        auto job = core.jobs->Get(id);
        if (job.ok() && rpc.principal().Sees(job->team())) w.add_job_ids(id);
      }
      *resp->add_workers() = std::move(w);
    }
    return absl::OkStatus();
  });
}

grpc::Status JobServiceImpl::ListJobEvents(
    grpc::ServerContext* ctx, const lathe::v1::ListJobEventsRequest* req,
    lathe::v1::ListJobEventsResponse* resp) {
  RpcScope rpc(gate_, ctx, kJobs, "ListJobEvents");
  return rpc.Run([&](const Core& core) -> absl::Status {
    if (req->limit() < 0 || req->limit() > 1000) {
      return absl::InvalidArgumentError("limit: must be in [0, 1000]");
    }
    if (req->after_seq() < 0) {
      return absl::InvalidArgumentError("after_seq: must not be negative");
    }
    const int limit = req->limit() == 0 ? 100 : req->limit();
    RETURN_IF_ERROR(CheckJobVisible(rpc, core, req->id()));
    ASSIGN_OR_RETURN(auto got,
                     core.jobs->WaitForEvents(req->id(), req->after_seq(),
                                              limit + 1, absl::ZeroDuration()));
    auto& events = got.second;
    resp->set_has_more(static_cast<int>(events.size()) > limit);
    if (resp->has_more()) events.resize(limit);
    for (auto& e : events) *resp->add_events() = std::move(e);
    return absl::OkStatus();
  });
}

// ---- DatasetService ----

namespace {
std::optional<std::string> TeamOf(const Principal& who) {
  return who.admin() ? std::nullopt : std::optional<std::string>(who.team);
}
}  // namespace

grpc::Status DatasetServiceImpl::ListDatasets(
    grpc::ServerContext* ctx, const lathe::v1::ListDatasetsRequest* req,
    lathe::v1::ListDatasetsResponse* resp) {
  RpcScope rpc(gate_, ctx, kDatasets, "ListDatasets");
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(auto all,
                     core.jobs->ListDatasets(TeamOf(rpc.principal())));
    for (auto& d : all) *resp->add_datasets() = std::move(d);
    return absl::OkStatus();
  });
}

grpc::Status DatasetServiceImpl::GetDataset(
    grpc::ServerContext* ctx, const lathe::v1::GetDatasetRequest* req,
    lathe::v1::GetDatasetResponse* resp) {
  RpcScope rpc(gate_, ctx, kDatasets, "GetDataset");
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(
        *resp->mutable_dataset(),
        core.jobs->GetDataset(req->ref(), TeamOf(rpc.principal())));
    return absl::OkStatus();
  });
}

grpc::Status DatasetServiceImpl::DeleteDataset(
    grpc::ServerContext* ctx, const lathe::v1::DeleteDatasetRequest* req,
    lathe::v1::DeleteDatasetResponse* resp) {
  RpcScope rpc(gate_, ctx, kDatasets, "DeleteDataset");
  rpc.set_resource(req->ref());
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(
        *resp->mutable_dataset(),
        core.jobs->DeleteDataset(req->ref(), TeamOf(rpc.principal())));
    return absl::OkStatus();
  });
}

grpc::Status DatasetServiceImpl::UploadDataset(
    grpc::ServerContext* ctx,
    grpc::ServerReader<lathe::v1::UploadDatasetRequest>* reader,
    lathe::v1::UploadDatasetResponse* resp) {
  RpcScope rpc(gate_, ctx, kDatasets, "UploadDataset");
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(auto writer, core.artifacts->NewWriter(
                                      core.jobs->options().max_upload_bytes));
    lathe::v1::UploadDatasetRequest msg;
    std::string name;
    bool first = true;
    StreamWatchdog::Watch watch(gate_->watchdog(), ctx);
    while (reader->Read(&msg)) {
      watch.Touch();
      if (first) {
        name = msg.name();
        const bool control = std::any_of(name.begin(), name.end(), [](char c) {
          return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
        });
        if (name.empty() || name.size() > 255 || control ||
            name.find('/') != std::string::npos || name == "." ||
            name == "..") {
          return absl::InvalidArgumentError(
              "name: must be a file name of 1 to 255 characters without '/' "
              "or control characters");
        }
        first = false;
      }
      RETURN_IF_ERROR(writer->Append(msg.chunk()));
    }
    if (ctx->IsCancelled()) return absl::CancelledError("upload cancelled");
    if (first) return absl::InvalidArgumentError("name: no message received");
    ASSIGN_OR_RETURN(std::string sha, writer->Commit());
    const std::string& team = rpc.principal().team;
    resp->set_created(!core.jobs
                           ->GetDataset(absl::StrCat("dataset:", sha),
                                        std::optional<std::string>(team))
                           .ok());
    ASSIGN_OR_RETURN(
        *resp->mutable_dataset(),
        core.jobs->AddDataset(name, sha, writer->size(), rpc.principal().team));
    rpc.set_resource(resp->dataset().ref());
    return absl::OkStatus();
  });
}

// ---- ModelService ----

grpc::Status ModelServiceImpl::PushModel(
    grpc::ServerContext* ctx,
    grpc::ServerReader<lathe::v1::PushModelRequest>* reader,
    lathe::v1::PushModelResponse* resp) {
  RpcScope rpc(gate_, ctx, kModels, "PushModel");
  return rpc.Run([&](const Core& core) -> absl::Status {
    lathe::v1::PushModelRequest msg;
    StreamWatchdog::Watch watch(gate_->watchdog(), ctx);
    if (!reader->Read(&msg)) {
      return absl::InvalidArgumentError("name: no message received");
    }
    rpc.set_resource(msg.name());
    ASSIGN_OR_RETURN(
        auto push,
        core.models->StartPush(msg.name(), msg.replace(), rpc.principal()));
    do {
      watch.Touch();
      if (ctx->IsCancelled()) return absl::CancelledError("push cancelled");
      if (msg.has_file()) RETURN_IF_ERROR(push->BeginFile(msg.file()));
      RETURN_IF_ERROR(push->Append(msg.chunk()));
    } while (reader->Read(&msg));
    if (ctx->IsCancelled()) return absl::CancelledError("push cancelled");
    ASSIGN_OR_RETURN(PushResult result, push->Finish());
    *resp->mutable_model() = std::move(result.model);
    resp->set_created(result.created);
    return absl::OkStatus();
  });
}

grpc::Status ModelServiceImpl::ListModels(grpc::ServerContext* ctx,
                                          const lathe::v1::ListModelsRequest*,
                                          lathe::v1::ListModelsResponse* resp) {
  RpcScope rpc(gate_, ctx, kModels, "ListModels");
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(auto models, core.models->List());
    for (auto& m : models) {
      if (rpc.principal().Sees(m.team())) *resp->add_models() = std::move(m);
    }
    for (const auto& p : ModelPresets()) *resp->add_presets() = p;
    return absl::OkStatus();
  });
}

grpc::Status ModelServiceImpl::GetModel(grpc::ServerContext* ctx,
                                        const lathe::v1::GetModelRequest* req,
                                        lathe::v1::GetModelResponse* resp) {
  RpcScope rpc(gate_, ctx, kModels, "GetModel");
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(*resp->mutable_model(), core.models->Get(req->name()));
    if (!rpc.principal().Sees(resp->model().team())) {
      resp->Clear();
      return absl::NotFoundError(
          absl::StrCat("model ", req->name(), " not found"));
    }
    return absl::OkStatus();
  });
}

grpc::Status ModelServiceImpl::DeleteModel(
    grpc::ServerContext* ctx, const lathe::v1::DeleteModelRequest* req,
    lathe::v1::DeleteModelResponse* resp) {
  RpcScope rpc(gate_, ctx, kModels, "DeleteModel");
  return rpc.Run([&](const Core& core) -> absl::Status {
    rpc.set_resource(req->name());
    ASSIGN_OR_RETURN(*resp->mutable_model(),
                     core.models->Delete(req->name(), rpc.principal()));
    return absl::OkStatus();
  });
}

}  // namespace lathe::server
