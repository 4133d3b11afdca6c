#include "server/core/lifecycle.h"

#include <algorithm>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "common/redact.h"
#include "common/status.h"

namespace lathe::server {

using lathe::v1::Assignment;
using lathe::v1::Event;
using lathe::v1::Job;
using lathe::v1::JobState;

namespace {
int MaxAttempts(const Job& job) {
  return job.spec().max_attempts() > 0 ? job.spec().max_attempts() : 3;
}
}  // namespace

JobLifecycle::JobLifecycle(LifecycleOptions options, LifecycleParts parts,
                           Clock clock)
    : options_(options),
      parts_(parts),
      store_(parts.store),
      metrics_(parts.metrics),
      clock_(std::move(clock)),
      events_(
          std::make_unique<EventHub>(options.event_tail, parts.store, &mu_)) {}

absl::Status JobLifecycle::Init() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(counts_, store_->CountJobsByState());
  std::vector<Job> holding;
  for (JobState s :
       {lathe::v1::RUNNING, lathe::v1::CANCELLING, lathe::v1::PAUSING}) {
    ASSIGN_OR_RETURN(auto jobs, store_->JobsInState(s));
    for (Job& job : jobs) {
      // Jobs that were running keep running: their workers reconnect, and a
      // worker that does not come back within the heartbeat timeout loses
      // its job to the queue as usual.
      for (const std::string& w : Holders(job)) {
        parts_.workers->AddPlaceholder(w, job.id());
      }
      holding.push_back(std::move(job));
    }
  }
  std::vector<int64_t> seqs;
  ASSIGN_OR_RETURN(auto queued, store_->JobsInState(lathe::v1::QUEUED, &seqs));
  parts_.scheduler->Rebuild(queued, seqs, holding);
  PublishCounts();
  metrics_->SetWorkers(static_cast<double>(parts_.workers->size()));
  PublishStoredBytes(store_, metrics_);
  return absl::OkStatus();
}

void JobLifecycle::PublishCounts() {
  for (int s = lathe::v1::QUEUED; s <= lathe::v1::PAUSED; ++s) {
    metrics_->SetJobsInState(JobState_Name(static_cast<JobState>(s)),
                             static_cast<double>(counts_[s]));
  }
  metrics_->SetQueueDepth(static_cast<double>(counts_[lathe::v1::QUEUED]));
}

void JobLifecycle::Transition(Job* job, JobState state,
                              const std::string& message,
                              std::vector<Event>* events) {
  if (job->state() != lathe::v1::JOB_STATE_UNSPECIFIED) {
    counts_[job->state()]--;
  }
  counts_[state]++;
  if (HoldsWorker(job->state()) && !HoldsWorker(state)) {
    metrics_->ClearRunningJob(job->id());
  }
  job->set_state(state);
  if (IsFinal(state)) job->set_end_time_ms(clock_());
  events->push_back(StateEvent(state, message));
  PublishCounts();
}

absl::Status JobLifecycle::Save(Job* job, int64_t seq,
                                std::vector<Event>* events) {
  absl::Status s = store_->UpdateJob(job, events);
  if (s.ok()) {
    events_->Publish(*job, events != nullptr ? *events : std::vector<Event>());
    parts_.scheduler->Update(*job, seq);
    if (options_.on_commit) {
      options_.on_commit(*job,
                         events != nullptr ? *events : std::vector<Event>());
    }
  } else {
    // What the store holds now is uncertain; watchers read it from there.
    events_->Drop(job->id());
  }
  ++changes_;
  changed_.SignalAll();
  if (s.ok() && IsFinal(job->state())) {
    // A finished job never runs again: its model files may go once nothing
    // else refers to them.
    auto released = store_->ReleaseJobModel(job->id());
    if (released.ok() && !released->empty()) {
      parts_.models->Collect(*released);
      PublishStoredBytes(store_, metrics_);
    }
  }
  return s;
}

