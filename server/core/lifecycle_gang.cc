// Gangs: a job asking for more devices than any one worker has runs on
// several workers at once, data-parallel, one training process per device.
//
// Placement is all or nothing. A worker that polls for work while such a job
// is the one the queue's order gives it joins the gang gathering for that
// job and waits there (a reservation) instead of taking later jobs. When the
// gathered workers have the devices the job asks for, one attempt starts on
// all of them together: the first worker to come holds rank 0, ranks follow
// in the order the workers came, and every member gets its part of the
// attempt (those between polls at their next poll). A reservation lasts at
// most options_.gang_reservation: if the gang is not complete by then, its
// workers are let go and every worker passes the job over for as long again
// (backfill), after which it gathers anew. No worker is held for ever by a
// gang that cannot form, and the gang job keeps its place in the queue.
// A job is gathered for only while the registered workers together have the
// devices it asks for.
//
// Before training, every member calls JoinGang; rank 0's member gives the
// address of the rendezvous store it serves, and each member learns it once
// all have joined. When any member's rank fails, that member fails the
// attempt; the others' ranks stop when their peers go, and the job is
// retried from its latest checkpoint on whatever gang forms next.
#include <algorithm>
#include <regex>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "server/core/lifecycle.h"

namespace lathe::server {

using lathe::v1::Assignment;
using lathe::v1::Job;

std::vector<std::string> JobLifecycle::Holders(const Job& job) {
  std::vector<std::string> out;
  for (const auto& m : job.gang()) out.push_back(m.worker_id());
  if (out.empty() && !job.worker_id().empty()) out.push_back(job.worker_id());
  return out;
}

bool JobLifecycle::GangFits(const std::vector<lathe::v1::Device>& devices,
                            const lathe::v1::Resources& res) const {
  if (WorkerRegistry::Matching(devices, res) == 0) return false;
  const int want = std::max(1, res.device_count());
  const auto capacity = parts_.workers->CapacityFor(res);
  return capacity.most_on_one < want && capacity.total >= want;
}

absl::StatusOr<std::optional<Assignment>> JobLifecycle::Gather(
    Job* job, int64_t seq, const WorkerInfo& worker, int64_t now) {
  const auto& res = job->spec().resources();
  const int want = std::max(1, res.device_count());
  auto in = waiting_in_.find(worker.id);
  if (in != waiting_in_.end() && in->second != job->id()) {
    LeaveGangLocked(worker.id);
  }
  Gathering& g = gathering_[job->id()];
  if (g.members.empty()) g.since_ms = now;
  const bool known = absl::c_any_of(
      g.members, [&](const Gathered& m) { return m.id == worker.id; });
  if (!known) {
    const int offered = WorkerRegistry::Matching(worker.devices, res);
    if (offered == 0) {
      if (g.members.empty()) gathering_.erase(job->id());
      return std::optional<Assignment>();
    }
    g.members.push_back(Gathered{worker.id, worker.name, offered});
    waiting_in_[worker.id] = job->id();
  }
  int total = 0;
  for (const Gathered& m : g.members) total += m.offered;
  if (total < want) return std::optional<Assignment>();

  // Complete: ranks in the order the workers came.
  const std::vector<Gathered> gathered = std::move(g.members);
  gathering_.erase(job->id());
  backfill_until_.erase(job->id());
  job->clear_gang();
  std::vector<std::string> placed;
  int next_rank = 0;
  for (const Gathered& m : gathered) {
    waiting_in_.erase(m.id);
    if (next_rank >= want) continue;
    auto* member = job->add_gang();
    member->set_worker_id(m.id);
    member->set_worker_name(m.name);
    member->set_first_rank(next_rank);
    member->set_device_count(std::min(m.offered, want - next_rank));
    const int last = next_rank + member->device_count() - 1;
    placed.push_back(absl::StrCat(
        m.name, " (", m.id, ") ",
        last == next_rank ? absl::StrCat("rank ", next_rank)
                          : absl::StrCat("ranks ", next_rank, "-", last)));
    next_rank = last + 1;
  }
  ASSIGN_OR_RETURN(Assignment base,
                   BeginAttempt(job, seq,
                                absl::StrCat("a gang of ", job->gang_size(),
                                             " workers, world size ", want,
                                             ": ", absl::StrJoin(placed, ", ")),
                                job->gang(0).worker_id(), now));
  rendezvous_[job->id()] = Rendezvous{job->attempt(), {}, ""};
  std::optional<Assignment> own;
  for (int i = 0; i < job->gang_size(); ++i) {
    const std::string& id = job->gang(i).worker_id();
    parts_.workers->AddJob(id, job->id());
    Assignment a = base;
    *a.mutable_gang() = job->gang();
    a.set_gang_member(i);
    if (id == worker.id) {
      own = std::move(a);
    } else {
      handed_[id] = std::move(a);
    }
  }
  ++changes_;
  changed_.SignalAll();
  return own;
}

void JobLifecycle::LeaveGangLocked(const std::string& worker_id) {
  auto in = waiting_in_.find(worker_id);
  if (in == waiting_in_.end()) return;
  auto g = gathering_.find(in->second);
  if (g != gathering_.end()) {
    auto& members = g->second.members;
    members.erase(
        std::remove_if(members.begin(), members.end(),
                       [&](const Gathered& m) { return m.id == worker_id; }),
        members.end());
    if (members.empty()) gathering_.erase(g);
  }
  waiting_in_.erase(in);
}

std::set<std::string> JobLifecycle::ExpireReservationsLocked(int64_t now) {
  const int64_t hold = absl::ToInt64Milliseconds(options_.gang_reservation);
  bool released = false;
  for (auto it = gathering_.begin(); it != gathering_.end();) {
    if (now - it->second.since_ms < hold) {
      ++it;
      continue;
    }
    for (const Gathered& m : it->second.members) waiting_in_.erase(m.id);
    backfill_until_[it->first] = now + hold;
    it = gathering_.erase(it);
    released = true;
  }
  std::set<std::string> out;
  for (auto it = backfill_until_.begin(); it != backfill_until_.end();) {
    if (it->second <= now) {
      it = backfill_until_.erase(it);
    } else {
      out.insert(it->first);
      ++it;
    }
  }
  if (released) {
    ++changes_;
    changed_.SignalAll();
  }
  return out;
}

std::optional<Assignment> JobLifecycle::TakeHandedLocked(
    const std::string& worker_id) {
  auto it = handed_.find(worker_id);
  if (it == handed_.end()) return std::nullopt;
  Assignment a = std::move(it->second);
  handed_.erase(it);
  return a;
}

int64_t JobLifecycle::ReservationEndLocked(const std::string& worker_id) const {
  auto in = waiting_in_.find(worker_id);
  if (in == waiting_in_.end()) return 0;
  auto g = gathering_.find(in->second);
  if (g == gathering_.end()) return 0;
  return g->second.since_ms +
         absl::ToInt64Milliseconds(options_.gang_reservation);
}

void JobLifecycle::ReleaseLocked(const Job& job) {
  for (const std::string& w : Holders(job)) {
    parts_.workers->RemoveJob(w, job.id());
  }
  rendezvous_.erase(job.id());
  for (auto it = handed_.begin(); it != handed_.end();) {
    if (it->second.job_id() == job.id()) {
      it = handed_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<std::string> JobLifecycle::JoinGang(
    const std::string& worker_id, const std::string& job_id, int attempt,
    const std::string& store_address, absl::Duration max_wait) {
  static const std::regex kAddress(R"([A-Za-z0-9._\-]{1,253}:[0-9]{1,5})");
  const absl::Time deadline = absl::Now() + max_wait;
  absl::MutexLock lock(&mu_);
  while (true) {
    int64_t seq = 0;
    ASSIGN_OR_RETURN(Job job, LoadRunning(job_id, attempt, &seq));
    int index = -1;
    for (int i = 0; i < job.gang_size(); ++i) {
      if (job.gang(i).worker_id() == worker_id) index = i;
    }
    if (index < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", worker_id, " is not in the gang of job ",
                       job_id, " attempt ", attempt));
    }
    Rendezvous& r = rendezvous_[job_id];
    if (r.attempt != attempt) r = Rendezvous{attempt, {}, ""};
    if (index == 0) {
      if (!std::regex_match(store_address, kAddress)) {
        return Invalid("store_address",
                       "rank 0's member must give HOST:PORT of its store");
      }
      r.address = store_address;
    }
    if (r.joined.insert(worker_id).second) {
      ++changes_;
      changed_.SignalAll();
    }
    if (static_cast<int>(r.joined.size()) == job.gang_size() &&
        !r.address.empty()) {
      return r.address;
    }
    if (shutdown_ || absl::Now() >= deadline) return std::string();
    changed_.WaitWithDeadline(&mu_, deadline);
  }
}

}  // namespace lathe::server
