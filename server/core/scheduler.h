// The scheduler: the queue's order and the placement of queued jobs on
// workers. It holds an in-memory index of every QUEUED job (by priority,
// placement needs, owner and age) and the running jobs per owner, rebuilt
// from the store at start-up and kept in step by the lifecycle after each
// commit, so that choosing a job for a worker costs the number of distinct
// priorities, placements and owners, not the length of the queue.
//
// Policy, in order: the highest priority; then the owner with the fewest
// running jobs (fair share); then the oldest job. Owners at their running
// limit and jobs in retry backoff wait; a job goes only to a worker with
// the devices it asks for, or to a gang of workers that together have them
// when no single worker does (the lifecycle gathers the gang).
//
// Thread safety: every method may be called concurrently; `mu_` guards the
// index and is taken after the lifecycle's commit lock. The index changes
// only through Rebuild and Update, which the lifecycle calls under its
// commit lock, so a job picked under that lock is still queued when it
// starts.
#ifndef LATHE_SERVER_CORE_SCHEDULER_H_
#define LATHE_SERVER_CORE_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lathe/v1/lathe.pb.h"

namespace lathe::server {

struct SchedulerOptions {
  // Most jobs one owner may have running at once (0: no limit).
  int max_running_per_owner = 0;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options) : options_(options) {}

  // Replaces the index: the QUEUED jobs with their creation sequences (the
  // store's, which order the queue by age), and the jobs that hold a worker.
  void Rebuild(const std::vector<lathe::v1::Job>& queued,
               const std::vector<int64_t>& seqs,
               const std::vector<lathe::v1::Job>& holding)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Brings the index in step with `job` as just committed: queued (with its
  // priority, placement and backoff) or not, holding a worker or not. `seq`
  // is the job's creation sequence.
  void Update(const lathe::v1::Job& job, int64_t seq) ABSL_LOCKS_EXCLUDED(mu_);

  // Whether a job with these needs may go to a gang of workers of which
  // the picking worker is one (the lifecycle answers from the registry).
  using GangFits = std::function<bool(const lathe::v1::Resources&)>;

  // The id of the job a worker with `devices` should take at `now_ms`, if
  // any: one its devices can hold, or one that `gang_fits` says a gang
  // including it can. Jobs in `skip` are passed over. Sets `next_ready_ms`
  // to when the first job in backoff becomes ready (0: none is waiting).
  std::optional<std::string> Pick(const std::vector<lathe::v1::Device>& devices,
                                  int64_t now_ms, int64_t* next_ready_ms,
                                  const GangFits& gang_fits = nullptr,
                                  const std::set<std::string>& skip = {})
      ABSL_LOCKS_EXCLUDED(mu_);

  // The job's place in the queue, 1 = next, in the order a free worker
  // would take them fair share aside (priority, then age); 0 when the job
  // is not queued. Costs the number of jobs ahead of it.
  int64_t Position(const std::string& job_id) const ABSL_LOCKS_EXCLUDED(mu_);
  // Position of each of `job_ids` (0 when not queued), in one walk of the
  // queue up to the last of them.
  std::vector<int64_t> Positions(const std::vector<std::string>& job_ids) const
      ABSL_LOCKS_EXCLUDED(mu_);
  size_t queued() const ABSL_LOCKS_EXCLUDED(mu_);
  int running(const std::string& owner) const ABSL_LOCKS_EXCLUDED(mu_);
  // Jobs holding a worker per owner (owners with none left out).
  std::map<std::string, int> RunningByOwner() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // What a job needs of a worker; jobs with equal needs share a bucket.
  struct Placement {
    std::string kind;
    int count = 1;
    int64_t min_memory_mb = 0;
    bool operator<(const Placement& o) const {
      return std::tie(kind, count, min_memory_mb) <
             std::tie(o.kind, o.count, o.min_memory_mb);
    }
  };
  struct Queued {
    std::string owner;
    int priority = 0;
    int64_t seq = 0;
    int64_t not_before_ms = 0;
    Placement placement;
    bool ready = false;
  };
  // Ready jobs of one owner by age, per placement, per priority (highest
  // first).
  using ByAge = std::map<int64_t, std::string>;
  using ByOwner = std::map<std::string, ByAge>;
  using ByPlacement = std::map<Placement, ByOwner>;
  using ByPriority = std::map<int, ByPlacement, std::greater<int>>;

  static Placement PlacementOf(const lathe::v1::JobSpec& spec);
  void RemoveQueuedLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddQueuedLocked(const lathe::v1::Job& job, int64_t seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MakeReadyLocked(const std::string& id, Queued* q)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetHoldingLocked(const std::string& id, const std::string& owner,
                        bool holding) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SchedulerOptions options_;
  mutable absl::Mutex mu_;
  // Every queued job.
  std::unordered_map<std::string, Queued> queued_ ABSL_GUARDED_BY(mu_);
  // Every queued job in queue order: (-priority, seq).
  std::map<std::pair<int64_t, int64_t>, std::string> order_
      ABSL_GUARDED_BY(mu_);
  ByPriority ready_ ABSL_GUARDED_BY(mu_);
  // Jobs in retry backoff, by the time they become ready.
  std::set<std::pair<int64_t, std::string>> waiting_ ABSL_GUARDED_BY(mu_);
  // Jobs that hold a worker, with their owners, and the count per owner.
  std::unordered_map<std::string, std::string> holding_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, int> running_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_SCHEDULER_H_
