// The server core as the API adapters see it: one object that builds the
// core's parts and routes each call to the part that owns it. It holds no
// state and takes no lock of its own. The parts (docs/architecture.md has
// the map):
//   submission.h        validation, model and data resolution, group commit
//   lifecycle.h         the state machine, attempts and fencing, commits
//   scheduler.h         queue order, fair share, placement (in-memory index)
//   worker_registry.h   workers, heartbeats, the jobs each holds
//   event_hub.h         event tails and watchers
//   checkpoints.h       checkpoint listing, best, retention, downloads
//   datasets.h          uploaded and imported datasets
//   models.h            the model store
// It knows nothing of gRPC; the api/ adapters translate requests into these
// calls, after the access check (server/api/access.h).
//
// Thread safety: all methods may be called concurrently. Long waits
// (AcquireJob, WaitForEvents) release every lock while they wait.
#ifndef LATHE_SERVER_CORE_JOB_MANAGER_H_
#define LATHE_SERVER_CORE_JOB_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/uri_policy.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/allowed_roots.h"
#include "server/core/artifacts.h"
#include "server/core/checkpoints.h"
#include "server/core/datasets.h"
#include "server/core/event_hub.h"
#include "server/core/job_states.h"
#include "server/core/lifecycle.h"
#include "server/core/metrics.h"
#include "server/core/models.h"
#include "server/core/principal.h"
#include "server/core/scheduler.h"
#include "server/core/store.h"
#include "server/core/submission.h"
#include "server/core/worker_registry.h"

namespace lathe::server {

struct JobManagerOptions {
  // Directories the server may read models and file:// datasets from. A path
  // outside every root is refused. Empty: no local paths at all.
  std::vector<std::string> allowed_roots;
  // Workers are told to heartbeat this often, and are dropped (their jobs
  // requeued) after `heartbeat_timeout` without one.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration heartbeat_timeout = absl::Seconds(15);
  // Largest dataset or checkpoint file accepted, in bytes.
  int64_t max_upload_bytes = int64_t{4} << 30;
  // Most jobs one owner may have running at once (0: no limit).
  int max_running_per_owner = 0;
  // Checkpoints kept per job: the last K and the best (0: keep all). Files
  // of the others are deleted once nothing else refers to them.
  int keep_checkpoints = 3;
  // A crashed attempt is retried after base * 2^(attempt-1), at most max.
  absl::Duration retry_backoff_base = absl::Seconds(1);
  absl::Duration retry_backoff_max = absl::Seconds(60);
  // How long a gang job may hold the workers it gathers (see
  // lifecycle_gang.cc).
  absl::Duration gang_reservation = absl::Seconds(60);
  // Limits of the model store (pushed models).
  ModelStoreOptions models;
  EventTailOptions event_tail;
  // The hosts a job's webhooks may name (common/uri_policy.h); empty: none.
  std::vector<std::string> allowed_uri_hosts;
  // Fetches https:// and s3:// datasets (remote_data.h); null: refused.
  // Must outlive the manager.
  RemoteData* remote_data = nullptr;
  // Told of every commit (LifecycleOptions::on_commit).
  std::function<void(const lathe::v1::Job&,
                     const std::vector<lathe::v1::Event>&)>
      on_commit;
};

struct WorkerRegistration {
  std::string worker_id;
  absl::Duration heartbeat_interval;
  absl::Duration heartbeat_timeout;
};

class JobManager {
 public:
  // `store`, `artifacts` and `metrics` must outlive the manager.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(
      JobManagerOptions options, Store* store, ArtifactStore* artifacts,
      Metrics* metrics, Clock clock = nullptr);
  // Stops the event hub's notifier thread; no call may be in progress.
  ~JobManager();

  // ---- Clients ----
  // See Submission::Submit.
  absl::StatusOr<lathe::v1::Job> Submit(
      lathe::v1::JobSpec spec, const std::string& request_id,
      const Principal& who = Principal::System());
  // The job, with its queue position and estimated start when queued.
  absl::StatusOr<lathe::v1::Job> Get(const std::string& id);
  // `page_token` is opaque (from a previous call); `page_size` 0 means 100.
  // Only `team`'s jobs when set.
  absl::StatusOr<std::pair<std::vector<lathe::v1::Job>, std::string>> List(
      const std::vector<int>& states, const std::string& owner, int page_size,
      const std::string& page_token,
      const std::optional<std::string>& team = std::nullopt);
  // Cancel is honoured in every state (a finished job is returned as is).
  absl::StatusOr<lathe::v1::Job> Cancel(const std::string& id);
  absl::StatusOr<lathe::v1::Job> Pause(const std::string& id);
  absl::StatusOr<lathe::v1::Job> Resume(const std::string& id);
  absl::StatusOr<lathe::v1::Job> RequestCheckpoint(const std::string& id);
  // See EventHub::Wait and EventHub::Poll.
  absl::StatusOr<JobAndEvents> WaitForEvents(const std::string& id,
                                             int64_t after_seq, int limit,
                                             absl::Duration max_wait);
  absl::StatusOr<JobAndEvents> PollEvents(
      const std::string& id, int64_t after_seq, int limit,
      std::weak_ptr<EventListener> listener);
  // Jobs holding a worker per owner (for the metrics).
  std::map<std::string, int> RunningByOwner() const {
    return scheduler_.RunningByOwner();
  }
  // Appends a log event to the job (JobLifecycle::AddNote).
  absl::Status AddNote(const std::string& id, const std::string& message) {
    return lifecycle_.AddNote(id, message);
  }
  // Checkpoints by step, and the step of the best one (0 if none has metrics).
  absl::StatusOr<std::pair<std::vector<lathe::v1::Checkpoint>, int64_t>>
  ListCheckpoints(const std::string& job_id);
  // `selector` is "latest" (or empty), "best" or a step number.
  absl::StatusOr<ResolvedFile> ResolveCheckpointFile(
      const std::string& job_id, const std::string& selector,
      const std::string& file);
  // Records an uploaded dataset blob under a display name.
  // `team` may use it from now on.
  absl::StatusOr<lathe::v1::Dataset> AddDataset(const std::string& name,
                                                const std::string& sha256,
                                                int64_t size,
                                                const std::string& team = "");
  absl::StatusOr<std::string> DatasetPath(const std::string& ref);
  // The datasets `team` uploaded (all when nullopt), newest first.
  absl::StatusOr<std::vector<lathe::v1::Dataset>> ListDatasets(
      const std::optional<std::string>& team);
  // NOT_FOUND unless `team` (any team when nullopt) uploaded it.
  absl::StatusOr<lathe::v1::Dataset> GetDataset(
      const std::string& ref, const std::optional<std::string>& team);
  // Takes it off `team`'s list (every list when nullopt); the dataset as it
  // was.
  absl::StatusOr<lathe::v1::Dataset> DeleteDataset(
      const std::string& ref, const std::optional<std::string>& team);
  // The page token that lists the jobs after job `id`; NOT_FOUND when
  // `team` (if set) cannot see it.
  absl::StatusOr<std::string> PageTokenAfter(
      const std::string& id, const std::optional<std::string>& team);

