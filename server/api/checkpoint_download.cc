#include "server/api/checkpoint_download.h"

#include <utility>

#include "common/status.h"
#include "server/api/rpc_scope.h"

namespace lathe::server {

struct CheckpointDownload::Scope {
  explicit Scope(RpcScope r) : rpc(std::move(r)) {}
  RpcScope rpc;
  bool done = false;
};

std::unique_ptr<CheckpointDownload> CheckpointDownload::Open(
    Gate* gate, std::string_view authorization, std::string peer,
    const std::string& job_id, const std::string& checkpoint,
    const std::string& file) {
  std::unique_ptr<CheckpointDownload> d(new CheckpointDownload());
  d->scope_ = std::make_unique<Scope>(RpcScope(
      gate, authorization, std::move(peer), kJobs, "DownloadCheckpointFile"));
  RpcScope& rpc = d->scope_->rpc;
  rpc.set_resource(job_id);
  d->status_ = rpc.Call([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(lathe::v1::Job job, core.jobs->Get(job_id));
    RETURN_IF_ERROR(rpc.SeeJob(job_id, job.team()));
    ASSIGN_OR_RETURN(
        ResolvedFile resolved,
        core.jobs->ResolveCheckpointFile(
            job_id, checkpoint.empty() ? "latest" : checkpoint, file));
    d->path_ = std::move(resolved.path);
    d->info_ = std::move(resolved.info);
    return absl::OkStatus();
  });
  if (!d->status_.ok()) d->Finish(d->status_);
  return d;
}

void CheckpointDownload::Finish(const absl::Status& outcome) {
  if (scope_ == nullptr || scope_->done) return;
  scope_->done = true;
  (void)scope_->rpc.Done(outcome);
  scope_.reset();  // gives the stream slot back
}

CheckpointDownload::~CheckpointDownload() {
  Finish(absl::CancelledError("the HTTP client went away"));
}

}  // namespace lathe::server
