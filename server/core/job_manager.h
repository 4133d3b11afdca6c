// The heart of lathe-server: validates and stores jobs, runs the FIFO queue,
// tracks workers and their heartbeats, applies worker reports under the
// attempt's fencing number, and records checkpoints. It knows nothing of gRPC;
// the api/ adapters translate requests into these calls.
//
// Thread safety: all methods may be called concurrently. Long waits
// (AcquireJob, WaitForEvents) release the lock while they wait.
#ifndef LATHE_SERVER_CORE_JOB_MANAGER_H_
#define LATHE_SERVER_CORE_JOB_MANAGER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/artifacts.h"
#include "server/core/metrics.h"
#include "server/core/models.h"
#include "server/core/store.h"

namespace lathe::server {

// The in-memory tail of job events that answers watchers (WaitForEvents)
// without reading the database. Watchers that ask for older events, or for a
// job that is not held, read the store instead.
struct EventTailOptions {
  // Newest events held per unfinished job.
  int events = 1024;
  // Newest events held per finished job, for watchers still reading its end.
  int final_events = 32;
  // Jobs held at most; past it, the least recently changed finished jobs
  // are dropped first, then the least recently changed others.
  int jobs = 1024;
  // Finished jobs held at most.
  int final_jobs = 256;
};

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
  // Limits of the model store (pushed models).
  ModelStoreOptions models;
  EventTailOptions event_tail;
};

// What a worker should do with the jobs it runs.
struct WorkerCommands {
  std::vector<std::string> cancel;
  std::vector<std::string> checkpoint;
  std::vector<std::string> pause;
};

// What a worker should do with one job, answered to its reports.
struct JobCommands {
  bool cancel = false;
  bool checkpoint = false;
  bool pause = false;
};

// Milliseconds since the epoch; tests hand in a fake.
using Clock = std::function<int64_t()>;

// Someone who waits for a job's events without a thread of its own (see
// JobManager::PollEvents).
class EventListener {
 public:
  virtual ~EventListener() = default;
  // The job may have changed: poll again. Called once per registration, from
  // the manager's notifier thread with none of the manager's locks held;
  // it must not block for long.
  virtual void OnJobChanged() = 0;
};

struct WorkerRegistration {
  std::string worker_id;
  absl::Duration heartbeat_interval;
  absl::Duration heartbeat_timeout;
};

struct ResolvedFile {
  std::string path;  // the blob on disk
  lathe::v1::FileInfo info;
};

