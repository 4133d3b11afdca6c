#include "server/api/services.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/redact.h"
#include "common/status.h"

namespace lathe::server {

using lathe::v1::Job;

// One RPC: admits it by the access policy before the handler may use the
// core, and records its outcome (the one conversion to grpc::Status, and the
// count by method and code) when it is done.
class RpcScope {
 public:
  RpcScope(Gate* gate, grpc::ServerContextBase* ctx, const char* service,
           const char* method)
      : gate_(gate), method_(method), service_(service), peer_(ctx->peer()) {
    const std::string full = absl::StrCat("lathe.v1.", service, ".", method);
    rule_ = AccessPolicy::RuleFor(full);
    std::string_view header;
    const auto& md = ctx->client_metadata();
    if (auto it = md.find("authorization"); it != md.end()) {
      header = std::string_view(it->second.data(), it->second.size());
    }
    if (rule_ == nullptr) {
      admitted_ = gate->policy_.Check(full, principal_);
      return;
    }
    auto who = gate->core_.identities->Authenticate(header);
    if (!who.ok()) {
      admitted_ = who.status();
      return;
    }
    principal_ = *std::move(who);
    admitted_ = gate->policy_.Check(full, principal_);
    if (!admitted_.ok() || principal_.admin()) return;
    const std::string_view m(method);
    if (m == "SubmitJob") {
      admitted_ = gate->limits_.TakeSubmit(principal_.token_id, absl::Now());
    } else if (m == "WatchJob" || m == "DownloadCheckpointFile" ||
               m == "UploadDataset" || m == "PushModel") {
      admitted_ = gate->limits_.OpenStream(principal_.user);
      holds_stream_ = admitted_.ok();
    }
  }
  ~RpcScope() {
    if (holds_stream_) gate_->limits_.CloseStream(principal_.user);
  }
  // Reactors keep the scope for the life of their stream; the stream's
  // slot moves with it.
  RpcScope(RpcScope&& other) noexcept
      : gate_(other.gate_),
        method_(other.method_),
        service_(other.service_),
        peer_(std::move(other.peer_)),
        rule_(other.rule_),
        principal_(std::move(other.principal_)),
        resource_(std::move(other.resource_)),
        admitted_(std::move(other.admitted_)),
        holds_stream_(other.holds_stream_) {
    other.holds_stream_ = false;
  }
  RpcScope(const RpcScope&) = delete;
  RpcScope& operator=(const RpcScope&) = delete;
  RpcScope& operator=(RpcScope&&) = delete;

  // `body(core)` if the call is admitted, else why not.
  template <typename Body>
  auto Call(Body&& body) -> decltype(body(std::declval<const Core&>())) {
    if (!admitted_.ok()) return admitted_;
    return body(gate_->core_);
  }
  // Call, then Done.
  template <typename Body>
  grpc::Status Run(Body&& body) {
    return Done(Call(std::forward<Body>(body)));
  }
  grpc::Status Done(const absl::Status& status) {
    grpc::Status s = ToGrpcStatus(status);
    gate_->metrics_->CountRpc(method_, absl::StatusCodeToString(status.code()));
    const bool refused = absl::IsUnauthenticated(status) ||
                         absl::IsPermissionDenied(status) || !admitted_.ok();
    if (refused || (rule_ != nullptr && rule_->audited)) {
      lathe::v1::AuditEntry e;
      e.set_user(principal_.user);
      e.set_token_id(principal_.token_id);
      e.set_method(absl::StrCat(service_, ".", method_));
      e.set_resource(resource_);
      e.set_peer(peer_);
      e.set_code(absl::StatusCodeToString(status.code()));
      gate_->core_.audit->Record(std::move(e));
    }
    return s;
  }
  template <typename T>
  grpc::Status Done(const absl::StatusOr<T>& result) {
    return Done(result.status());
  }

  // The authenticated caller; meaningful once the call is admitted.
  const Principal& principal() const { return principal_; }
  // The job, model, dataset, user or token the call is about, for the
  // audit log.
  void set_resource(std::string resource) { resource_ = std::move(resource); }
  // NOT_FOUND, worded as for a missing job, unless the caller may see a job
  // of `team`.
  absl::Status SeeJob(const std::string& id, const std::string& team) const {
    if (principal_.Sees(team)) return absl::OkStatus();
    return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  }