void JobLifecycle::Insert(
    std::vector<NewJob*>* batch,
    const std::function<absl::StatusOr<std::string>(Job*)>& prepare) {
  // Shared: no model-store collection between resolving and pinning.
  absl::ReaderMutexLock pin_lock(parts_.models->pin_mutex());
  absl::MutexLock lock(&mu_);
  std::vector<Store::NewJob> rows;
  std::vector<NewJob*> prepared;
  for (NewJob* n : *batch) {
    auto message = prepare(n->job);
    if (!message.ok()) {
      n->status = message.status();
      continue;
    }
    Transition(n->job, lathe::v1::QUEUED, *message, &n->events);
    rows.push_back(Store::NewJob{n->job, n->request_id, &n->events, {}});
    prepared.push_back(n);
  }
  if (rows.empty()) return;
  store_->InsertJobs(&rows);
  bool any = false;
  for (size_t i = 0; i < rows.size(); ++i) {
    NewJob* n = prepared[i];
    n->status = rows[i].status;
    if (!n->status.ok()) {
      counts_[lathe::v1::QUEUED]--;
      continue;
    }
    events_->Publish(*n->job, n->events);
    parts_.scheduler->Update(*n->job, rows[i].seq);
    if (options_.on_commit) options_.on_commit(*n->job, n->events);
    any = true;
  }
  PublishCounts();
  if (any) {
    ++changes_;
    changed_.SignalAll();
  }
}

absl::StatusOr<Job> JobLifecycle::Cancel(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  absl::MutexLock lock(&mu_);
  int64_t seq = 0;
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id, &seq));
  std::vector<Event> events;
  switch (job.state()) {
    case lathe::v1::QUEUED:
    case lathe::v1::PAUSED:
      job.set_error("cancelled by request");
      Transition(&job, lathe::v1::CANCELLED,
                 absl::StrCat("cancelled while ", JobState_Name(job.state())),
                 &events);
      break;
    case lathe::v1::RUNNING:
    case lathe::v1::PAUSING:
      Transition(&job, lathe::v1::CANCELLING, "cancel requested", &events);
      break;
    default:
      return job;  // already final or cancelling
  }
  RETURN_IF_ERROR(Save(&job, seq, &events));
  return job;
}

absl::Status JobLifecycle::AddNote(const std::string& id,
                                   const std::string& message) {
  absl::MutexLock lock(&mu_);
  int64_t seq = 0;
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id, &seq));
  Event e;
  e.set_type(lathe::v1::EVENT_TYPE_LOG);
  e.set_message(message);
  std::vector<Event> events = {std::move(e)};
  return Save(&job, seq, &events);
}

absl::StatusOr<Job> JobLifecycle::Pause(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  absl::MutexLock lock(&mu_);
  int64_t seq = 0;
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id, &seq));
  std::vector<Event> events;
  switch (job.state()) {
    case lathe::v1::QUEUED:
      Transition(&job, lathe::v1::PAUSED, "paused while queued", &events);
      break;
    case lathe::v1::RUNNING:
      Transition(&job, lathe::v1::PAUSING,
                 "pause requested: checkpointing, then releasing the worker",
                 &events);
      break;
    case lathe::v1::PAUSING:
    case lathe::v1::PAUSED:
      return job;
    default:
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", id, " is ", JobState_Name(job.state()), "; cannot pause"));
  }
  RETURN_IF_ERROR(Save(&job, seq, &events));
  return job;
}

absl::StatusOr<Job> JobLifecycle::Resume(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  absl::MutexLock lock(&mu_);
  int64_t seq = 0;
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id, &seq));
  if (job.state() == lathe::v1::QUEUED || job.state() == lathe::v1::RUNNING) {
    return job;
  }
  if (job.state() != lathe::v1::PAUSED) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", JobState_Name(job.state()),
                     "; only a PAUSED job "
                     "can be resumed"));
  }
  std::vector<Event> events;
  job.set_not_before_ms(0);
  Transition(&job, lathe::v1::QUEUED,
             "resumed; the next attempt continues from the latest checkpoint",
             &events);
  RETURN_IF_ERROR(Save(&job, seq, &events));
  return job;
}

