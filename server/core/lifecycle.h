// The job lifecycle: the state machine (QUEUED -> RUNNING -> SUCCEEDED |
// FAILED | CANCELLED, with CANCELLING, PAUSING and PAUSED), attempts and
// their fencing numbers, and every write of a job to the store. Each change
// is committed with its events in one transaction, then handed to the event
// hub (watchers) and the scheduler (queue index), in that order, under one
// lock. The lifecycle owns the event hub, which must follow its commits.
//
// Locks: the lifecycle owns the commit lock `mu_`; it is the first lock of
// the core. The scheduler's, the registry's and the event hub's locks are
// taken after it, never the other way round. Long waits (StartNext) release
// it while they wait, and a worker's pick takes only the scheduler's lock.
#ifndef LATHE_SERVER_CORE_LIFECYCLE_H_
#define LATHE_SERVER_CORE_LIFECYCLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/checkpoints.h"
#include "server/core/event_hub.h"
#include "server/core/job_states.h"
#include "server/core/metrics.h"
#include "server/core/models.h"
#include "server/core/scheduler.h"
#include "server/core/store.h"
#include "server/core/worker_registry.h"

namespace lathe::server {

struct LifecycleOptions {
  // A crashed attempt is retried after base * 2^(attempt-1), at most max.
  absl::Duration retry_backoff_base = absl::Seconds(1);
  absl::Duration retry_backoff_max = absl::Seconds(60);
  // Workers not heard from for this long are dropped (ExpireWorkers).
  absl::Duration heartbeat_timeout = absl::Seconds(15);
  // A job that needs a gang of workers holds the idle workers it gathers
  // for at most this long; if the gang is not complete by then they go
  // back to other work for as long again (backfill) before it gathers
  // anew. See lifecycle_gang.cc.
  absl::Duration gang_reservation = absl::Seconds(60);
  EventTailOptions event_tail;
  // Called after each commit with the job as committed and its new events
  // (seqs assigned), under the commit lock: it must not block or call back
  // into the lifecycle. Webhooks (server/webhooks) are fed from here.
  std::function<void(const lathe::v1::Job&,
                     const std::vector<lathe::v1::Event>&)>
      on_commit;
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

// The parts the lifecycle drives; each must outlive it.
struct LifecycleParts {
  Store* store = nullptr;
  Metrics* metrics = nullptr;
  Scheduler* scheduler = nullptr;
  WorkerRegistry* workers = nullptr;
  CheckpointCatalogue* checkpoints = nullptr;
  ModelStore* models = nullptr;
};

class JobLifecycle {
 public:
  // Starts the event hub (its options are checked by the caller).
  JobLifecycle(LifecycleOptions options, LifecycleParts parts, Clock clock);

  // Reads the store: per-state counts, the scheduler's index, and a
  // placeholder worker for each job that was running (its worker reconnects
  // and its heartbeats keep the placeholder alive).
  absl::Status Init() ABSL_LOCKS_EXCLUDED(mu_);

  // Watchers read the jobs' events here.
  EventHub* events() { return events_.get(); }

  // One new job of Insert.
  struct NewJob {
    lathe::v1::Job* job = nullptr;
    std::string request_id;
    std::vector<lathe::v1::Event> events;
    absl::Status status;
  };
  // Stores new jobs as QUEUED in one transaction. Under the commit lock,
  // `prepare` is called for each first (it resolves and pins the model and
  // returns the message of the job's first event, or an error that leaves
  // that job out). Sets each job's status.
  void Insert(std::vector<NewJob*>* batch,
              const std::function<absl::StatusOr<std::string>(lathe::v1::Job*)>&
                  prepare) ABSL_LOCKS_EXCLUDED(mu_);

  // Cancel is honoured in every state (a finished job is returned as is).
  absl::StatusOr<lathe::v1::Job> Cancel(const std::string& id)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<lathe::v1::Job> Pause(const std::string& id)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<lathe::v1::Job> Resume(const std::string& id)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<lathe::v1::Job> RequestCheckpoint(const std::string& id)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Appends a log event to the job, in any state (a finished job's
  // webhook deliveries are recorded after its end). NOT_FOUND for an
  // unknown job.
  absl::Status AddNote(const std::string& id, const std::string& message)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Starts the job the scheduler picks for the worker as a new attempt;
  // waits up to `max_wait` for one. NOT_FOUND for an unknown worker.
  absl::StatusOr<std::optional<lathe::v1::Assignment>> StartNext(
      const std::string& worker_id, absl::Duration max_wait)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes StartNext waiters (a worker registered).
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);
  // What the worker should do with its jobs. NOT_FOUND when unknown.
  absl::StatusOr<WorkerCommands> Heartbeat(const std::string& worker_id);
  // Applies a worker's events under the attempt's fencing number.
  absl::StatusOr<JobCommands> Report(const std::string& job_id, int attempt,
                                     std::vector<lathe::v1::Event> events)
      ABSL_LOCKS_EXCLUDED(mu_);
  // FAILED_PRECONDITION unless `attempt` is the job's current, running one.
  absl::Status CheckAttempt(const std::string& job_id, int attempt)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Ends an attempt. A FAILED attempt of kind CRASH (or unspecified) with
  // attempts left goes back to the queue after a backoff. `member` names
  // the gang member that ends it when that is not rank 0's worker: such a
  // member may only fail the attempt or give it back, and only while the
  // job is RUNNING (after a pause or cancel its ranks' end is expected).
  absl::Status FinishAttempt(const std::string& job_id, int attempt,
                             lathe::v1::JobState outcome,
                             const std::string& error,
                             lathe::v1::FailureKind failure,
                             const std::string& member = "")
      ABSL_LOCKS_EXCLUDED(mu_);
  // A gang member joins its attempt's rendezvous; rank 0's member gives the
  // store address. Returns that address once every member has joined, or
  // empty after `max_wait`. FAILED_PRECONDITION for a stale attempt or a
  // worker outside the gang.
  absl::StatusOr<std::string> JoinGang(const std::string& worker_id,
                                       const std::string& job_id, int attempt,
                                       const std::string& store_address,
                                       absl::Duration max_wait)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Drops workers whose heartbeat is older than the timeout; their jobs go
  // back to the queue (or fail with no attempts left).
  void ExpireWorkers() ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes every waiter; later waits return at once.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Duration Backoff(int attempt) const;