 private:
  Gate* gate_;
  const char* method_;
  const char* service_;
  std::string peer_;
  const AccessRule* rule_ = nullptr;
  Principal principal_;
  std::string resource_;
  absl::Status admitted_;
  // Holds one of the user's stream slots (Limits::OpenStream).
  bool holds_stream_ = false;
};

namespace {

constexpr size_t kMaxMessage = 1024;
// Below gRPC's default 4 MiB receive limit, so that any client can download.
constexpr size_t kChunk = 2 << 20;
constexpr int kWatchBatch = 256;

grpc::StatusCode ToGrpcCode(absl::StatusCode code) {
  // absl's codes mirror gRPC's canonical codes one to one.
  return static_cast<grpc::StatusCode>(static_cast<int>(code));
}

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
  // A message may quote what the caller sent (a URI with a password, a
  // pasted token): never send a credential back.
  std::string msg = RedactSecrets(std::string(status.message()));
  if (msg.size() > kMaxMessage) msg = msg.substr(0, kMaxMessage) + "...";
  return grpc::Status(ToGrpcCode(status.code()), msg);
}

// ---- JobService ----

namespace {
constexpr char kJobs[] = "JobService";
constexpr char kDatasets[] = "DatasetService";
constexpr char kModels[] = "ModelService";
constexpr char kWorkers[] = "WorkerService";
constexpr char kAdmin[] = "AdminService";

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
    ASSIGN_OR_RETURN(
        auto page,
        core.jobs->List(
            states, req->owner(), req->page_size(), req->page_token(),
            who.admin() ? std::nullopt : std::optional<std::string>(who.team)));
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
    ASSIGN_OR_RETURN(ResolvedFile file,
                     core.jobs->ResolveCheckpointFile(
                         req.job_id(), req.checkpoint(), req.file()));
    lathe::v1::DownloadCheckpointFileResponse r;
    *r.mutable_file() = file.info;
    first = r.SerializeAsString();
    return file.path;
  });
  return new FileStreamReactor(std::move(rpc), path, req.offset(),
                               std::move(first));
}

// ---- DatasetService ----

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

// ---- AdminService ----

namespace {

void SetToken(const Identities::NewToken& t,
              lathe::v1::CreateTokenResponse* resp) {
  *resp->mutable_token() = t.token;
  resp->set_secret(t.secret);
}

// Non-admins act on their own tokens only; another user's token reads as
// missing.
absl::Status OwnToken(const Principal& who, const lathe::v1::ApiToken& t) {
  if (who.admin() || t.user() == who.user) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("token ", t.id(), " not found"));
}

}  // namespace