absl::StatusOr<Job> JobLifecycle::RequestCheckpoint(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  absl::MutexLock lock(&mu_);
  int64_t seq = 0;
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id, &seq));
  if (job.state() != lathe::v1::RUNNING) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", JobState_Name(job.state()),
                     "; only a RUNNING job can checkpoint"));
  }
  if (job.checkpoint_requested()) return job;
  job.set_checkpoint_requested(true);
  Event e;
  e.set_type(lathe::v1::EVENT_TYPE_LOG);
  e.set_message("checkpoint requested");
  std::vector<Event> events = {e};
  RETURN_IF_ERROR(Save(&job, seq, &events));
  return job;
}

absl::Duration JobLifecycle::Backoff(int attempt) const {
  absl::Duration d = options_.retry_backoff_base;
  for (int i = 1; i < attempt && d < options_.retry_backoff_max; ++i) d *= 2;
  return std::min(d, options_.retry_backoff_max);
}

void JobLifecycle::Wake() {
  absl::MutexLock lock(&mu_);
  ++changes_;
  changed_.SignalAll();
}

absl::StatusOr<std::optional<Assignment>> JobLifecycle::StartNext(
    const std::string& worker_id, absl::Duration max_wait) {
  const absl::Time deadline = absl::Now() + max_wait;
  while (true) {
    // The pick needs only the scheduler's lock: a worker that finds nothing
    // to do never waits behind a commit.
    const uint64_t seen = changes_.load();
    ASSIGN_OR_RETURN(WorkerInfo worker, parts_.workers->Touch(worker_id));
    const int64_t now = clock_();
    std::set<std::string> backfill;
    {
      absl::MutexLock lock(&mu_);
      // A gang may have started with this worker between its polls.
      if (auto handed = TakeHandedLocked(worker_id)) return handed;
      backfill = ExpireReservationsLocked(now);
    }
    int64_t next_ready_ms = 0;
    auto picked = parts_.scheduler->Pick(
        worker.devices, now, &next_ready_ms,
        [&](const lathe::v1::Resources& res) {
          return GangFits(worker.devices, res);
        },
        backfill);
    absl::MutexLock lock(&mu_);
    if (auto handed = TakeHandedLocked(worker_id)) return handed;
    if (picked.has_value()) {
      // Another worker may have started it since the pick; Start sees that
      // in the store and the loop picks again. A worker gathered into a
      // gang that is not complete yet waits below.
      ASSIGN_OR_RETURN(auto started, Start(*picked, worker, now));
      if (started.has_value()) return started;
      if (ReservationEndLocked(worker_id) == 0) continue;
    } else {
      // Its gang's job is gone or passed over: the worker is free again.
      LeaveGangLocked(worker_id);
    }
    if (shutdown_ || absl::Now() >= deadline) {
      return std::optional<Assignment>();
    }
    if (changes_.load() != seen) continue;  // changed since the pick
    absl::Time wake = deadline;
    if (next_ready_ms > 0) {
      wake =
          std::min(wake, absl::Now() + absl::Milliseconds(next_ready_ms - now));
    }
    if (const int64_t end = ReservationEndLocked(worker_id); end > 0) {
      wake = std::min(wake, absl::Now() + absl::Milliseconds(end - now));
    }
    changed_.WaitWithDeadline(&mu_, wake);
  }
}

