#include "server/core/scheduler.h"

#include <iterator>

#include "server/core/job_states.h"
#include "server/core/worker_registry.h"

namespace lathe::server {

using lathe::v1::Job;

Scheduler::Placement Scheduler::PlacementOf(const lathe::v1::JobSpec& spec) {
  const auto& res = spec.resources();
  Placement p;
  p.kind = res.device_kind().empty() ? "cpu" : res.device_kind();
  p.count = std::max(1, res.device_count());
  p.min_memory_mb = res.min_device_memory_mb();
  return p;
}

void Scheduler::Rebuild(const std::vector<Job>& queued,
                        const std::vector<int64_t>& seqs,
                        const std::vector<Job>& holding) {
  absl::MutexLock lock(&mu_);
  queued_.clear();
  order_.clear();
  ready_.clear();
  waiting_.clear();
  holding_.clear();
  running_.clear();
  for (size_t i = 0; i < queued.size() && i < seqs.size(); ++i) {
    AddQueuedLocked(queued[i], seqs[i]);
  }
  for (const Job& j : holding) SetHoldingLocked(j.id(), j.spec().owner(), true);
}

void Scheduler::Update(const Job& job, int64_t seq) {
  absl::MutexLock lock(&mu_);
  // A queued job may have changed (priority, backoff): index it afresh.
  RemoveQueuedLocked(job.id());
  if (job.state() == lathe::v1::QUEUED) AddQueuedLocked(job, seq);
  SetHoldingLocked(job.id(), job.spec().owner(), HoldsWorker(job.state()));
}

void Scheduler::SetHoldingLocked(const std::string& id,
                                 const std::string& owner, bool holding) {
  auto it = holding_.find(id);
  if (holding && it == holding_.end()) {
    holding_.emplace(id, owner);
    running_[owner]++;
  } else if (!holding && it != holding_.end()) {
    auto r = running_.find(it->second);
    if (r != running_.end() && --r->second <= 0) running_.erase(r);
    holding_.erase(it);
  }
}

void Scheduler::AddQueuedLocked(const Job& job, int64_t seq) {
  Queued q;
  q.owner = job.spec().owner();
  q.priority = job.spec().priority();
  q.seq = seq;
  q.not_before_ms = job.not_before_ms();
  q.placement = PlacementOf(job.spec());
  auto [it, added] = queued_.emplace(job.id(), std::move(q));
  if (!added) return;
  order_.emplace(std::make_pair(-int64_t{it->second.priority}, seq), job.id());
  if (it->second.not_before_ms > 0) {
    waiting_.emplace(it->second.not_before_ms, job.id());
  } else {
    MakeReadyLocked(job.id(), &it->second);
  }
}

void Scheduler::MakeReadyLocked(const std::string& id, Queued* q) {
  ready_[q->priority][q->placement][q->owner].emplace(q->seq, id);
  q->ready = true;
}

void Scheduler::RemoveQueuedLocked(const std::string& id) {
  auto it = queued_.find(id);
  if (it == queued_.end()) return;
  const Queued& q = it->second;
  order_.erase(std::make_pair(-int64_t{q.priority}, q.seq));
  if (q.ready) {
    // Erase, then prune the buckets it leaves empty so that Pick never
    // walks them.
    auto level = ready_.find(q.priority);
    auto place = level->second.find(q.placement);
    auto owner = place->second.find(q.owner);
    owner->second.erase(q.seq);
    if (owner->second.empty()) place->second.erase(owner);
    if (place->second.empty()) level->second.erase(place);
    if (level->second.empty()) ready_.erase(level);
  } else {
    waiting_.erase(std::make_pair(q.not_before_ms, id));
  }
  queued_.erase(it);
}

std::optional<std::string> Scheduler::Pick(
    const std::vector<lathe::v1::Device>& devices, int64_t now_ms,
    int64_t* next_ready_ms, const GangFits& gang_fits,
    const std::set<std::string>& skip) {
  absl::MutexLock lock(&mu_);
  while (!waiting_.empty() && waiting_.begin()->first <= now_ms) {
    const std::string id = waiting_.begin()->second;
    waiting_.erase(waiting_.begin());
    MakeReadyLocked(id, &queued_.at(id));
  }
  *next_ready_ms = waiting_.empty() ? 0 : waiting_.begin()->first;
  std::map<Placement, bool> fits;
  for (const auto& [priority, places] : ready_) {
    const std::string* best = nullptr;
    int best_running = 0;
    int64_t best_seq = 0;
    for (const auto& [placement, owners] : places) {
      auto fit = fits.find(placement);
      if (fit == fits.end()) {
        lathe::v1::Resources res;
        res.set_device_kind(placement.kind);
        res.set_device_count(placement.count);
        res.set_min_device_memory_mb(placement.min_memory_mb);
        const bool fits_here = WorkerRegistry::Fits(devices, res) ||
                               (gang_fits != nullptr && gang_fits(res));
        fit = fits.emplace(placement, fits_here).first;
      }
      if (!fit->second) continue;
      for (const auto& [owner, jobs] : owners) {
        auto r = running_.find(owner);
        const int owner_running = r == running_.end() ? 0 : r->second;
        if (options_.max_running_per_owner > 0 &&
            owner_running >= options_.max_running_per_owner) {
          continue;
        }
        auto job = jobs.begin();
        while (job != jobs.end() && skip.count(job->second) > 0) ++job;
        if (job == jobs.end()) continue;
        const auto& [seq, id] = *job;
        if (best == nullptr || owner_running < best_running ||
            (owner_running == best_running && seq < best_seq)) {
          best = &id;
          best_running = owner_running;
          best_seq = seq;
        }
      }
    }
    if (best != nullptr) return *best;
  }
  return std::nullopt;
}

int64_t Scheduler::Position(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = queued_.find(job_id);
  if (it == queued_.end()) return 0;
  auto at = order_.find(
      std::make_pair(-int64_t{it->second.priority}, it->second.seq));
  return static_cast<int64_t>(std::distance(order_.begin(), at)) + 1;
}

std::vector<int64_t> Scheduler::Positions(
    const std::vector<std::string>& job_ids) const {
  std::vector<int64_t> out(job_ids.size(), 0);
  absl::MutexLock lock(&mu_);
  // Queue keys of the wanted jobs, and where each answer goes.
  std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> wanted;
  for (size_t i = 0; i < job_ids.size(); ++i) {
    auto it = queued_.find(job_ids[i]);
    if (it == queued_.end()) continue;
    wanted[{-int64_t{it->second.priority}, it->second.seq}].push_back(i);
  }
  int64_t position = 0;
  auto next = wanted.begin();
  for (auto it = order_.begin(); it != order_.end() && next != wanted.end();
       ++it) {
    ++position;
    if (it->first != next->first) continue;
    for (size_t i : next->second) out[i] = position;
    ++next;
  }
  return out;
}

size_t Scheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return queued_.size();
}

std::map<std::string, int> Scheduler::RunningByOwner() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, int> out;
  for (const auto& [owner, n] : running_) {
    if (n > 0) out[owner] = n;
  }
  return out;
}

int Scheduler::running(const std::string& owner) const {
  absl::MutexLock lock(&mu_);
  auto r = running_.find(owner);
  return r == running_.end() ? 0 : r->second;
}

}  // namespace lathe::server