  // ---- Workers ----
  // Every registered worker, sorted by name; job_ids lists all its jobs.
  std::vector<lathe::v1::WorkerStatus> ListWorkers() const;
  // The worker belongs to `owner`, the user of the worker credential.
  absl::StatusOr<WorkerRegistration> RegisterWorker(
      const std::string& name, const std::vector<lathe::v1::Device>& devices,
      const std::string& hostname, const std::string& owner = "");
  // OK when `user` registered worker `worker_id` (WorkerRegistry::CheckOwner).
  absl::Status CheckWorkerOwner(const std::string& worker_id,
                                const std::string& user);
  // OK when job `job_id` is held by a worker `user` registered (any member
  // of a gang);
  // PERMISSION_DENIED otherwise (FAILED_PRECONDITION for a job no worker
  // holds, as for a stale attempt).
  absl::Status CheckJobHolder(const std::string& job_id,
                              const std::string& user);
  // OK when a job held by one of `user`'s workers trains on the dataset
  // `ref` or has the model file `sha256` (one of the two is set);
  // NOT_FOUND otherwise: a worker is given only what its jobs need.
  absl::Status CheckFetch(const std::string& user, const std::string& ref,
                          const std::string& sha256);
  // Returns what the worker should do with its jobs. NOT_FOUND when the
  // worker is unknown (it must register again).
  absl::StatusOr<WorkerCommands> Heartbeat(const std::string& worker_id);
  // Takes the next job the worker can hold (see scheduler.h for the order).
  // Waits up to `max_wait`.
  absl::StatusOr<std::optional<lathe::v1::Assignment>> AcquireJob(
      const std::string& worker_id, absl::Duration max_wait);
  // Applies a worker's events and answers what the worker should do.
  absl::StatusOr<JobCommands> ReportEvents(
      const std::string& job_id, int attempt,
      std::vector<lathe::v1::Event> events);
  // Checks that an upload for this attempt may proceed.
  absl::Status CheckAttempt(const std::string& job_id, int attempt);
  // Ends an attempt. A FAILED attempt of kind CRASH (or unspecified) with
  // attempts left goes back to the queue after a backoff.
  absl::Status FinishAttempt(
      const std::string& job_id, int attempt, lathe::v1::JobState outcome,
      const std::string& error,
      lathe::v1::FailureKind failure = lathe::v1::FAILURE_KIND_CRASH,
      const std::string& member = "");
  // A gang member joins its attempt's rendezvous (JobLifecycle::JoinGang).
  absl::StatusOr<std::string> JoinGang(const std::string& worker_id,
                                       const std::string& job_id, int attempt,
                                       const std::string& store_address,
                                       absl::Duration max_wait);

  // Drops workers whose heartbeat is older than the timeout and requeues
  // their jobs. The server calls it periodically.
  void ExpireWorkers();
  // Wakes every waiter; later waits return at once.
  void Shutdown();

  const JobManagerOptions& options() const { return options_; }
  // The model store; owned by the manager.
  ModelStore* models() { return models_.get(); }

 private:
  JobManager(JobManagerOptions options, AllowedRoots roots, Store* store,
             ArtifactStore* artifacts, Metrics* metrics, Clock clock);
  // Fills queue_position and estimated_start_time_ms of queued jobs.
  void Annotate(std::vector<lathe::v1::Job>* jobs);

  const JobManagerOptions options_;
  const AllowedRoots roots_;
  Store* const store_;
  const Clock clock_;
  // The parts, in the order they are built (each may use those above it).
  std::unique_ptr<ModelStore> models_;
  DatasetCatalogue datasets_;
  CheckpointCatalogue checkpoints_;
  WorkerRegistry workers_;
  Scheduler scheduler_;
  JobLifecycle lifecycle_;
  const UriPolicy uri_policy_;
  Submission submission_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_JOB_MANAGER_H_