absl::StatusOr<std::optional<Assignment>> JobLifecycle::Start(
    const std::string& job_id, const WorkerInfo& worker, int64_t now) {
  int64_t seq = 0;
  ASSIGN_OR_RETURN(Job job, store_->GetJob(job_id, &seq));
  if (job.state() != lathe::v1::QUEUED) {
    parts_.scheduler->Update(job, seq);
    LeaveGangLocked(worker.id);
    return std::optional<Assignment>();
  }
  if (!WorkerRegistry::Fits(worker.devices, job.spec().resources())) {
    return Gather(&job, seq, worker, now);
  }
  // A job that fits one worker after all (a bigger one registered) no
  // longer needs the gang it was gathering.
  LeaveGangLocked(worker.id);
  job.clear_gang();
  ASSIGN_OR_RETURN(
      Assignment a,
      BeginAttempt(&job, seq,
                   absl::StrCat("worker ", worker.name, " (", worker.id, ")"),
                   worker.id, now));
  parts_.workers->AddJob(worker.id, job.id());
  return std::optional<Assignment>(std::move(a));
}

absl::StatusOr<Assignment> JobLifecycle::BeginAttempt(
    Job* job_ptr, int64_t seq, const std::string& placed_on,
    const std::string& primary, int64_t now) {
  Job& job = *job_ptr;
  ASSIGN_OR_RETURN(auto checkpoints, store_->Checkpoints(job.id()));
  job.set_attempt(job.attempt() + 1);
  job.set_worker_id(primary);
  job.set_not_before_ms(0);
  job.set_checkpoint_requested(false);
  if (job.start_time_ms() == 0) {
    job.set_start_time_ms(now);
    metrics_->ObserveStartLatency(
        static_cast<double>(now - job.create_time_ms()) / 1000.0);
  }
  std::vector<Event> events;
  std::string message =
      absl::StrCat("attempt ", job.attempt(), " started on ", placed_on);
  if (!checkpoints.empty()) {
    absl::StrAppend(&message, ", continuing from the checkpoint at step ",
                    checkpoints.back().step());
  }
  Transition(&job, lathe::v1::RUNNING, message, &events);
  RETURN_IF_ERROR(Save(&job, seq, &events));
  RETURN_IF_ERROR(
      store_->RecordAttemptStart(job.id(), job.attempt(), primary, now));
  Assignment a;
  a.set_job_id(job.id());
  a.set_attempt(job.attempt());
  *a.mutable_spec() = job.spec();
  *a.mutable_train_dataset() = job.train_dataset();
  if (job.has_validation_dataset()) {
    *a.mutable_validation_dataset() = job.validation_dataset();
  }
  if (!checkpoints.empty()) {
    *a.mutable_resume_checkpoint() = checkpoints.back();
  }
  if (job.has_model_source()) *a.mutable_model() = job.model_source();
  return a;
}

absl::StatusOr<WorkerCommands> JobLifecycle::Heartbeat(
    const std::string& worker_id) {
  ASSIGN_OR_RETURN(WorkerInfo worker, parts_.workers->Touch(worker_id));
  WorkerCommands out;
  for (const std::string& job_id : worker.jobs) {
    auto job = store_->GetJob(job_id);
    if (!job.ok() || !HoldsWorker(job->state()) ||
        !absl::c_linear_search(Holders(*job), worker_id) ||
        job->state() == lathe::v1::CANCELLING) {
      out.cancel.push_back(job_id);
    } else if (job->state() == lathe::v1::PAUSING) {
      out.pause.push_back(job_id);
    } else if (job->checkpoint_requested()) {
      out.checkpoint.push_back(job_id);
    }
  }
  return out;
}

absl::StatusOr<Job> JobLifecycle::LoadRunning(const std::string& job_id,
                                              int attempt, int64_t* seq) {
  ASSIGN_OR_RETURN(Job job, store_->GetJob(job_id, seq));
  if (job.attempt() != attempt) {
    return absl::FailedPreconditionError(
        absl::StrCat("attempt ", attempt, " of job ", job_id,
                     " is stale; the current attempt is ", job.attempt()));
  }
  if (!HoldsWorker(job.state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " is ", JobState_Name(job.state()), ", not running"));
  }
  return job;
}

