// WorkerService: registration, heartbeats, work, reports and the fetches of
// what a worker's jobs use.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "server/api/rpc_scope.h"
#include "server/api/services.h"

namespace lathe::server {

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
    if (!req->worker_id().empty()) {
      RETURN_IF_ERROR(
          core.jobs->CheckWorkerOwner(req->worker_id(), rpc.principal().user));
    }
    return core.jobs->FinishAttempt(req->job_id(), req->attempt(),
                                    req->outcome(), req->error(),
                                    req->failure(), req->worker_id());
  });
}

grpc::Status WorkerServiceImpl::JoinGang(grpc::ServerContext* ctx,
                                         const lathe::v1::JoinGangRequest* req,
                                         lathe::v1::JoinGangResponse* resp) {
  RpcScope rpc(gate_, ctx, kWorkers, "JoinGang");
  rpc.set_resource(req->job_id());
  return rpc.Run([&](const Core& core) -> absl::Status {
    if (req->wait_ms() < 0 || req->wait_ms() > 30000) {
      return absl::InvalidArgumentError("wait_ms: must be in [0, 30000]");
    }
    if (req->store_address().size() > 300) {
      return absl::InvalidArgumentError("store_address: too long");
    }
    RETURN_IF_ERROR(
        core.jobs->CheckWorkerOwner(req->worker_id(), rpc.principal().user));
    auto until_deadline = absl::FromChrono(ctx->deadline()) - absl::Now() -
                          absl::Milliseconds(200);
    auto wait = std::min(absl::Milliseconds(req->wait_ms()), until_deadline);
    if (wait < absl::ZeroDuration()) wait = absl::ZeroDuration();
    ASSIGN_OR_RETURN(
        auto address,
        core.jobs->JoinGang(req->worker_id(), req->job_id(), req->attempt(),
                            req->store_address(), wait));
    resp->set_store_address(address);
    return absl::OkStatus();
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
  return StreamFile(std::move(rpc), path, req.offset(), "");
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
  return StreamFile(std::move(rpc), path, req.offset(), "");
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
    return ResolveCheckpointStream(core, req.job_id(), req.checkpoint(),
                                   req.file(), &first);
  });
  return StreamFile(std::move(rpc), path, req.offset(), std::move(first));
}

}  // namespace lathe::server
