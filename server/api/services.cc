#include "server/api/services.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/status.h"

namespace lathe::server {
namespace {

constexpr size_t kMaxMessage = 1024;
// Below gRPC's default 4 MiB receive limit, so that any client can download.
constexpr size_t kChunk = 2 << 20;
constexpr int kWatchBatch = 256;

grpc::StatusCode ToGrpcCode(absl::StatusCode code) {
  // absl's codes mirror gRPC's canonical codes one to one.
  return static_cast<grpc::StatusCode>(static_cast<int>(code));
}

// Records the RPC's outcome when the handler returns.
class RpcScope {
 public:
  RpcScope(Metrics* metrics, const char* method)
      : metrics_(metrics), method_(method) {}
  grpc::Status Done(const absl::Status& status) {
    grpc::Status s = ToGrpcStatus(status);
    metrics_->CountRpc(method_, absl::StatusCodeToString(status.code()));
    return s;
  }

 private:
  Metrics* metrics_;
  const char* method_;
};

// One chunk of a stored file as a gRPC slice, without copying it: a
// read-only mapping of the chunk, unmapped when the transport releases the
// slice (after the bytes went into the socket). Where the file cannot be
// mapped, the chunk is read into a buffer instead. Mapping chunk by chunk
// keeps the stream's resident memory to the chunks in flight. Stored files
// are never rewritten in place (new ones are renamed in), so a mapped chunk
// cannot shrink under the transport.
absl::StatusOr<grpc::Slice> FileChunk(int fd, int64_t offset, size_t n) {
  static const int64_t kPage = ::sysconf(_SC_PAGESIZE);
  const int64_t start = offset - offset % kPage;
  const size_t skip = static_cast<size_t>(offset - start);
  const size_t length = skip + n;
  void* base = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, start);
  if (base != MAP_FAILED) {
    struct Mapped {
      void* base;
      size_t length;
    };
    return grpc::Slice(
        static_cast<char*>(base) + skip, n,
        [](void* p) {
          auto* m = static_cast<Mapped*>(p);
          ::munmap(m->base, m->length);
          delete m;
        },
        new Mapped{base, length});
  }
  char* buffer = static_cast<char*>(std::malloc(n));
  if (buffer == nullptr) return absl::ResourceExhaustedError("out of memory");
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, buffer + done, n - done,
                                offset + static_cast<int64_t>(done));
    if (got <= 0) {
      std::free(buffer);
      return absl::InternalError("cannot read stored file");
    }
    done += static_cast<size_t>(got);
  }
  return grpc::Slice(buffer, n, std::free);
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
// hand: a few header bytes, then the chunk as a slice of the mapped file
// (FileChunk), so the file's bytes are copied once, into the socket, instead
// of read into a buffer, serialized into gRPC's and then sent. `first`
// (serialized fields, may be empty) goes into the first message only. One
// message is in flight at a time; deletes itself when gRPC is done.
class FileStreamReactor final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // `file` is the stored file's path, or why there is none.
  FileStreamReactor(Metrics* metrics, const char* method,
                    const absl::StatusOr<std::string>& file, int64_t offset,
                    std::string first)
      : rpc_(metrics, method), offset_(offset), first_(std::move(first)) {
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

// Parses a request that arrived as bytes (the raw callback methods).
template <typename Request>
absl::Status ParseRequest(const grpc::ByteBuffer* bytes, Request* req) {
  grpc::ByteBuffer copy(*bytes);  // shares the slices
  if (!grpc::SerializationTraits<Request>::Deserialize(&copy, req).ok()) {
    return absl::InvalidArgumentError("cannot parse the request");
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string msg(status.message());
  if (msg.size() > kMaxMessage) msg = msg.substr(0, kMaxMessage) + "...";
  return grpc::Status(ToGrpcCode(status.code()), msg);
}

// ---- JobService ----

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext*,
                                       const lathe::v1::SubmitJobRequest* req,
                                       lathe::v1::SubmitJobResponse* resp) {
  RpcScope rpc(metrics_, "SubmitJob");
  auto job = manager_->Submit(req->spec(), req->request_id());
  if (job.ok()) *resp->mutable_job() = std::move(*job);
  return rpc.Done(job.status());
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext*,
                                    const lathe::v1::GetJobRequest* req,
                                    lathe::v1::GetJobResponse* resp) {
  RpcScope rpc(metrics_, "GetJob");
  auto job = manager_->Get(req->id());
  if (job.ok()) *resp->mutable_job() = std::move(*job);
  return rpc.Done(job.status());
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext*,
                                      const lathe::v1::ListJobsRequest* req,
                                      lathe::v1::ListJobsResponse* resp) {
  RpcScope rpc(metrics_, "ListJobs");
  std::vector<int> states(req->states().begin(), req->states().end());
  auto page =
      manager_->List(states, req->owner(), req->page_size(), req->page_token());
  if (page.ok()) {
    for (auto& j : page->first) *resp->add_jobs() = std::move(j);
    resp->set_next_page_token(page->second);
  }
  return rpc.Done(page.status());
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext*,
                                       const lathe::v1::CancelJobRequest* req,
                                       lathe::v1::CancelJobResponse* resp) {
  RpcScope rpc(metrics_, "CancelJob");
  auto job = manager_->Cancel(req->id());
  if (job.ok()) *resp->mutable_job() = std::move(*job);
  return rpc.Done(job.status());
}

grpc::Status JobServiceImpl::PauseJob(grpc::ServerContext*,
                                      const lathe::v1::PauseJobRequest* req,
                                      lathe::v1::PauseJobResponse* resp) {
  RpcScope rpc(metrics_, "PauseJob");
  auto job = manager_->Pause(req->id());
  if (job.ok()) *resp->mutable_job() = std::move(*job);
  return rpc.Done(job.status());
}

grpc::Status JobServiceImpl::ResumeJob(grpc::ServerContext*,
                                       const lathe::v1::ResumeJobRequest* req,
                                       lathe::v1::ResumeJobResponse* resp) {
  RpcScope rpc(metrics_, "ResumeJob");
  auto job = manager_->Resume(req->id());
  if (job.ok()) *resp->mutable_job() = std::move(*job);
  return rpc.Done(job.status());
}

grpc::Status JobServiceImpl::RequestCheckpoint(
    grpc::ServerContext*, const lathe::v1::RequestCheckpointRequest* req,
    lathe::v1::RequestCheckpointResponse* resp) {
  RpcScope rpc(metrics_, "RequestCheckpoint");
  auto job = manager_->RequestCheckpoint(req->id());
  if (job.ok()) *resp->mutable_job() = std::move(*job);
  return rpc.Done(job.status());
}

namespace {

// One WatchJob stream: the job first, then each event after the requested
// sequence, one message in flight at a time; it ends when the job is final.
// While there is nothing to send it is registered with the manager, which
// calls OnJobChanged when there may be more. Owned by itself (self_) until
// gRPC is done with it; the manager holds it only weakly.
class WatchReactor final
    : public grpc::ServerWriteReactor<lathe::v1::WatchJobResponse>,
      public EventListener,
      public std::enable_shared_from_this<WatchReactor> {
 public:
  static WatchReactor* Start(JobManager* manager, Metrics* metrics,
                             const lathe::v1::WatchJobRequest& req) {
    auto reactor =
        std::shared_ptr<WatchReactor>(new WatchReactor(manager, metrics, req));
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
    // A write in flight completes (OnWriteDone) before the stream finishes.
    if (!writing_) {
      FinishLocked(absl::CancelledError("client cancelled the watch"));
    }
  }

  void OnDone() override { self_.reset(); }

 private:
  WatchReactor(JobManager* manager, Metrics* metrics,
               const lathe::v1::WatchJobRequest& req)
      : manager_(manager),
        rpc_(metrics, "WatchJob"),
        id_(req.id()),
        seq_(req.after_seq()) {}

  void Begin() {
    absl::MutexLock lock(&mu_);
    if (seq_ < 0) {
      FinishLocked(absl::InvalidArgumentError("after_seq: must be >= 0"));
      return;
    }
    auto first = manager_->Get(id_);
    if (!first.ok()) {
      FinishLocked(first.status());
      return;
    }
    lathe::v1::WatchJobResponse r;
    *r.mutable_job() = std::move(*first);
    pending_.push_back(std::move(r));
    Pump();
  }

  // Writes the next message, or polls for more and, when there is none
  // yet, waits for OnJobChanged.
  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (cancelled_) {
      FinishLocked(absl::CancelledError("client cancelled the watch"));
      return;
    }
    if (pending_.empty()) {
      auto batch =
          manager_->PollEvents(id_, seq_, kWatchBatch, weak_from_this());
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

  JobManager* const manager_;
  RpcScope rpc_;
  const std::string id_;
  std::shared_ptr<WatchReactor> self_;
  absl::Mutex mu_;
  int64_t seq_ ABSL_GUARDED_BY(mu_);
  // Messages to send; the front one is in flight while writing_.
  std::deque<lathe::v1::WatchJobResponse> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerWriteReactor<lathe::v1::WatchJobResponse>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext*, const lathe::v1::WatchJobRequest* req) {
  return WatchReactor::Start(manager_, metrics_, *req);
}

grpc::Status JobServiceImpl::ListCheckpoints(
    grpc::ServerContext*, const lathe::v1::ListCheckpointsRequest* req,
    lathe::v1::ListCheckpointsResponse* resp) {
  RpcScope rpc(metrics_, "ListCheckpoints");
  auto list = manager_->ListCheckpoints(req->job_id());
  if (list.ok()) {
    for (auto& c : list->first) *resp->add_checkpoints() = std::move(c);
    resp->set_best_step(list->second);
  }
  return rpc.Done(list.status());
}

grpc::ServerWriteReactor<grpc::ByteBuffer>*
JobServiceImpl::DownloadCheckpointFile(grpc::CallbackServerContext*,
                                       const grpc::ByteBuffer* request) {
  lathe::v1::DownloadCheckpointFileRequest req;
  absl::StatusOr<std::string> path;
  std::string first;
  absl::Status parsed = ParseRequest(request, &req);
  if (!parsed.ok()) {
    path = parsed;
  } else if (auto file = manager_->ResolveCheckpointFile(
                 req.job_id(), req.checkpoint(), req.file());
             !file.ok()) {
    path = file.status();
  } else {
    lathe::v1::DownloadCheckpointFileResponse r;
    *r.mutable_file() = file->info;
    first = r.SerializeAsString();
    path = file->path;
  }
  return new FileStreamReactor(metrics_, "DownloadCheckpointFile", path,
                               req.offset(), std::move(first));
}

// ---- DatasetService ----

grpc::Status DatasetServiceImpl::UploadDataset(
    grpc::ServerContext* ctx,
    grpc::ServerReader<lathe::v1::UploadDatasetRequest>* reader,
    lathe::v1::UploadDatasetResponse* resp) {
  RpcScope rpc(metrics_, "UploadDataset");
  auto body = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(auto writer, artifacts_->NewWriter(
                                      manager_->options().max_upload_bytes));
    lathe::v1::UploadDatasetRequest msg;
    std::string name;
    bool first = true;
    while (reader->Read(&msg)) {
      if (first) {
        name = msg.name();
        if (name.empty() || name.size() > 255 ||
            name.find('/') != std::string::npos || name == "." ||
            name == "..") {
          return absl::InvalidArgumentError(
              "name: must be a file name of 1 to 255 characters without '/'");
        }
        first = false;
      }
      RETURN_IF_ERROR(writer->Append(msg.chunk()));
    }
    if (ctx->IsCancelled()) return absl::CancelledError("upload cancelled");
    if (first) return absl::InvalidArgumentError("name: no message received");
    ASSIGN_OR_RETURN(std::string sha, writer->Commit());
    ASSIGN_OR_RETURN(*resp->mutable_dataset(),
                     manager_->AddDataset(name, sha, writer->size()));
    return absl::OkStatus();
  };
  return rpc.Done(body());
}

// ---- ModelService ----

grpc::Status ModelServiceImpl::PushModel(
    grpc::ServerContext* ctx,
    grpc::ServerReader<lathe::v1::PushModelRequest>* reader,
    lathe::v1::PushModelResponse* resp) {
  RpcScope rpc(metrics_, "PushModel");
  auto body = [&]() -> absl::Status {
    lathe::v1::PushModelRequest msg;
    if (!reader->Read(&msg)) {
      return absl::InvalidArgumentError("name: no message received");
    }
    ASSIGN_OR_RETURN(auto push, models_->StartPush(msg.name(), msg.replace()));
    do {
      if (ctx->IsCancelled()) return absl::CancelledError("push cancelled");
      if (msg.has_file()) RETURN_IF_ERROR(push->BeginFile(msg.file()));
      RETURN_IF_ERROR(push->Append(msg.chunk()));
    } while (reader->Read(&msg));
    if (ctx->IsCancelled()) return absl::CancelledError("push cancelled");
    ASSIGN_OR_RETURN(PushResult result, push->Finish());
    *resp->mutable_model() = std::move(result.model);
    resp->set_created(result.created);
    return absl::OkStatus();
  };
  return rpc.Done(body());
}

grpc::Status ModelServiceImpl::ListModels(grpc::ServerContext*,
                                          const lathe::v1::ListModelsRequest*,
                                          lathe::v1::ListModelsResponse* resp) {
  RpcScope rpc(metrics_, "ListModels");
  auto models = models_->List();
  if (models.ok()) {
    for (auto& m : *models) *resp->add_models() = std::move(m);
    for (const auto& p : ModelPresets()) *resp->add_presets() = p;
  }
  return rpc.Done(models.status());
}

grpc::Status ModelServiceImpl::GetModel(grpc::ServerContext*,
                                        const lathe::v1::GetModelRequest* req,
                                        lathe::v1::GetModelResponse* resp) {
  RpcScope rpc(metrics_, "GetModel");
  auto model = models_->Get(req->name());
  if (model.ok()) *resp->mutable_model() = std::move(*model);
  return rpc.Done(model.status());
}

grpc::Status ModelServiceImpl::DeleteModel(
    grpc::ServerContext*, const lathe::v1::DeleteModelRequest* req,
    lathe::v1::DeleteModelResponse* resp) {
  RpcScope rpc(metrics_, "DeleteModel");
  auto model = models_->Delete(req->name());
  if (model.ok()) *resp->mutable_model() = std::move(*model);
  return rpc.Done(model.status());
}

// ---- WorkerService ----

grpc::Status WorkerServiceImpl::RegisterWorker(
    grpc::ServerContext*, const lathe::v1::RegisterWorkerRequest* req,
    lathe::v1::RegisterWorkerResponse* resp) {
  RpcScope rpc(metrics_, "RegisterWorker");
  std::vector<lathe::v1::Device> devices(req->device_info().begin(),
                                         req->device_info().end());
  if (devices.empty()) {
    for (const auto& name : req->devices()) {
      lathe::v1::Device d;
      d.set_name(name);
      devices.push_back(d);
    }
  }
  auto reg = manager_->RegisterWorker(req->name(), devices, req->hostname());
  if (reg.ok()) {
    resp->set_worker_id(reg->worker_id);
    resp->set_heartbeat_interval_ms(
        absl::ToInt64Milliseconds(reg->heartbeat_interval));
    resp->set_heartbeat_timeout_ms(
        absl::ToInt64Milliseconds(reg->heartbeat_timeout));
  }
  return rpc.Done(reg.status());
}

grpc::Status WorkerServiceImpl::Heartbeat(
    grpc::ServerContext*, const lathe::v1::HeartbeatRequest* req,
    lathe::v1::HeartbeatResponse* resp) {
  RpcScope rpc(metrics_, "Heartbeat");
  auto commands = manager_->Heartbeat(req->worker_id());
  if (commands.ok()) {
    for (auto& id : commands->cancel) resp->add_cancel_job_ids(id);
    for (auto& id : commands->checkpoint) resp->add_checkpoint_job_ids(id);
    for (auto& id : commands->pause) resp->add_pause_job_ids(id);
  }
  return rpc.Done(commands.status());
}

grpc::Status WorkerServiceImpl::HeartbeatStream(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<lathe::v1::HeartbeatResponse,
                             lathe::v1::HeartbeatRequest>* stream) {
  RpcScope rpc(metrics_, "HeartbeatStream");
  lathe::v1::HeartbeatRequest req;
  while (!ctx->IsCancelled() && stream->Read(&req)) {
    auto commands = manager_->Heartbeat(req.worker_id());
    if (!commands.ok()) return rpc.Done(commands.status());
    lathe::v1::HeartbeatResponse resp;
    for (auto& id : commands->cancel) resp.add_cancel_job_ids(id);
    for (auto& id : commands->checkpoint) resp.add_checkpoint_job_ids(id);
    for (auto& id : commands->pause) resp.add_pause_job_ids(id);
    if (!stream->Write(resp)) break;
  }
  return rpc.Done(absl::OkStatus());
}

grpc::Status WorkerServiceImpl::AcquireJob(
    grpc::ServerContext* ctx, const lathe::v1::AcquireJobRequest* req,
    lathe::v1::AcquireJobResponse* resp) {
  RpcScope rpc(metrics_, "AcquireJob");
  if (req->wait_ms() < 0 || req->wait_ms() > 30000) {
    return rpc.Done(
        absl::InvalidArgumentError("wait_ms: must be in [0, 30000]"));
  }
  // Never hold a job past the client's deadline: it could not receive it.
  auto until_deadline =
      absl::FromChrono(ctx->deadline()) - absl::Now() - absl::Milliseconds(200);
  auto wait = std::min(absl::Milliseconds(req->wait_ms()), until_deadline);
  if (wait < absl::ZeroDuration()) wait = absl::ZeroDuration();
  auto a = manager_->AcquireJob(req->worker_id(), wait);
  if (a.ok() && a->has_value()) *resp->mutable_assignment() = std::move(**a);
  return rpc.Done(a.status());
}

grpc::Status WorkerServiceImpl::ReportEvents(
    grpc::ServerContext*, const lathe::v1::ReportEventsRequest* req,
    lathe::v1::ReportEventsResponse* resp) {
  RpcScope rpc(metrics_, "ReportEvents");
  std::vector<lathe::v1::Event> events(req->events().begin(),
                                       req->events().end());
  auto commands =
      manager_->ReportEvents(req->job_id(), req->attempt(), std::move(events));
  if (commands.ok()) {
    resp->set_cancel_requested(commands->cancel);
    resp->set_checkpoint_requested(commands->checkpoint);
    resp->set_pause_requested(commands->pause);
  }
  return rpc.Done(commands.status());
}

grpc::Status WorkerServiceImpl::UploadCheckpointFile(
    grpc::ServerContext* ctx,
    grpc::ServerReader<lathe::v1::UploadCheckpointFileRequest>* reader,
    lathe::v1::UploadCheckpointFileResponse* resp) {
  RpcScope rpc(metrics_, "UploadCheckpointFile");
  auto body = [&]() -> absl::Status {
    lathe::v1::UploadCheckpointFileRequest msg;
    if (!reader->Read(&msg)) {
      return absl::InvalidArgumentError("file: no message received");
    }
    const lathe::v1::FileInfo info = msg.file();
    if (!IsSha256Hex(info.sha256())) {
      return absl::InvalidArgumentError(
          "file.sha256: not a SHA-256 hex digest");
    }
    if (info.size() < 0 || info.size() > manager_->options().max_upload_bytes) {
      return absl::InvalidArgumentError("file.size: out of range");
    }
    RETURN_IF_ERROR(manager_->CheckAttempt(msg.job_id(), msg.attempt()));
    if (!artifacts_->Has(info.sha256(), info.size())) {
      ASSIGN_OR_RETURN(auto writer, artifacts_->NewWriter(info.size()));
      do {
        RETURN_IF_ERROR(writer->Append(msg.chunk()));
      } while (reader->Read(&msg));
      if (ctx->IsCancelled()) return absl::CancelledError("upload cancelled");
      if (writer->size() != info.size()) {
        return absl::DataLossError(absl::StrCat(
            "received ", writer->size(), " bytes, expected ", info.size()));
      }
      RETURN_IF_ERROR(writer->Commit(info.sha256()).status());
    } else {
      while (reader->Read(&msg)) {
      }
    }
    *resp->mutable_file() = info;
    return absl::OkStatus();
  };
  return rpc.Done(body());
}

grpc::Status WorkerServiceImpl::FinishAttempt(
    grpc::ServerContext*, const lathe::v1::FinishAttemptRequest* req,
    lathe::v1::FinishAttemptResponse*) {
  RpcScope rpc(metrics_, "FinishAttempt");
  return rpc.Done(manager_->FinishAttempt(req->job_id(), req->attempt(),
                                          req->outcome(), req->error(),
                                          req->failure()));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerServiceImpl::FetchDataset(
    grpc::CallbackServerContext*, const grpc::ByteBuffer* request) {
  lathe::v1::FetchDatasetRequest req;
  absl::Status parsed = ParseRequest(request, &req);
  absl::StatusOr<std::string> path = parsed.ok()
                                         ? manager_->DatasetPath(req.ref())
                                         : absl::StatusOr<std::string>(parsed);
  return new FileStreamReactor(metrics_, "FetchDataset", path, req.offset(),
                               "");
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerServiceImpl::FetchModelFile(
    grpc::CallbackServerContext*, const grpc::ByteBuffer* request) {
  lathe::v1::FetchModelFileRequest req;
  absl::Status parsed = ParseRequest(request, &req);
  absl::StatusOr<std::string> path =
      parsed.ok() ? manager_->models()->FilePath(req.sha256())
                  : absl::StatusOr<std::string>(parsed);
  return new FileStreamReactor(metrics_, "FetchModelFile", path, req.offset(),
                               "");
}

}  // namespace lathe::server