absl::Status JobLifecycle::CheckAttempt(const std::string& job_id,
                                        int attempt) {
  absl::MutexLock lock(&mu_);
  int64_t seq = 0;
  return LoadRunning(job_id, attempt, &seq).status();
}

absl::StatusOr<JobCommands> JobLifecycle::Report(const std::string& job_id,
                                                 int attempt,
                                                 std::vector<Event> events) {
  if (events.size() > 1000) return Invalid("events", "at most 1000 per call");
  absl::MutexLock lock(&mu_);
  int64_t seq = 0;
  ASSIGN_OR_RETURN(Job job, LoadRunning(job_id, attempt, &seq));
  for (Event& e : events) {
    e.set_seq(0);
    e.set_time_ms(0);
    if (e.message().size() > 16384) e.mutable_message()->resize(16384);
    // Events are shown to everyone who may read the job.
    *e.mutable_message() = RedactSecrets(e.message());
    switch (e.type()) {
      case lathe::v1::EVENT_TYPE_LOG:
        break;
      case lathe::v1::EVENT_TYPE_TRAIN_METRICS:
        *job.mutable_train_metrics() = e.train();
        metrics_->SetRunningJob(job.id(), e.train().loss(),
                                e.train().samples_per_second());
        break;
      case lathe::v1::EVENT_TYPE_EVAL_METRICS:
        for (const auto& [k, v] : e.eval()) {
          (*job.mutable_eval_metrics())[k] = v;
        }
        break;
      case lathe::v1::EVENT_TYPE_CHECKPOINT:
        RETURN_IF_ERROR(
            parts_.checkpoints->Record(job.id(), e.mutable_checkpoint()));
        job.set_checkpoint_requested(false);
        break;
      default:
        return Invalid(
            "events.type",
            "workers report log, metrics and checkpoint events only");
    }
  }
  RETURN_IF_ERROR(Save(&job, seq, &events));
  JobCommands commands;
  commands.cancel = job.state() == lathe::v1::CANCELLING;
  commands.pause = job.state() == lathe::v1::PAUSING;
  commands.checkpoint = job.checkpoint_requested();
  return commands;
}

