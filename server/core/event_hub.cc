#include "server/core/event_hub.h"

#include <algorithm>
#include <iterator>

#include "common/status.h"
#include "server/core/job_states.h"

namespace lathe::server {

using lathe::v1::Event;
using lathe::v1::Job;

absl::Status EventHub::CheckOptions(const EventTailOptions& tail) {
  if (tail.events < 1 || tail.final_events < 0 || tail.jobs < 1 ||
      tail.final_jobs < 0) {
    return absl::InvalidArgumentError(
        "event tail: events and jobs must be positive, final_events and "
        "final_jobs not negative");
  }
  return absl::OkStatus();
}

EventHub::EventHub(EventTailOptions options, Store* store,
                   absl::Mutex* commit_mu)
    : options_(options), store_(store), commit_mu_(commit_mu) {
  notifier_ = std::thread([this] { NotifyLoop(); });
}

EventHub::~EventHub() {
  {
    absl::MutexLock lock(&notify_mu_);
    notify_stop_ = true;
  }
  if (notifier_.joinable()) notifier_.join();
}

void EventHub::NotifyLoop() {
  std::vector<std::weak_ptr<EventListener>> batch;
  while (true) {
    {
      absl::MutexLock lock(&notify_mu_);
      const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(notify_mu_) {
        return notify_stop_ || !to_notify_.empty();
      };
      notify_mu_.Await(absl::Condition(&ready));
      if (notify_stop_) return;
      batch.swap(to_notify_);
    }
    for (const auto& weak : batch) {
      if (auto listener = weak.lock()) listener->OnJobChanged();
    }
    batch.clear();
  }
}

void EventHub::Publish(const Job& job, const std::vector<Event>& events) {
  auto snapshot = std::make_shared<const Job>(job);
  const bool final = IsFinal(job.state());
  const int64_t before =
      job.last_event_seq() - static_cast<int64_t>(events.size());
  absl::MutexLock lock(&tail_mu_);
  auto it = tails_.find(job.id());
  if (it == tails_.end()) {
    auto tail = std::make_shared<Tail>();
    tail->base_seq = before;
    live_.push_back(job.id());
    tail->order = std::prev(live_.end());
    it = tails_.emplace(job.id(), std::move(tail)).first;
  }
  Tail& tail = *it->second;
  const int64_t held_last =
      tail.base_seq + static_cast<int64_t>(tail.events.size());
  if (held_last != before) {
    // Not a continuation of what is held (only after a failed write): start
    // over from the new events, so a watcher never sees a gap.
    tail.events.clear();
    tail.base_seq = before;
  }
  tail.job = std::move(snapshot);
  tail.events.insert(tail.events.end(), events.begin(), events.end());
  if (final && !tail.final) {
    final_.splice(final_.end(), live_, tail.order);
    tail.final = true;
  } else {
    std::list<std::string>& order = tail.final ? final_ : live_;
    order.splice(order.end(), order, tail.order);
  }
  const size_t keep =
      static_cast<size_t>(final ? options_.final_events : options_.events);
  while (tail.events.size() > keep) {
    tail.base_seq = tail.events.front().seq();
    tail.events.pop_front();
  }
  if (!events.empty() || final) SignalLocked(&tail);
  EvictLocked();
}

void EventHub::Install(const Job& job) {
  if (IsFinal(job.state())) return;
  auto snapshot = std::make_shared<const Job>(job);
  absl::MutexLock lock(&tail_mu_);
  if (tails_.count(job.id()) > 0) return;
  auto tail = std::make_shared<Tail>();
  tail->job = std::move(snapshot);
  tail->base_seq = job.last_event_seq();
  live_.push_back(job.id());
  tail->order = std::prev(live_.end());
  tails_.emplace(job.id(), std::move(tail));
  EvictLocked();
}

void EventHub::Drop(const std::string& job_id) {
  absl::MutexLock lock(&tail_mu_);
  auto it = tails_.find(job_id);
  if (it != tails_.end()) DropLocked(it);
}

void EventHub::DropLocked(TailMap::iterator it) {
  Tail& tail = *it->second;
  (tail.final ? final_ : live_).erase(tail.order);
  SignalLocked(&tail);
  tails_.erase(it);
}

void EventHub::SignalLocked(Tail* tail) {
  tail->changed.SignalAll();
  if (tail->listeners.empty()) return;
  absl::MutexLock lock(&notify_mu_);
  if (to_notify_.empty()) {
    to_notify_.swap(tail->listeners);
  } else {
    to_notify_.insert(to_notify_.end(), tail->listeners.begin(),
                      tail->listeners.end());
    tail->listeners.clear();
  }
  tail->purge_at = 64;
}

void EventHub::EvictLocked() {
  const auto drop_oldest = [this](std::list<std::string>* order)
                               ABSL_EXCLUSIVE_LOCKS_REQUIRED(tail_mu_) {
                                 DropLocked(tails_.find(order->front()));
                               };
  while (final_.size() > static_cast<size_t>(options_.final_jobs)) {
    drop_oldest(&final_);
  }
  while (tails_.size() > static_cast<size_t>(options_.jobs)) {
    drop_oldest(final_.empty() ? &live_ : &final_);
  }
}

absl::StatusOr<JobAndEvents> EventHub::Wait(const std::string& id,
                                            int64_t after_seq, int limit,
                                            absl::Duration max_wait) {
  return Next(id, after_seq, limit, absl::Now() + max_wait, nullptr);
}

absl::StatusOr<JobAndEvents> EventHub::Poll(
    const std::string& id, int64_t after_seq, int limit,
    std::weak_ptr<EventListener> listener) {
  return Next(id, after_seq, limit, absl::InfinitePast(), &listener);
}

absl::StatusOr<JobAndEvents> EventHub::Next(
    const std::string& id, int64_t after_seq, int limit, absl::Time deadline,
    const std::weak_ptr<EventListener>* listener) {
  if (id.empty()) return Invalid("id", "is required");
  if (limit < 0) limit = 0;
  const auto shutting_down = [] {
    return absl::UnavailableError("the server is shutting down");
  };
  while (true) {
    std::shared_ptr<const Job> held;
    std::vector<Event> events;
    bool shutdown = false;
    {
      absl::MutexLock lock(&tail_mu_);
      while (true) {
        auto it = tails_.find(id);
        if (it == tails_.end() || after_seq < it->second->base_seq) break;
        // Keeps the tail (and its condition variable) alive while waiting,
        // even if it is dropped meanwhile.
        std::shared_ptr<Tail> tail = it->second;
        const int64_t last = tail->job->last_event_seq();
        if (last > after_seq) {
          const auto from = tail->events.begin() + (after_seq - tail->base_seq);
          events.assign(from,
                        from + std::min<int64_t>(limit, last - after_seq));
          held = tail->job;
          break;
        }
        shutdown = shutdown_;
        if (IsFinal(tail->job->state()) || shutdown ||
            (listener == nullptr && absl::Now() >= deadline)) {
          held = tail->job;
          break;
        }
        if (listener != nullptr) {
          // Registered under the same lock as the check above: no change
          // can slip between them unnoticed.
          if (tail->listeners.size() >= tail->purge_at) {
            auto& ls = tail->listeners;
            ls.erase(std::remove_if(ls.begin(), ls.end(),
                                    [](const auto& l) { return l.expired(); }),
                     ls.end());
            tail->purge_at = std::max<size_t>(64, 2 * tail->listeners.size());
          }
          tail->listeners.push_back(*listener);
          held = tail->job;
          break;
        }
        tail->changed.WaitWithDeadline(&tail_mu_, deadline);
      }
      shutdown = shutdown_;
    }
    if (held != nullptr) {
      if (shutdown && listener != nullptr && !IsFinal(held->state())) {
        return shutting_down();
      }
      // The copy happens outside the lock: snapshots are immutable.
      return std::make_pair(Job(*held), std::move(events));
    }

    // Older than the tail, or a job not held: the store has it.
    ASSIGN_OR_RETURN(auto stored, store_->EventsAfter(id, after_seq, limit));
    if (!stored.empty()) {
      // Read after the events, the job is at least as new as they are.
      ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
      return std::make_pair(std::move(job), std::move(stored));
    }
    absl::MutexLock lock(commit_mu_);
    // Under the commit lock no commit lands between this read and the tail
    // it starts.
    ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
    if (job.last_event_seq() > after_seq) {  // written meanwhile
      ASSIGN_OR_RETURN(stored, store_->EventsAfter(id, after_seq, limit));
      return std::make_pair(std::move(job), std::move(stored));
    }
    if (shutdown && listener != nullptr && !IsFinal(job.state())) {
      return shutting_down();
    }
    if (IsFinal(job.state()) || shutdown ||
        (listener == nullptr && absl::Now() >= deadline)) {
      return std::make_pair(std::move(job), std::vector<Event>());
    }
    // Waits (or registers the listener) on a tail from here on.
    Install(job);
  }
}

void EventHub::Shutdown() {
  absl::MutexLock lock(&tail_mu_);
  shutdown_ = true;
  for (auto& [id, tail] : tails_) SignalLocked(tail.get());
}

}  // namespace lathe::server
