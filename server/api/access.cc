#include "server/api/access.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace lathe::server {

namespace {

const std::map<std::string_view, AccessRule>& Rules() {
  constexpr Audience kClient = Audience::kClient;
  constexpr Audience kWorker = Audience::kWorker;
  constexpr Audience kAdmin = Audience::kAdmin;
  constexpr Audience kAccount = Audience::kAccount;
  constexpr Audience kAnyone = Audience::kAnyone;
  // {audience, mutating, audited}
  static const auto* rules = new std::map<std::string_view, AccessRule>{
      {"lathe.v1.JobService.SubmitJob", {kClient, true, true}},
      {"lathe.v1.JobService.GetJob", {kClient, false, false}},
      {"lathe.v1.JobService.ListJobs", {kClient, false, false}},
      {"lathe.v1.JobService.CancelJob", {kClient, true, true}},
      {"lathe.v1.JobService.PauseJob", {kClient, true, true}},
      {"lathe.v1.JobService.ResumeJob", {kClient, true, true}},
      {"lathe.v1.JobService.RequestCheckpoint", {kClient, true, true}},
      {"lathe.v1.JobService.WatchJob", {kClient, false, false}},
      {"lathe.v1.JobService.ListJobEvents", {kClient, false, false}},
      {"lathe.v1.JobService.ListWorkers", {kClient, false, false}},
      {"lathe.v1.JobService.ListCheckpoints", {kClient, false, false}},
      {"lathe.v1.JobService.DownloadCheckpointFile", {kClient, false, false}},
      {"lathe.v1.DatasetService.UploadDataset", {kClient, true, true}},
      {"lathe.v1.DatasetService.ListDatasets", {kClient, false, false}},
      {"lathe.v1.DatasetService.GetDataset", {kClient, false, false}},
      {"lathe.v1.DatasetService.DeleteDataset", {kClient, true, true}},
      {"lathe.v1.ModelService.PushModel", {kClient, true, true}},
      {"lathe.v1.ModelService.ListModels", {kClient, false, false}},
      {"lathe.v1.ModelService.GetModel", {kClient, false, false}},
      {"lathe.v1.ModelService.DeleteModel", {kClient, true, true}},
      {"lathe.v1.WorkerService.RegisterWorker", {kWorker, true, true}},
      {"lathe.v1.WorkerService.Heartbeat", {kWorker, true, false}},
      {"lathe.v1.WorkerService.HeartbeatStream", {kWorker, true, false}},
      {"lathe.v1.WorkerService.AcquireJob", {kWorker, true, false}},
      {"lathe.v1.WorkerService.ReportEvents", {kWorker, true, false}},
      {"lathe.v1.WorkerService.UploadCheckpointFile", {kWorker, true, false}},
      {"lathe.v1.WorkerService.FinishAttempt", {kWorker, true, true}},
      {"lathe.v1.WorkerService.JoinGang", {kWorker, true, false}},
      {"lathe.v1.WorkerService.FetchDataset", {kWorker, false, false}},
      {"lathe.v1.WorkerService.FetchModelFile", {kWorker, false, false}},
      {"lathe.v1.WorkerService.FetchCheckpointFile", {kWorker, false, false}},
      {"lathe.v1.AdminService.CreateUser", {kAdmin, true, true}},
      {"lathe.v1.AdminService.ListUsers", {kAdmin, false, false}},
      {"lathe.v1.AdminService.DisableUser", {kAdmin, true, true}},
      {"lathe.v1.AdminService.CreateToken", {kAccount, true, true}},
      {"lathe.v1.AdminService.ListTokens", {kAccount, false, false}},
      {"lathe.v1.AdminService.RevokeToken", {kAccount, true, true}},
      {"lathe.v1.AdminService.ListAudit", {kAdmin, false, false}},
      {"lathe.v1.AdminService.WhoAmI", {kAnyone, false, false}},
  };
  return *rules;
}

bool Admits(const AccessRule& rule, lathe::v1::Role role) {
  using lathe::v1::ROLE_ADMIN;
  using lathe::v1::ROLE_MEMBER;
  using lathe::v1::ROLE_VIEWER;
  using lathe::v1::ROLE_WORKER;
  switch (rule.audience) {
    case Audience::kWorker:
      return role == ROLE_WORKER;
    case Audience::kAdmin:
      return role == ROLE_ADMIN;
    case Audience::kAnyone:
      return role == ROLE_ADMIN || role == ROLE_MEMBER || role == ROLE_VIEWER ||
             role == ROLE_WORKER;
    case Audience::kAccount:
      return role == ROLE_ADMIN || role == ROLE_MEMBER || role == ROLE_VIEWER;
    case Audience::kClient:
      return role == ROLE_ADMIN || role == ROLE_MEMBER ||
             (role == ROLE_VIEWER && !rule.mutating);
  }
  return false;
}

}  // namespace

const AccessRule* AccessPolicy::RuleFor(std::string_view method) {
  auto it = Rules().find(method);
  return it == Rules().end() ? nullptr : &it->second;
}

std::vector<std::string> AccessPolicy::Methods() {
  std::vector<std::string> out;
  for (const auto& [name, rule] : Rules()) out.emplace_back(name);
  return out;
}

absl::Status AccessPolicy::Check(std::string_view method,
                                 const Principal& who) const {
  const AccessRule* rule = RuleFor(method);
  if (rule == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("no access rule for ", std::string(method)));
  }
  if (!Admits(*rule, who.role)) {
    std::string role = lathe::v1::Role_Name(who.role);
    return absl::PermissionDeniedError(
        absl::StrCat("the ", role, " role of user ", who.user, " may not call ",
                     std::string(method)));
  }
  return absl::OkStatus();
}

}  // namespace lathe::server