absl::Status JobLifecycle::FinishAttempt(const std::string& job_id, int attempt,
                                         JobState outcome,
                                         const std::string& error,
                                         lathe::v1::FailureKind failure,
                                         const std::string& member) {
  if (outcome != lathe::v1::SUCCEEDED && outcome != lathe::v1::FAILED &&
      outcome != lathe::v1::CANCELLED && outcome != lathe::v1::QUEUED &&
      outcome != lathe::v1::PAUSED) {
    return Invalid("outcome",
                   "must be SUCCEEDED, FAILED, CANCELLED, PAUSED or QUEUED");
  }
  absl::MutexLock lock(&mu_);
  int64_t seq = 0;
  ASSIGN_OR_RETURN(Job job, LoadRunning(job_id, attempt, &seq));
  if (!member.empty() && member != job.worker_id()) {
    if (!absl::c_linear_search(Holders(job), member)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "worker ", member, " is not in the gang of job ", job_id));
    }
    if (outcome != lathe::v1::FAILED && outcome != lathe::v1::QUEUED) {
      return Invalid("outcome",
                     "a gang member other than rank 0's may only report "
                     "FAILED or QUEUED");
    }
    // After a pause or cancel the other ranks stop as rank 0 does; rank 0's
    // worker ends the attempt.
    if (job.state() != lathe::v1::RUNNING) return absl::OkStatus();
  }
  // A stop that the server asked for wins over how the worker stopped.
  if (outcome == lathe::v1::QUEUED || outcome == lathe::v1::PAUSED) {
    if (job.state() == lathe::v1::CANCELLING) outcome = lathe::v1::CANCELLED;
    if (job.state() == lathe::v1::PAUSING) outcome = lathe::v1::PAUSED;
  }
  std::string message;
  std::string attempt_outcome = JobState_Name(outcome);
  const int max_attempts = MaxAttempts(job);
  if (outcome == lathe::v1::SUCCEEDED) {
    message = "training finished";
  } else if (outcome == lathe::v1::QUEUED) {
    message = absl::StrCat("worker gave the job back (", error, "); requeued");
  } else if (outcome == lathe::v1::PAUSED) {
    message = "paused; resume continues from the latest checkpoint";
  } else if (outcome == lathe::v1::CANCELLED) {
    message = "training stopped";
    job.set_error("cancelled by request");
  } else if ((failure == lathe::v1::FAILURE_KIND_CRASH ||
              failure == lathe::v1::FAILURE_KIND_UNSPECIFIED) &&
             job.state() == lathe::v1::RUNNING && attempt < max_attempts) {
    const absl::Duration wait = Backoff(attempt);
    job.set_not_before_ms(clock_() + absl::ToInt64Milliseconds(wait));
    outcome = lathe::v1::QUEUED;
    message = absl::StrCat("attempt ", attempt, " of ", max_attempts,
                           " failed: ", error, "; retrying in ",
                           absl::FormatDuration(wait));
  } else {
    const char* kind = failure == lathe::v1::FAILURE_KIND_OUT_OF_MEMORY
                           ? " (out of memory; not retried)"
                       : failure == lathe::v1::FAILURE_KIND_INVALID_INPUT
                           ? " (invalid input; not retried)"
                       : attempt >= max_attempts ? " (no attempts left)"
                                                 : "";
    message = absl::StrCat("attempt ", attempt, " of ", max_attempts, " failed",
                           kind, ": ", error);
    job.set_error(error.substr(0, 16384));
  }
  std::vector<Event> events;
  Transition(&job, outcome, message, &events);
  RETURN_IF_ERROR(Save(&job, seq, &events));
  RETURN_IF_ERROR(store_->RecordAttemptEnd(job_id, attempt, attempt_outcome,
                                           error, clock_()));
  ReleaseLocked(job);
  return absl::OkStatus();
}

void JobLifecycle::ExpireWorkers() {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_();
  const auto gone = parts_.workers->Expire(
      absl::ToInt64Milliseconds(options_.heartbeat_timeout));
  for (const WorkerInfo& worker : gone) {
    LeaveGangLocked(worker.id);
    handed_.erase(worker.id);
    for (const std::string& job_id : worker.jobs) {
      int64_t seq = 0;
      auto job = store_->GetJob(job_id, &seq);
      if (!job.ok() || !absl::c_linear_search(Holders(*job), worker.id)) {
        continue;
      }
      std::vector<Event> events;
      const std::string why =
          absl::StrCat("worker ", worker.name, " stopped sending heartbeats");
      const int max_attempts = MaxAttempts(*job);
      if (job->state() == lathe::v1::RUNNING) {
        if (job->attempt() < max_attempts) {
          Transition(&*job, lathe::v1::QUEUED, why + "; job requeued", &events);
        } else {
          job->set_error(why);
          Transition(&*job, lathe::v1::FAILED,
                     absl::StrCat(why, " on attempt ", job->attempt(), " of ",
                                  max_attempts, "; no attempts left"),
                     &events);
        }
      } else if (job->state() == lathe::v1::PAUSING) {
        Transition(&*job, lathe::v1::PAUSED,
                   why + "; paused at its latest checkpoint", &events);
      } else if (job->state() == lathe::v1::CANCELLING) {
        job->set_error("cancelled by request");
        Transition(&*job, lathe::v1::CANCELLED, why, &events);
      } else {
        continue;
      }
      store_->RecordAttemptEnd(job_id, job->attempt(), "LOST", why, now)
          .IgnoreError();
      Save(&*job, seq, &events).IgnoreError();
      ReleaseLocked(*job);
    }
  }
}

void JobLifecycle::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    ++changes_;
    changed_.SignalAll();
  }
  events_->Shutdown();
}

}  // namespace lathe::server