 private:
  // Moves `job` to `state`, appending a state event to `events`, and keeps
  // the per-state counts and metrics current.
  void Transition(lathe::v1::Job* job, lathe::v1::JobState state,
                  const std::string& message,
                  std::vector<lathe::v1::Event>* events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Commits `job` and `events`, then publishes them to the event hub and the
  // scheduler. `seq` is the job's creation sequence.
  absl::Status Save(lathe::v1::Job* job, int64_t seq,
                    std::vector<lathe::v1::Event>* events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishCounts() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<lathe::v1::Job> LoadRunning(const std::string& job_id,
                                             int attempt, int64_t* seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<lathe::v1::Assignment>> Start(
      const std::string& job_id, const WorkerInfo& worker, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The assignment every attempt's members get, less the gang fields.
  absl::StatusOr<lathe::v1::Assignment> BeginAttempt(
      lathe::v1::Job* job, int64_t seq, const std::string& placed_on,
      const std::string& primary, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Gangs (lifecycle_gang.cc).
  // Whether `devices` may join a gang for a job asking for `resources`: it
  // has a suitable device, no worker alone has enough and all together do.
  bool GangFits(const std::vector<lathe::v1::Device>& devices,
                const lathe::v1::Resources& resources) const;
  // Adds `worker` to the gang gathering for `job`; starts the attempt when
  // the gang is complete and returns this worker's part of it.
  absl::StatusOr<std::optional<lathe::v1::Assignment>> Gather(
      lathe::v1::Job* job, int64_t seq, const WorkerInfo& worker, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `worker` out of the gang it is gathered for, if any.
  void LeaveGangLocked(const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends reservations older than options_.gang_reservation; returns the
  // jobs in their backfill window (passed over by every worker).
  std::set<std::string> ExpireReservationsLocked(int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The attempt a gang started for `worker_id` while it waited, if any.
  std::optional<lathe::v1::Assignment> TakeHandedLocked(
      const std::string& worker_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When the gang `worker_id` waits in stops holding it (0: none).
  int64_t ReservationEndLocked(const std::string& worker_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every worker the job's attempt holds: rank 0's and the other members.
  static std::vector<std::string> Holders(const lathe::v1::Job& job);
  // Lets go of the job's workers and forgets its rendezvous.
  void ReleaseLocked(const lathe::v1::Job& job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LifecycleOptions options_;
  const LifecycleParts parts_;
  Store* const store_;
  Metrics* const metrics_;
  const Clock clock_;

  absl::Mutex mu_;
  // Created with mu_ as its commit lock.
  std::unique_ptr<EventHub> events_;
  // Signalled whenever a job changes, is queued or a worker registers;
  // `changes_` counts those signals (written under mu_, read without it).
  absl::CondVar changed_;
  std::atomic<uint64_t> changes_{0};
  std::map<int, int64_t> counts_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;

  // A gang being gathered for a queued job: its workers in the order they
  // came (the first gets rank 0) with the devices each offers.
  struct Gathered {
    std::string id;
    std::string name;
    int offered = 0;
  };
  struct Gathering {
    std::vector<Gathered> members;
    int64_t since_ms = 0;
  };
  std::map<std::string, Gathering> gathering_ ABSL_GUARDED_BY(mu_);
  // Worker id -> the job whose gang it waits in.
  std::map<std::string, std::string> waiting_in_ ABSL_GUARDED_BY(mu_);
  // Worker id -> the attempt a gang started for it while it was between
  // polls.
  std::map<std::string, lathe::v1::Assignment> handed_ ABSL_GUARDED_BY(mu_);
  // Job id -> until when its gang lets the workers do other work.
  std::map<std::string, int64_t> backfill_until_ ABSL_GUARDED_BY(mu_);
  // Job id -> its running attempt's rendezvous.
  struct Rendezvous {
    int attempt = 0;
    std::set<std::string> joined;
    std::string address;
  };
  std::map<std::string, Rendezvous> rendezvous_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_LIFECYCLE_H_
