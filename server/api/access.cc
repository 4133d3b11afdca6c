#include "server/api/access.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace lathe::server {

namespace {

const std::map<std::string_view, AccessRule>& Rules() {
  constexpr Audience kClient = Audience::kClient;
  constexpr Audience kWorker = Audience::kWorker;
  static const auto* rules = new std::map<std::string_view, AccessRule>{
      {"lathe.v1.JobService.SubmitJob", {kClient, true}},
      {"lathe.v1.JobService.GetJob", {kClient, false}},
      {"lathe.v1.JobService.ListJobs", {kClient, false}},
      {"lathe.v1.JobService.CancelJob", {kClient, true}},
      {"lathe.v1.JobService.PauseJob", {kClient, true}},
      {"lathe.v1.JobService.ResumeJob", {kClient, true}},
      {"lathe.v1.JobService.RequestCheckpoint", {kClient, true}},
      {"lathe.v1.JobService.WatchJob", {kClient, false}},
      {"lathe.v1.JobService.ListCheckpoints", {kClient, false}},
      {"lathe.v1.JobService.DownloadCheckpointFile", {kClient, false}},
      {"lathe.v1.DatasetService.UploadDataset", {kClient, true}},
      {"lathe.v1.ModelService.PushModel", {kClient, true}},
      {"lathe.v1.ModelService.ListModels", {kClient, false}},
      {"lathe.v1.ModelService.GetModel", {kClient, false}},
      {"lathe.v1.ModelService.DeleteModel", {kClient, true}},
      {"lathe.v1.WorkerService.RegisterWorker", {kWorker, true}},
      {"lathe.v1.WorkerService.Heartbeat", {kWorker, true}},
      {"lathe.v1.WorkerService.HeartbeatStream", {kWorker, true}},
      {"lathe.v1.WorkerService.AcquireJob", {kWorker, true}},
      {"lathe.v1.WorkerService.ReportEvents", {kWorker, true}},
      {"lathe.v1.WorkerService.UploadCheckpointFile", {kWorker, true}},
      {"lathe.v1.WorkerService.FinishAttempt", {kWorker, true}},
      {"lathe.v1.WorkerService.FetchDataset", {kWorker, false}},
      {"lathe.v1.WorkerService.FetchModelFile", {kWorker, false}},
  };
  return *rules;
}

}  // namespace

const AccessRule* AccessPolicy::RuleFor(std::string_view method) {
  auto it = Rules().find(method);
  return it == Rules().end() ? nullptr : &it->second;
}

absl::Status AccessPolicy::Check(std::string_view method,
                                 const Caller& caller) const {
  if (RuleFor(method) == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("no access rule for ", std::string(method)));
  }
  return absl::OkStatus();
}

}  // namespace lathe::server