class JobManager {
 public:
  // `store`, `artifacts` and `metrics` must outlive the manager.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(
      JobManagerOptions options, Store* store, ArtifactStore* artifacts,
      Metrics* metrics, Clock clock = nullptr);
  // Stops the notifier thread; no call may be in progress.
  ~JobManager();

  // ---- Clients ----
  // Validates `spec` (INVALID_ARGUMENT names the field as spec.FIELD), stores
  // the job as QUEUED and returns it. A repeated non-empty `request_id`
  // returns the job of the first submit. spec.model is resolved and pinned
  // in Job.model_source: a store name to its manifest, "job:ID" to that
  // job's best checkpoint, "job:ID@STEP" to that step's; NOT_FOUND for an
  // unknown name, job or step, FAILED_PRECONDITION for a job without
  // checkpoints, INVALID_ARGUMENT ("spec.model: ...") for a malformed one.
  absl::StatusOr<lathe::v1::Job> Submit(lathe::v1::JobSpec spec,
                                        const std::string& request_id);
  absl::StatusOr<lathe::v1::Job> Get(const std::string& id);
  // `page_token` is opaque (from a previous call); `page_size` 0 means 100.
  absl::StatusOr<std::pair<std::vector<lathe::v1::Job>, std::string>> List(
      const std::vector<int>& states, const std::string& owner, int page_size,
      const std::string& page_token);
  // Cancel is honoured in every state (a finished job is returned as is).
  absl::StatusOr<lathe::v1::Job> Cancel(const std::string& id);
  absl::StatusOr<lathe::v1::Job> Pause(const std::string& id);
  absl::StatusOr<lathe::v1::Job> Resume(const std::string& id);
  absl::StatusOr<lathe::v1::Job> RequestCheckpoint(const std::string& id);
  // Returns the job and its events after `after_seq` (at most `limit`), in
  // seq order with no gaps. Waits up to `max_wait` when there are none yet
  // and the job is not final. Recent events come from memory; a waiting
  // call is woken only by changes of its own job.
  absl::StatusOr<std::pair<lathe::v1::Job, std::vector<lathe::v1::Event>>>
  WaitForEvents(const std::string& id, int64_t after_seq, int limit,
                absl::Duration max_wait);
  // WaitForEvents without the wait: when there are no events after
  // `after_seq` yet and the job is not final, returns the job without events
  // and calls `listener` once when that may have changed (if it still
  // exists then). UNAVAILABLE once the manager shuts down.
  absl::StatusOr<std::pair<lathe::v1::Job, std::vector<lathe::v1::Event>>>
  PollEvents(const std::string& id, int64_t after_seq, int limit,
             std::weak_ptr<EventListener> listener);
  // Checkpoints by step, and the step of the best one (0 if none has metrics).
  absl::StatusOr<std::pair<std::vector<lathe::v1::Checkpoint>, int64_t>>
  ListCheckpoints(const std::string& job_id);
  // `selector` is "latest" (or empty), "best" or a step number.
  absl::StatusOr<ResolvedFile> ResolveCheckpointFile(
      const std::string& job_id, const std::string& selector,
      const std::string& file);
  // Records an uploaded dataset blob under a display name.
  absl::StatusOr<lathe::v1::Dataset> AddDataset(const std::string& name,
                                                const std::string& sha256,
                                                int64_t size);
  absl::StatusOr<std::string> DatasetPath(const std::string& ref);

  // ---- Workers ----
  absl::StatusOr<WorkerRegistration> RegisterWorker(
      const std::string& name, const std::vector<lathe::v1::Device>& devices,
      const std::string& hostname);
  // Returns what the worker should do with its jobs. NOT_FOUND when the
  // worker is unknown (it must register again).
  absl::StatusOr<WorkerCommands> Heartbeat(const std::string& worker_id);
  // Takes the next job the worker can hold: highest priority first, then the
  // owner with the fewest running jobs, then the oldest; owners at their
  // running limit and jobs in retry backoff wait. Waits up to `max_wait`.
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
      lathe::v1::FailureKind failure = lathe::v1::FAILURE_KIND_CRASH);

  // Drops workers whose heartbeat is older than the timeout and requeues
  // their jobs. The server calls it periodically.
  void ExpireWorkers();
  // Wakes every waiter; later waits return at once.
  void Shutdown();

  const JobManagerOptions& options() const { return options_; }
  // The model store; owned by the manager.
  ModelStore* models() { return models_.get(); }

 private:
  // The newest events and state of one job, as last committed to the store.
  // Every field is guarded by tail_mu_.
  struct EventTail {
    std::shared_ptr<const lathe::v1::Job> job;
    // `events` holds seqs base_seq + 1 .. job->last_event_seq() in order;
    // older ones are only in the store.
    int64_t base_seq = 0;
    std::deque<lathe::v1::Event> events;
    // Signalled when events arrive, the job ends, the tail is dropped or the
    // manager shuts down.
    absl::CondVar changed;
    // Listeners to call at the next such change.
    std::vector<std::weak_ptr<EventListener>> listeners;
    // listeners.size() at which expired ones are cleared out.
    size_t purge_at = 64;
    // Set once the tail has left tails_; its waiters look again.
    bool dropped = false;
    bool final = false;
    // Position in live_tails_ or final_tails_.
    std::list<std::string>::iterator order;
  };

  // A validated submit waiting for its group commit; owned by the calling
  // Submit, filled by the committing one.
  struct PendingSubmit {
    lathe::v1::Job job;
    std::string request_id;
    std::vector<lathe::v1::Event> events;
    absl::Status status;
    bool done = false;  // guarded by submit_mu_
  };

  struct WorkerState {
    std::string name;
    int64_t last_seen_ms = 0;
    std::set<std::string> jobs;
    std::vector<lathe::v1::Device> devices;
    // Recreated after a server restart for a job that was running; the real
    // worker keeps it alive with its heartbeats.
    bool placeholder = false;
  };

  JobManager(JobManagerOptions options, Store* store, ArtifactStore* artifacts,
             Metrics* metrics, Clock clock);
  absl::Status Init();
  absl::Status ValidateSpec(lathe::v1::JobSpec* spec, lathe::v1::Job* job);
  absl::StatusOr<lathe::v1::Dataset> ResolveData(const std::string& field,
                                                 const std::string& value);
  absl::StatusOr<std::string> ResolveLocalPath(const std::string& field,
                                               const std::string& value);
  // Checks the form of spec.model; presets and local directories are
  // validated (and a path made canonical) here, names and job references
  // later by ResolveModel.
  absl::Status CheckModel(lathe::v1::JobSpec* spec);
  // What a checked spec.model names, now. Call with pin_mutex() held shared
  // until the job is stored, so the files cannot be collected meanwhile.
  absl::StatusOr<lathe::v1::ResolvedModel> ResolveModel(
      const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<lathe::v1::ResolvedModel> ResolveJobModel(
      const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Resolves the model of each submit in `batch`, stores the jobs in one
  // transaction and sets each one's status.
  void CommitSubmits(const std::vector<PendingSubmit*>& batch)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Moves `job` to `state`, appending a state event to `events`, and keeps
  // the per-state counts and metrics current.
  void Transition(lathe::v1::Job* job, lathe::v1::JobState state,
                  const std::string& message,
                  std::vector<lathe::v1::Event>* events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Save(lathe::v1::Job* job, std::vector<lathe::v1::Event>* events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishCounts() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records in the event tail what was just committed for `job`: its state
  // and `events` (seqs assigned). Called with mu_ held, right after the
  // commit, so the tail follows the store's order.
  void PublishTail(const lathe::v1::Job& job,
                   const std::vector<lathe::v1::Event>& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) ABSL_LOCKS_EXCLUDED(tail_mu_);
  // Starts an empty tail at `job` (read from the store under mu_) unless
  // one is already held.
  void InstallTail(const lathe::v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_)
      ABSL_LOCKS_EXCLUDED(tail_mu_);
  // Forgets the job's tail; its watchers read the store.
  void DropTail(const std::string& job_id) ABSL_LOCKS_EXCLUDED(tail_mu_);
  void DropTailLocked(
      std::unordered_map<std::string, std::shared_ptr<EventTail>>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tail_mu_);
  void EvictTailsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tail_mu_);
  // Wakes the tail's waiters and hands its listeners to the notifier.
  void SignalTailLocked(EventTail* tail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(tail_mu_);
  // WaitForEvents (`listener` null: waits until `deadline`) and PollEvents.
  absl::StatusOr<std::pair<lathe::v1::Job, std::vector<lathe::v1::Event>>>
  NextEvents(const std::string& id, int64_t after_seq, int limit,
             absl::Time deadline, const std::weak_ptr<EventListener>* listener)
      ABSL_LOCKS_EXCLUDED(mu_, tail_mu_);
  // Calls the listeners handed over by SignalTailLocked until shutdown.
  void NotifyLoop() ABSL_LOCKS_EXCLUDED(notify_mu_);
  absl::StatusOr<lathe::v1::Job> LoadRunning(const std::string& job_id,
                                             int attempt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ApplyCheckpoint(lathe::v1::Job* job, lathe::v1::Event* event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes checkpoints beyond the retention policy and their unreferenced
  // blobs.
  void ApplyRetention(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishStoredBytes();
  // Checkpoints by step and the best step, straight from the store.
  absl::StatusOr<std::pair<std::vector<lathe::v1::Checkpoint>, int64_t>>
  CheckpointsAndBest(const std::string& job_id);
  static bool Fits(const WorkerState& worker, const lathe::v1::JobSpec& spec);
  // Fills queue_position and estimated_start_time_ms of queued jobs.
  void Annotate(std::vector<lathe::v1::Job>* jobs);
  absl::Duration Backoff(int attempt) const;

  const JobManagerOptions options_;
  Store* const store_;
  ArtifactStore* const artifacts_;
  Metrics* const metrics_;
  const Clock clock_;
  std::unique_ptr<ModelStore> models_;

  // Submits waiting for a group commit, and whether one is under way.
  absl::Mutex submit_mu_;
  absl::CondVar submit_done_;
  std::vector<PendingSubmit*> submit_queue_ ABSL_GUARDED_BY(submit_mu_);
  bool committing_ ABSL_GUARDED_BY(submit_mu_) = false;

  absl::Mutex mu_;
  // Signalled whenever a job changes or is queued.
  absl::CondVar changed_;
  std::map<int, int64_t> counts_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, WorkerState> workers_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;

  // Guards the event tail. Taken after mu_ by writers; watchers take only
  // this one, so they never wait behind a commit.
  absl::Mutex tail_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::unordered_map<std::string, std::shared_ptr<EventTail>> tails_
      ABSL_GUARDED_BY(tail_mu_);
  // Job ids held in tails_, least recently changed first.
  std::list<std::string> live_tails_ ABSL_GUARDED_BY(tail_mu_);
  std::list<std::string> final_tails_ ABSL_GUARDED_BY(tail_mu_);
  bool tail_shutdown_ ABSL_GUARDED_BY(tail_mu_) = false;

  // Listeners to call, and the thread that calls them, so that no listener
  // runs under (or blocks) a commit.
  absl::Mutex notify_mu_ ABSL_ACQUIRED_AFTER(tail_mu_);
  std::vector<std::weak_ptr<EventListener>> to_notify_
      ABSL_GUARDED_BY(notify_mu_);
  bool notify_stop_ ABSL_GUARDED_BY(notify_mu_) = false;
  std::thread notifier_;
};

bool IsFinal(lathe::v1::JobState state);
// RUNNING, CANCELLING or PAUSING: an attempt holds a worker.
bool HoldsWorker(lathe::v1::JobState state);

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_JOB_MANAGER_H_