grpc::Status AdminServiceImpl::CreateUser(
    grpc::ServerContext* ctx, const lathe::v1::CreateUserRequest* req,
    lathe::v1::CreateUserResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "CreateUser");
  rpc.set_resource(req->name());
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(
        *resp->mutable_user(),
        core.identities->CreateUser(req->name(), req->team(), req->role()));
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::ListUsers(grpc::ServerContext* ctx,
                                         const lathe::v1::ListUsersRequest*,
                                         lathe::v1::ListUsersResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "ListUsers");
  return rpc.Run([&](const Core& core) -> absl::Status {
    for (auto& u : core.identities->ListUsers()) {
      *resp->add_users() = std::move(u);
    }
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::DisableUser(
    grpc::ServerContext* ctx, const lathe::v1::DisableUserRequest* req,
    lathe::v1::DisableUserResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "DisableUser");
  rpc.set_resource(req->name());
  return rpc.Run([&](const Core& core) -> absl::Status {
    if (req->name() == rpc.principal().user) {
      return absl::FailedPreconditionError(
          "name: an admin cannot disable their own user");
    }
    ASSIGN_OR_RETURN(*resp->mutable_user(),
                     core.identities->DisableUser(req->name()));
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::CreateToken(
    grpc::ServerContext* ctx, const lathe::v1::CreateTokenRequest* req,
    lathe::v1::CreateTokenResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "CreateToken");
  return rpc.Run([&](const Core& core) -> absl::Status {
    const Principal& who = rpc.principal();
    const std::string user = req->user().empty() ? who.user : req->user();
    rpc.set_resource(user);
    if (user != who.user && !who.admin()) {
      return absl::PermissionDeniedError(
          "user: only an admin may create tokens for another user");
    }
    if (req->expires_in_s() < 0 || req->expires_in_s() > (int64_t{1} << 32)) {
      return absl::InvalidArgumentError(
          "expires_in_s: must be in [0, 2^32] (0: never)");
    }
    ASSIGN_OR_RETURN(
        auto token, core.identities->CreateToken(
                        user, req->name(), absl::Seconds(req->expires_in_s())));
    rpc.set_resource(token.token.id());
    SetToken(token, resp);
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::ListTokens(
    grpc::ServerContext* ctx, const lathe::v1::ListTokensRequest* req,
    lathe::v1::ListTokensResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "ListTokens");
  return rpc.Run([&](const Core& core) -> absl::Status {
    const Principal& who = rpc.principal();
    const std::string user = who.admin() ? req->user() : who.user;
    for (auto& t : core.identities->ListTokens(user)) {
      *resp->add_tokens() = std::move(t);
    }
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::RevokeToken(
    grpc::ServerContext* ctx, const lathe::v1::RevokeTokenRequest* req,
    lathe::v1::RevokeTokenResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "RevokeToken");
  rpc.set_resource(req->id());
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(auto token, core.identities->GetToken(req->id()));
    RETURN_IF_ERROR(OwnToken(rpc.principal(), token));
    ASSIGN_OR_RETURN(*resp->mutable_token(),
                     core.identities->RevokeToken(req->id()));
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::ListAudit(grpc::ServerContext* ctx,
                                         const lathe::v1::ListAuditRequest* req,
                                         lathe::v1::ListAuditResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "ListAudit");
  return rpc.Run([&](const Core& core) -> absl::Status {
    if (req->page_size() < 0 || req->page_size() > 1000) {
      return absl::InvalidArgumentError("page_size: must be in [0, 1000]");
    }
    ASSIGN_OR_RETURN(
        auto entries,
        core.audit->List(req->page_size() == 0 ? 100 : req->page_size(),
                         req->before_seq()));
    for (auto& e : entries) *resp->add_entries() = std::move(e);
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::WhoAmI(grpc::ServerContext* ctx,
                                      const lathe::v1::WhoAmIRequest*,
                                      lathe::v1::WhoAmIResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "WhoAmI");
  return rpc.Run([&](const Core& core) -> absl::Status {
    const Principal& who = rpc.principal();
    ASSIGN_OR_RETURN(*resp->mutable_user(), core.identities->GetUser(who.user));
    ASSIGN_OR_RETURN(*resp->mutable_token(),
                     core.identities->GetToken(who.token_id));
    return absl::OkStatus();
  });
}

// ---- WorkerService ----

namespace {
void AddCommands(const WorkerCommands& commands,
                 lathe::v1::HeartbeatResponse* resp) {
  for (const auto& id : commands.cancel) resp->add_cancel_job_ids(id);
  for (const auto& id : commands.checkpoint) resp->add_checkpoint_job_ids(id);
  for (const auto& id : commands.pause) resp->add_pause_job_ids(id);
}
}  // namespace

grpc::Status WorkerServiceImpl::RegisterWorker(
    grpc::ServerContext* ctx, const lathe::v1::RegisterWorkerRequest* req,
    lathe::v1::RegisterWorkerResponse* resp) {
  RpcScope rpc(gate_, ctx, kWorkers, "RegisterWorker");
  return rpc.Run([&](const Core& core) -> absl::Status {
    std::vector<lathe::v1::Device> devices(req->device_info().begin(),
                                           req->device_info().end());
    if (devices.empty()) {
      for (const auto& name : req->devices()) {
        lathe::v1::Device d;
        d.set_name(name);
        devices.push_back(d);
      }
    }
    ASSIGN_OR_RETURN(auto reg, core.jobs->RegisterWorker(req->name(), devices,
                                                         req->hostname(),
                                                         rpc.principal().user));
    rpc.set_resource(reg.worker_id);
    resp->set_worker_id(reg.worker_id);
    resp->set_heartbeat_interval_ms(
        absl::ToInt64Milliseconds(reg.heartbeat_interval));
    resp->set_heartbeat_timeout_ms(
        absl::ToInt64Milliseconds(reg.heartbeat_timeout));
    return absl::OkStatus();
  });
}

grpc::Status WorkerServiceImpl::Heartbeat(
    grpc::ServerContext* ctx, const lathe::v1::HeartbeatRequest* req,
    lathe::v1::HeartbeatResponse* resp) {
  RpcScope rpc(gate_, ctx, kWorkers, "Heartbeat");
  return rpc.Run([&](const Core& core) -> absl::Status {
    RETURN_IF_ERROR(
        core.jobs->CheckWorkerOwner(req->worker_id(), rpc.principal().user));
    ASSIGN_OR_RETURN(auto commands, core.jobs->Heartbeat(req->worker_id()));
    AddCommands(commands, resp);
    return absl::OkStatus();
  });
}

grpc::Status WorkerServiceImpl::HeartbeatStream(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<lathe::v1::HeartbeatResponse,
                             lathe::v1::HeartbeatRequest>* stream) {
  RpcScope rpc(gate_, ctx, kWorkers, "HeartbeatStream");
  return rpc.Run([&](const Core& core) -> absl::Status {
    lathe::v1::HeartbeatRequest req;
    while (!ctx->IsCancelled() && stream->Read(&req)) {
      RETURN_IF_ERROR(
          core.jobs->CheckWorkerOwner(req.worker_id(), rpc.principal().user));
      ASSIGN_OR_RETURN(auto commands, core.jobs->Heartbeat(req.worker_id()));
      lathe::v1::HeartbeatResponse resp;
      AddCommands(commands, &resp);
      if (!stream->Write(resp)) break;
    }
    return absl::OkStatus();
  });
}

grpc::Status WorkerServiceImpl::AcquireJob(
    grpc::ServerContext* ctx, const lathe::v1::AcquireJobRequest* req,
    lathe::v1::AcquireJobResponse* resp) {
  RpcScope rpc(gate_, ctx, kWorkers, "AcquireJob");
  return rpc.Run([&](const Core& core) -> absl::Status {
    if (req->wait_ms() < 0 || req->wait_ms() > 30000) {
      return absl::InvalidArgumentError("wait_ms: must be in [0, 30000]");
    }
    auto until_deadline = absl::FromChrono(ctx->deadline()) - absl::Now() -
                          absl::Milliseconds(200);
    auto wait = std::min(absl::Milliseconds(req->wait_ms()), until_deadline);
    if (wait < absl::ZeroDuration()) wait = absl::ZeroDuration();
    RETURN_IF_ERROR(
        core.jobs->CheckWorkerOwner(req->worker_id(), rpc.principal().user));
    ASSIGN_OR_RETURN(auto a, core.jobs->AcquireJob(req->worker_id(), wait));
    if (a.has_value()) *resp->mutable_assignment() = std::move(*a);
    return absl::OkStatus();
  });
}

grpc::Status WorkerServiceImpl::ReportEvents(
    grpc::ServerContext* ctx, const lathe::v1::ReportEventsRequest* req,
    lathe::v1::ReportEventsResponse* resp) {
  RpcScope rpc(gate_, ctx, kWorkers, "ReportEvents");
  return rpc.Run([&](const Core& core) -> absl::Status {
    // A stale attempt first (FAILED_PRECONDITION tells its worker to stop).
    RETURN_IF_ERROR(core.jobs->CheckAttempt(req->job_id(), req->attempt()));
    RETURN_IF_ERROR(
        core.jobs->CheckJobHolder(req->job_id(), rpc.principal().user));
    std::vector<lathe::v1::Event> events(req->events().begin(),
                                         req->events().end());
    ASSIGN_OR_RETURN(auto commands,
                     core.jobs->ReportEvents(req->job_id(), req->attempt(),
                                             std::move(events)));
    resp->set_cancel_requested(commands.cancel);
    resp->set_checkpoint_requested(commands.checkpoint);
    resp->set_pause_requested(commands.pause);
    return absl::OkStatus();
  });
}

grpc::Status WorkerServiceImpl::UploadCheckpointFile(
    grpc::ServerContext* ctx,
    grpc::ServerReader<lathe::v1::UploadCheckpointFileRequest>* reader,
    lathe::v1::UploadCheckpointFileResponse* resp) {
  RpcScope rpc(gate_, ctx, kWorkers, "UploadCheckpointFile");
  return rpc.Run([&](const Core& core) -> absl::Status {
    lathe::v1::UploadCheckpointFileRequest msg;
    StreamWatchdog::Watch watch(gate_->watchdog(), ctx);
    if (!reader->Read(&msg)) {
      return absl::InvalidArgumentError("file: no message received");
    }
    const lathe::v1::FileInfo info = msg.file();
    if (!IsSha256Hex(info.sha256())) {
      return absl::InvalidArgumentError(
          "file.sha256: not a SHA-256 hex digest");
    }
    if (info.size() < 0 ||
        info.size() > core.jobs->options().max_upload_bytes) {
      return absl::InvalidArgumentError("file.size: out of range");
    }
    RETURN_IF_ERROR(core.jobs->CheckAttempt(msg.job_id(), msg.attempt()));
    RETURN_IF_ERROR(
        core.jobs->CheckJobHolder(msg.job_id(), rpc.principal().user));
    if (!core.artifacts->Has(info.sha256(), info.size())) {
      ASSIGN_OR_RETURN(auto writer, core.artifacts->NewWriter(info.size()));
      do {
        watch.Touch();
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
  });
}

grpc::Status WorkerServiceImpl::FinishAttempt(
    grpc::ServerContext* ctx, const lathe::v1::FinishAttemptRequest* req,
    lathe::v1::FinishAttemptResponse*) {
  RpcScope rpc(gate_, ctx, kWorkers, "FinishAttempt");
  rpc.set_resource(req->job_id());
  return rpc.Run([&](const Core& core) -> absl::Status {
    RETURN_IF_ERROR(core.jobs->CheckAttempt(req->job_id(), req->attempt()));
    RETURN_IF_ERROR(
        core.jobs->CheckJobHolder(req->job_id(), rpc.principal().user));
    return core.jobs->FinishAttempt(req->job_id(), req->attempt(),
                                    req->outcome(), req->error(),
                                    req->failure());
  });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerServiceImpl::FetchDataset(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  RpcScope rpc(gate_, ctx, kWorkers, "FetchDataset");
  lathe::v1::FetchDatasetRequest req;
  auto path = rpc.Call([&](const Core& core) -> absl::StatusOr<std::string> {
    RETURN_IF_ERROR(ParseRequest(request, &req));
    RETURN_IF_ERROR(core.jobs->CheckFetch(rpc.principal().user, req.ref(), ""));
    return core.jobs->DatasetPath(req.ref());
  });
  return new FileStreamReactor(std::move(rpc), path, req.offset(), "");
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* WorkerServiceImpl::FetchModelFile(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  RpcScope rpc(gate_, ctx, kWorkers, "FetchModelFile");
  lathe::v1::FetchModelFileRequest req;
  auto path = rpc.Call([&](const Core& core) -> absl::StatusOr<std::string> {
    RETURN_IF_ERROR(ParseRequest(request, &req));
    RETURN_IF_ERROR(
        core.jobs->CheckFetch(rpc.principal().user, "", req.sha256()));
    return core.models->FilePath(req.sha256());
  });
  return new FileStreamReactor(std::move(rpc), path, req.offset(), "");
}

grpc::ServerWriteReactor<grpc::ByteBuffer>*
WorkerServiceImpl::FetchCheckpointFile(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer* request) {
  RpcScope rpc(gate_, ctx, kWorkers, "FetchCheckpointFile");
  lathe::v1::FetchCheckpointFileRequest req;
  std::string first;
  auto path = rpc.Call([&](const Core& core) -> absl::StatusOr<std::string> {
    RETURN_IF_ERROR(ParseRequest(request, &req));
    RETURN_IF_ERROR(core.jobs->CheckAttempt(req.job_id(), req.attempt()));
    RETURN_IF_ERROR(
        core.jobs->CheckJobHolder(req.job_id(), rpc.principal().user));
    ASSIGN_OR_RETURN(ResolvedFile file,
                     core.jobs->ResolveCheckpointFile(
                         req.job_id(), req.checkpoint(), req.file()));
    lathe::v1::DownloadCheckpointFileResponse r;
    *r.mutable_file() = file.info;
    first = r.SerializeAsString();
    return file.path;
  });
  return new FileStreamReactor(std::move(rpc), path, req.offset(),
                               std::move(first));
}

}  // namespace lathe::server
