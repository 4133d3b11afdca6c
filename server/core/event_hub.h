// The event hub: the in-memory tail of each job's newest events and state,
// which answers watchers (WatchJob) without reading the database, and the
// listeners waiting for a job to change. Watchers that ask for older events,
// or for a job that is not held, read the store.
//
// Locks: the hub owns `tail_mu_` (the tails) and `notify_mu_` (listeners to
// call), taken in that order. Writers publish what they committed while
// holding the lifecycle's commit lock, so the tail follows the store's order;
// the hub takes the commit lock itself only to start a tail in step with the
// store. Watchers take only `tail_mu_` and so never wait behind a commit.
// Listeners are called from the hub's notifier thread with no lock held.
#ifndef LATHE_SERVER_CORE_EVENT_HUB_H_
#define LATHE_SERVER_CORE_EVENT_HUB_H_

#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/store.h"

namespace lathe::server {

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

// Someone who waits for a job's events without a thread of its own (see
// EventHub::Poll).
class EventListener {
 public:
  virtual ~EventListener() = default;
  // The job may have changed: poll again. Called once per registration, from
  // the hub's notifier thread with none of the core's locks held; it must
  // not block for long.
  virtual void OnJobChanged() = 0;
};

using JobAndEvents = std::pair<lathe::v1::Job, std::vector<lathe::v1::Event>>;

class EventHub {
 public:
  // INVALID_ARGUMENT for options that cannot work.
  static absl::Status CheckOptions(const EventTailOptions& options);
  // `store` and `commit_mu` (the lock under which jobs are committed and
  // published) must outlive the hub. Starts the notifier thread.
  EventHub(EventTailOptions options, Store* store, absl::Mutex* commit_mu);
  // Stops the notifier thread; no call may be in progress.
  ~EventHub();

  // Records what was just committed for `job`: its state and `events` (seqs
  // assigned). Call with the commit lock held, right after the commit.
  void Publish(const lathe::v1::Job& job,
               const std::vector<lathe::v1::Event>& events)
      ABSL_LOCKS_EXCLUDED(tail_mu_);
  // Forgets the job's tail (after a failed write); its watchers read the
  // store.
  void Drop(const std::string& job_id) ABSL_LOCKS_EXCLUDED(tail_mu_);

  // The job and its events after `after_seq` (at most `limit`), in seq order
  // with no gaps. Waits up to `max_wait` when there are none yet and the job
  // is not final; a waiting call is woken only by changes of its own job.
  absl::StatusOr<JobAndEvents> Wait(const std::string& id, int64_t after_seq,
                                    int limit, absl::Duration max_wait);
  // Wait without the wait: when there are no events after `after_seq` yet
  // and the job is not final, returns the job without events and calls
  // `listener` once when that may have changed (if it still exists then).
  // UNAVAILABLE once the hub shuts down.
  absl::StatusOr<JobAndEvents> Poll(const std::string& id, int64_t after_seq,
                                    int limit,
                                    std::weak_ptr<EventListener> listener);

  // Wakes every waiter and listener; later waits return at once.
  void Shutdown() ABSL_LOCKS_EXCLUDED(tail_mu_);

 private:
  // The newest events and state of one job, as last committed to the store.
  // Every field is guarded by tail_mu_.
  struct Tail {
    std::shared_ptr<const lathe::v1::Job> job;
    // `events` holds seqs base_seq + 1 .. job->last_event_seq() in order;
    // older ones are only in the store.
    int64_t base_seq = 0;
    std::deque<lathe::v1::Event> events;
    // Signalled when events arrive, the job ends, the tail is dropped or the
    // hub shuts down.
    absl::CondVar changed;
    // Listeners to call at the next such change.
    std::vector<std::weak_ptr<EventListener>> listeners;
    // listeners.size() at which expired ones are cleared out.
    size_t purge_at = 64;
    bool final = false;
    // Position in live_ or final_.
    std::list<std::string>::iterator order;
  };
  using TailMap = std::unordered_map<std::string, std::shared_ptr<Tail>>;

  absl::StatusOr<JobAndEvents> Next(
      const std::string& id, int64_t after_seq, int limit, absl::Time deadline,
      const std::weak_ptr<EventListener>* listener)
      ABSL_LOCKS_EXCLUDED(tail_mu_);
  // Starts an empty tail at `job` (read from the store under the commit
  // lock) unless one is already held.
  void Install(const lathe::v1::Job& job) ABSL_LOCKS_EXCLUDED(tail_mu_);
  void DropLocked(TailMap::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tail_mu_);
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tail_mu_);
  // Wakes the tail's waiters and hands its listeners to the notifier.
  void SignalLocked(Tail* tail) ABSL_EXCLUSIVE_LOCKS_REQUIRED(tail_mu_);
  void NotifyLoop() ABSL_LOCKS_EXCLUDED(notify_mu_);

  const EventTailOptions options_;
  Store* const store_;
  absl::Mutex* const commit_mu_;

  absl::Mutex tail_mu_;
  TailMap tails_ ABSL_GUARDED_BY(tail_mu_);
  // Job ids held in tails_, least recently changed first.
  std::list<std::string> live_ ABSL_GUARDED_BY(tail_mu_);
  std::list<std::string> final_ ABSL_GUARDED_BY(tail_mu_);
  bool shutdown_ ABSL_GUARDED_BY(tail_mu_) = false;

  // Listeners to call, and the thread that calls them, so that no listener
  // runs under (or blocks) a commit.
  absl::Mutex notify_mu_ ABSL_ACQUIRED_AFTER(tail_mu_);
  std::vector<std::weak_ptr<EventListener>> to_notify_
      ABSL_GUARDED_BY(notify_mu_);
  bool notify_stop_ ABSL_GUARDED_BY(notify_mu_) = false;
  std::thread notifier_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_EVENT_HUB_H_
