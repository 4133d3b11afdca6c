#include "server/core/job_manager.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/status.h"

namespace lathe::server {

using lathe::v1::Job;

JobManager::JobManager(JobManagerOptions options, AllowedRoots roots,
                       Store* store, ArtifactStore* artifacts, Metrics* metrics,
                       Clock clock)
    : options_(std::move(options)),
      roots_(std::move(roots)),
      store_(store),
      clock_(clock ? std::move(clock) : Clock(NowMs)),
      models_(std::make_unique<ModelStore>(options_.models, store, artifacts,
                                           metrics, clock_)),
      datasets_(&roots_, store, artifacts, metrics, options_.max_upload_bytes,
                options_.remote_data),
      checkpoints_(store, artifacts, metrics, clock_,
                   options_.keep_checkpoints),
      workers_(metrics, clock_),
      scheduler_(SchedulerOptions{options_.max_running_per_owner}),
      lifecycle_(LifecycleOptions{options_.retry_backoff_base,
                                  options_.retry_backoff_max,
                                  options_.heartbeat_timeout,
                                  options_.gang_reservation,
                                  options_.event_tail, options_.on_commit},
                 LifecycleParts{store, metrics, &scheduler_, &workers_,
                                &checkpoints_, models_.get()},
                 clock_),
      uri_policy_(options_.allowed_uri_hosts),
      submission_(
          SubmissionParts{&roots_, store, &datasets_, &checkpoints_,
                          &lifecycle_, &uri_policy_, options_.remote_data,
                          artifacts, options_.models},
          clock_) {}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(
    JobManagerOptions options, Store* store, ArtifactStore* artifacts,
    Metrics* metrics, Clock clock) {
  ASSIGN_OR_RETURN(AllowedRoots roots,
                   AllowedRoots::Create(options.allowed_roots));
  options.allowed_roots = roots.roots();
  if (options.heartbeat_timeout <= options.heartbeat_interval) {
    return absl::InvalidArgumentError(
        "heartbeat timeout must be longer than the heartbeat interval");
  }
  RETURN_IF_ERROR(EventHub::CheckOptions(options.event_tail));
  auto manager = std::unique_ptr<JobManager>(
      new JobManager(std::move(options), std::move(roots), store, artifacts,
                     metrics, std::move(clock)));
  RETURN_IF_ERROR(manager->lifecycle_.Init());
  return manager;
}

JobManager::~JobManager() = default;

absl::StatusOr<Job> JobManager::Submit(lathe::v1::JobSpec spec,
                                       const std::string& request_id,
                                       const Principal& who) {
  return submission_.Submit(std::move(spec), request_id, who);
}

absl::StatusOr<Job> JobManager::Get(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
  std::vector<Job> one = {std::move(job)};
  Annotate(&one);
  return std::move(one[0]);
}

void JobManager::Annotate(std::vector<Job>* jobs) {
  bool any_queued = false;
  for (const Job& j : *jobs) any_queued |= j.state() == lathe::v1::QUEUED;
  if (!any_queued) return;
  // Estimate: queue slots ahead, divided among live workers, each taking as
  // long as recent successful attempts took on average.
  int64_t avg_ms = 0;
  auto recent = store_->RecentRunTimesMs(20);
  if (recent.ok() && !recent->empty()) {
    for (int64_t t : *recent) avg_ms += t;
    avg_ms /= static_cast<int64_t>(recent->size());
  }
  const int64_t workers = static_cast<int64_t>(workers_.size());
  const int64_t now = clock_();
  std::vector<std::string> ids;
  for (const Job& j : *jobs) {
    if (j.state() == lathe::v1::QUEUED) ids.push_back(j.id());
  }
  const std::vector<int64_t> positions = scheduler_.Positions(ids);
  size_t next = 0;
  for (Job& j : *jobs) {
    if (j.state() != lathe::v1::QUEUED) continue;
    const int64_t position = positions[next++];
    if (position == 0) continue;
    j.set_queue_position(position);
    if (avg_ms > 0 && workers > 0) {
      const int64_t rounds = (position - 1) / workers;
      j.set_estimated_start_time_ms(
          std::max(now + rounds * avg_ms, j.not_before_ms()));
    }
  }
}

absl::StatusOr<std::pair<std::vector<Job>, std::string>> JobManager::List(
    const std::vector<int>& states, const std::string& owner, int page_size,
    const std::string& page_token, const std::optional<std::string>& team) {
  if (page_size < 0 || page_size > 1000) {
    return Invalid("page_size", "must be in [0, 1000]");
  }
  if (page_size == 0) page_size = 100;
  int64_t before = 0;
  if (!page_token.empty() &&
      (!absl::SimpleAtoi(page_token, &before) || before <= 0)) {
    return Invalid("page_token", "is not a token from a previous response");
  }
  for (int s : states) {
    if (!lathe::v1::JobState_IsValid(s) ||
        s == lathe::v1::JOB_STATE_UNSPECIFIED) {
      return Invalid("states", absl::StrCat(s, " is not a job state"));
    }
  }
  ASSIGN_OR_RETURN(JobPage page,
                   store_->ListJobs(states, owner, team, page_size, before));
  Annotate(&page.jobs);
  std::string next =
      page.next_before_seq > 0 ? absl::StrCat(page.next_before_seq) : "";
  return std::make_pair(std::move(page.jobs), next);
}

absl::StatusOr<Job> JobManager::Cancel(const std::string& id) {
  return lifecycle_.Cancel(id);
}

absl::StatusOr<Job> JobManager::Pause(const std::string& id) {
  return lifecycle_.Pause(id);
}

absl::StatusOr<Job> JobManager::Resume(const std::string& id) {
  return lifecycle_.Resume(id);
}

absl::StatusOr<Job> JobManager::RequestCheckpoint(const std::string& id) {
  return lifecycle_.RequestCheckpoint(id);
}

absl::StatusOr<JobAndEvents> JobManager::WaitForEvents(
    const std::string& id, int64_t after_seq, int limit,
    absl::Duration max_wait) {
  return lifecycle_.events()->Wait(id, after_seq, limit, max_wait);
}

absl::StatusOr<JobAndEvents> JobManager::PollEvents(
    const std::string& id, int64_t after_seq, int limit,
    std::weak_ptr<EventListener> listener) {
  return lifecycle_.events()->Poll(id, after_seq, limit, std::move(listener));
}

absl::StatusOr<std::pair<std::vector<lathe::v1::Checkpoint>, int64_t>>
JobManager::ListCheckpoints(const std::string& job_id) {
  ASSIGN_OR_RETURN(CheckpointListing listing, checkpoints_.List(job_id));
  return std::make_pair(std::move(listing.checkpoints), listing.best_step);
}

absl::StatusOr<ResolvedFile> JobManager::ResolveCheckpointFile(
    const std::string& job_id, const std::string& selector,
    const std::string& file) {
  return checkpoints_.ResolveFile(job_id, selector, file);
}

absl::StatusOr<lathe::v1::Dataset> JobManager::AddDataset(
    const std::string& name, const std::string& sha256, int64_t size,
    const std::string& team) {
  ASSIGN_OR_RETURN(auto dataset, datasets_.Add(name, sha256, size));
  if (team.empty()) return dataset;
  RETURN_IF_ERROR(store_->AddDatasetTeam(sha256, team, name,
                                         absl::ToUnixMillis(absl::Now())));
  // The team's own name and time (its first upload of these bytes).
  ASSIGN_OR_RETURN(auto mine, store_->GetTeamDataset(sha256, team));
  return mine.has_value() ? *mine : dataset;
}

absl::StatusOr<std::string> JobManager::DatasetPath(const std::string& ref) {
  return datasets_.Path(ref);
}

absl::StatusOr<std::vector<lathe::v1::Dataset>> JobManager::ListDatasets(
    const std::optional<std::string>& team) {
  return store_->ListDatasets(team);
}

absl::StatusOr<lathe::v1::Dataset> JobManager::GetDataset(
    const std::string& ref, const std::optional<std::string>& team) {
  const std::string prefix = "dataset:";
  const std::string sha =
      ref.rfind(prefix, 0) == 0 ? ref.substr(prefix.size()) : "";
  if (!IsSha256Hex(sha)) {
    return Invalid("ref", "is not a dataset reference (dataset:<sha256>)");
  }
  // A dataset no team has on its list any more is gone, for admins too.
  ASSIGN_OR_RETURN(auto ds, store_->GetTeamDataset(sha, team));
  if (!ds.has_value()) {
    return absl::NotFoundError(absl::StrCat("dataset ", ref, " not found"));
  }
  return *ds;
}

absl::StatusOr<lathe::v1::Dataset> JobManager::DeleteDataset(
    const std::string& ref, const std::optional<std::string>& team) {
  ASSIGN_OR_RETURN(auto ds, GetDataset(ref, team));
  RETURN_IF_ERROR(store_->RemoveDatasetTeam(ds.sha256(), team));
  return ds;
}

absl::StatusOr<std::string> JobManager::PageTokenAfter(
    const std::string& id, const std::optional<std::string>& team) {
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
  if (team.has_value() && job.team() != *team) {
    return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  }
  ASSIGN_OR_RETURN(int64_t seq, store_->JobSeq(id));
  return absl::StrCat(seq);
}

std::vector<lathe::v1::WorkerStatus> JobManager::ListWorkers() const {
  std::vector<lathe::v1::WorkerStatus> out;
  for (const auto& [info, seen_ms] : workers_.Snapshot()) {
    lathe::v1::WorkerStatus w;
    w.set_id(info.id);
    w.set_name(info.name);
    for (const auto& d : info.devices) *w.add_devices() = d;
    for (const auto& j : info.jobs) w.add_job_ids(j);
    w.set_running_jobs(static_cast<int32_t>(info.jobs.size()));
    w.set_last_heartbeat_time_ms(seen_ms);
    w.set_owner(info.owner);
    out.push_back(std::move(w));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.name() != b.name() ? a.name() < b.name() : a.id() < b.id();
  });
  return out;
}

