// The worker registry: which workers are connected, their devices, when each
// was last heard from, and which jobs each holds. Registration, heartbeats
// and expiry live here; what happens to an expired worker's jobs is the
// lifecycle's business (it asks the registry which jobs they were).
//
// Thread safety: every method may be called concurrently; `mu_` guards the
// table and is taken after the lifecycle's commit lock, never before it.
#ifndef LATHE_SERVER_CORE_WORKER_REGISTRY_H_
#define LATHE_SERVER_CORE_WORKER_REGISTRY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/job_states.h"
#include "server/core/metrics.h"

namespace lathe::server {

// One worker as the registry knows it.
struct WorkerInfo {
  std::string id;
  std::string name;
  std::vector<lathe::v1::Device> devices;
  std::set<std::string> jobs;
  // The user whose worker credential registered it; empty for a stand-in
  // after a restart until its worker is heard from.
  std::string owner;
};

class WorkerRegistry {
 public:
  // `metrics` must outlive the registry (it keeps the workers gauge).
  WorkerRegistry(Metrics* metrics, Clock clock)
      : metrics_(metrics), clock_(std::move(clock)) {}

  // Checks a registration (INVALID_ARGUMENT naming the field).
  static absl::Status Validate(const std::string& name,
                               const std::vector<lathe::v1::Device>& devices);
  // Adds a worker under `id`, seen now.
  void Add(const std::string& id, const std::string& name,
           const std::vector<lathe::v1::Device>& devices,
           const std::string& owner = "") ABSL_LOCKS_EXCLUDED(mu_);
  // OK when worker `id` is `user`'s (a stand-in is claimed by the first
  // user heard from for it); NOT_FOUND when unknown; PERMISSION_DENIED when
  // another credential registered it.
  absl::Status CheckOwner(const std::string& id, const std::string& user)
      ABSL_LOCKS_EXCLUDED(mu_);
  // True when worker `id` is registered to `user`; unlike CheckOwner it
  // never claims a stand-in.
  bool OwnedBy(const std::string& id, const std::string& user) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The jobs held by the workers `user` registered.
  std::set<std::string> JobsOf(const std::string& user) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // After a server restart: a stand-in for the worker that held `job_id`,
  // which that worker's heartbeats keep alive. It has no devices, so it is
  // given no new work.
  void AddPlaceholder(const std::string& id, const std::string& job_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Marks the worker seen now and returns it; NOT_FOUND when unknown (it
  // must register again).
  absl::StatusOr<WorkerInfo> Touch(const std::string& id)
      ABSL_LOCKS_EXCLUDED(mu_);
  void AddJob(const std::string& id, const std::string& job_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  void RemoveJob(const std::string& id, const std::string& job_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Removes the workers not heard from for longer than `timeout_ms` and
  // returns them with the jobs they held.
  std::vector<WorkerInfo> Expire(int64_t timeout_ms) ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  // Every worker with when it was last heard from (ms since the epoch).
  std::vector<std::pair<WorkerInfo, int64_t>> Snapshot() const
      ABSL_LOCKS_EXCLUDED(mu_);

  // True when `devices` can hold a job asking for `resources`: enough
  // devices of its kind, each with the memory it asks for.
  static bool Fits(const std::vector<lathe::v1::Device>& devices,
                   const lathe::v1::Resources& resources);
  // How many of `devices` suit a job asking for `resources` (kind and
  // memory; the count asked for aside).
  static int Matching(const std::vector<lathe::v1::Device>& devices,
                      const lathe::v1::Resources& resources);
  // Over every registered worker: the most suitable devices one worker
  // has, and the suitable devices of all workers together.
  struct Capacity {
    int most_on_one = 0;
    int total = 0;
  };
  Capacity CapacityFor(const lathe::v1::Resources& resources) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    WorkerInfo info;
    int64_t last_seen_ms = 0;
  };
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Metrics* const metrics_;
  const Clock clock_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_WORKER_REGISTRY_H_