absl::StatusOr<WorkerRegistration> JobManager::RegisterWorker(
    const std::string& name, const std::vector<lathe::v1::Device>& devices,
    const std::string& hostname, const std::string& owner) {
  RETURN_IF_ERROR(WorkerRegistry::Validate(name, devices));
  std::vector<std::string> names;
  for (const auto& d : devices) names.push_back(d.name());
  const std::string id = RandomId("worker-");
  RETURN_IF_ERROR(store_->PutWorker(id, name, hostname.substr(0, 256),
                                    absl::StrJoin(names, ","), clock_()));
  workers_.Add(id, name, devices, owner);
  lifecycle_.Wake();
  return WorkerRegistration{id, options_.heartbeat_interval,
                            options_.heartbeat_timeout};
}

absl::Status JobManager::CheckWorkerOwner(const std::string& worker_id,
                                          const std::string& user) {
  return workers_.CheckOwner(worker_id, user);
}

absl::Status JobManager::CheckJobHolder(const std::string& job_id,
                                        const std::string& user) {
  if (job_id.empty()) return Invalid("job_id", "is required");
  ASSIGN_OR_RETURN(Job job, store_->GetJob(job_id));
  if (job.worker_id().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is not held by a worker"));
  }
  if (job.gang_size() == 0) return workers_.CheckOwner(job.worker_id(), user);
  // A gang: any member's credential, without claiming a stand-in after a
  // restart for whoever asks first (each member's heartbeats claim its own).
  for (const auto& member : job.gang()) {
    if (workers_.OwnedBy(member.worker_id(), user)) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "job ", job_id, " is held by workers of another credential"));
}

absl::Status JobManager::CheckFetch(const std::string& user,
                                    const std::string& ref,
                                    const std::string& sha256) {
  for (const std::string& id : workers_.JobsOf(user)) {
    auto job = store_->GetJob(id);
    if (!job.ok()) continue;
    if (!ref.empty() && (job->train_dataset().ref() == ref ||
                         job->validation_dataset().ref() == ref)) {
      return absl::OkStatus();
    }
    if (!sha256.empty()) {
      for (const auto& f : job->model_source().files()) {
        if (f.sha256() == sha256) return absl::OkStatus();
      }
    }
  }
  return absl::NotFoundError(
      ref.empty() ? absl::StrCat("no job of this worker uses model file ",
                                 sha256.substr(0, 80))
                  : absl::StrCat("no job of this worker uses dataset ",
                                 ref.substr(0, 80)));
}

absl::StatusOr<WorkerCommands> JobManager::Heartbeat(
    const std::string& worker_id) {
  return lifecycle_.Heartbeat(worker_id);
}

absl::StatusOr<std::optional<lathe::v1::Assignment>> JobManager::AcquireJob(
    const std::string& worker_id, absl::Duration max_wait) {
  return lifecycle_.StartNext(worker_id, max_wait);
}

absl::StatusOr<JobCommands> JobManager::ReportEvents(
    const std::string& job_id, int attempt,
    std::vector<lathe::v1::Event> events) {
  return lifecycle_.Report(job_id, attempt, std::move(events));
}

absl::Status JobManager::CheckAttempt(const std::string& job_id, int attempt) {
  return lifecycle_.CheckAttempt(job_id, attempt);
}

absl::Status JobManager::FinishAttempt(const std::string& job_id, int attempt,
                                       lathe::v1::JobState outcome,
                                       const std::string& error,
                                       lathe::v1::FailureKind failure,
                                       const std::string& member) {
  return lifecycle_.FinishAttempt(job_id, attempt, outcome, error, failure,
                                  member);
}

absl::StatusOr<std::string> JobManager::JoinGang(
    const std::string& worker_id, const std::string& job_id, int attempt,
    const std::string& store_address, absl::Duration max_wait) {
  return lifecycle_.JoinGang(worker_id, job_id, attempt, store_address,
                             max_wait);
}

void JobManager::ExpireWorkers() { lifecycle_.ExpireWorkers(); }

void JobManager::Shutdown() { lifecycle_.Shutdown(); }

}  // namespace lathe::server
