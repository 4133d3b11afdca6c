// Unit tests of the server core: the SQLite store, the artifact store and the
// job manager's state machine. Real SQLite and real files in a temporary
// directory; the only fake is the clock (tests/support/fake_clock.h).
#include "server/core/job_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "tests/support/fake_clock.h"
#include "tests/support/temp_dir.h"

namespace lathe::server {
namespace {

using lathe::v1::Event;
using lathe::v1::Job;
using lathe::v1::JobSpec;
using ::testing::HasSubstr;

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *Store::Open(dir_.path() + "/lathe.db");
    artifacts_ = *ArtifactStore::Open(dir_.path() + "/artifacts");
    JobManagerOptions opts;
    opts.allowed_roots = {dir_.path()};
    opts.heartbeat_timeout = absl::Seconds(10);
    manager_ = *JobManager::Create(opts, store_.get(), artifacts_.get(),
                                   &metrics_, clock_.AsClock());
    auto w = artifacts_->NewWriter(1 << 20);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append("{\"text\":\"a\",\"label\":\"x\"}\n").ok());
    auto sha = (*w)->Commit();
    ASSERT_TRUE(sha.ok());
    dataset_ = *manager_->AddDataset("train.jsonl", *sha, (*w)->size());
  }

  JobSpec Spec() {
    JobSpec spec;
    spec.set_task("text-classification");
    spec.set_model("preset:bert-tiny");
    spec.set_train_data(dataset_.ref());
    return spec;
  }

  std::string RegisterWorker(const std::string& device = "cpu",
                             int64_t memory_mb = 0) {
    lathe::v1::Device d;
    d.set_name(device);
    d.set_memory_mb(memory_mb);
    auto reg = manager_->RegisterWorker("w", {d}, "host");
    EXPECT_TRUE(reg.ok()) << reg.status();
    return reg->worker_id;
  }

  // Submits and returns the id.
  std::string SubmitAs(const std::string& owner, int priority = 0) {
    JobSpec spec = Spec();
    spec.set_owner(owner);
    spec.set_priority(priority);
    auto job = manager_->Submit(spec, "");
    EXPECT_TRUE(job.ok()) << job.status();
    clock_.Advance(1);
    return job->id();
  }

  // A new store and manager on the same files, as after a server restart.
  void Restart(EventTailOptions tail = {}) {
    manager_.reset();
    store_.reset();
    store_ = *Store::Open(dir_.path() + "/lathe.db");
    JobManagerOptions opts;
    opts.allowed_roots = {dir_.path()};
    opts.heartbeat_timeout = absl::Seconds(10);
    opts.event_tail = tail;
    manager_ = *JobManager::Create(opts, store_.get(), artifacts_.get(),
                                   &metrics_, clock_.AsClock());
  }

  // Deletes the job's events from the database behind the manager's back:
  // whatever a watcher still gets afterwards came from memory.
  void DeleteStoredEvents(const std::string& job_id) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_.path() + "/lathe.db").c_str(), &db),
              SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    const std::string sql = "DELETE FROM events WHERE job_id='" + job_id + "'";
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }

  // Reports `n` log events "e1".."eN" (numbered from `first`), in calls of
  // up to `per_call`.
  void ReportLogs(const std::string& job_id, int first, int n,
                  int per_call = 1) {
    for (int i = 0; i < n;) {
      std::vector<Event> batch;
      for (int k = 0; k < per_call && i < n; ++k, ++i) {
        Event e;
        e.set_type(lathe::v1::EVENT_TYPE_LOG);
        e.set_message("e" + std::to_string(first + i));
        batch.push_back(e);
      }
      ASSERT_TRUE(manager_->ReportEvents(job_id, 1, batch).ok());
    }
  }

  // Follows the job from `after_seq` until it is final, as WatchJob does;
  // returns every event received.
  std::vector<Event> Follow(const std::string& job_id, int64_t after_seq,
                            int limit) {
    std::vector<Event> got;
    while (true) {
      auto batch =
          manager_->WaitForEvents(job_id, after_seq, limit, absl::Seconds(30));
      EXPECT_TRUE(batch.ok()) << batch.status();
      if (!batch.ok()) return got;
      for (const Event& e : batch->second) {
        got.push_back(e);
        after_seq = e.seq();
      }
      if (batch->second.empty() && IsFinal(batch->first.state())) return got;
    }
  }

  // True when `events` are seqs first, first + 1, ... with no gap.
  static bool Contiguous(const std::vector<Event>& events, int64_t first) {
    for (size_t i = 0; i < events.size(); ++i) {
      if (events[i].seq() != first + static_cast<int64_t>(i)) return false;
    }
    return true;
  }

  std::string Acquire(const std::string& worker) {
    auto a = manager_->AcquireJob(worker, absl::ZeroDuration());
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() && a->has_value() ? (*a)->job_id() : "";
  }

  TempDir dir_;
  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<JobManager> manager_;
  lathe::v1::Dataset dataset_;
};

TEST_F(JobManagerTest, SubmitStoresAQueuedJobWithAnEvent) {
  auto job = manager_->Submit(Spec(), "");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), lathe::v1::QUEUED);
  EXPECT_EQ(job->spec().device(), "cpu");
  EXPECT_EQ(job->train_dataset().sha256(), dataset_.sha256());
  auto stored = store_->GetJob(job->id());
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->state(), lathe::v1::QUEUED);
  auto events = store_->EventsAfter(job->id(), 0, 10);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].state(), lathe::v1::QUEUED);
  EXPECT_EQ((*events)[0].seq(), 1);
}

TEST_F(JobManagerTest, InvalidFieldsAreNamed) {
  struct Case {
    std::function<void(JobSpec*)> mutate;
    const char* field;
  };
  const std::vector<Case> cases = {
      {[](JobSpec* s) { s->set_task("translation"); }, "spec.task"},
      {[](JobSpec* s) { s->clear_task(); }, "spec.task"},
      {[](JobSpec* s) { s->set_model("preset:gpt-17"); }, "spec.model"},
      {[](JobSpec* s) { s->set_model("bert base uncased"); }, "spec.model"},
      {[](JobSpec* s) { s->set_model("/etc"); }, "spec.model"},
      {[](JobSpec* s) { s->clear_train_data(); }, "spec.train_data"},
      {[](JobSpec* s) { s->set_train_data("dataset:" + std::string(64, 'a')); },
       "spec.train_data"},
      {[](JobSpec* s) { s->set_train_data("file:///etc/passwd"); },
       "spec.train_data"},
      {[](JobSpec* s) { s->set_validation_data("/nonexistent/x.jsonl"); },
       "spec.validation_data"},
      {[](JobSpec* s) { (*s->mutable_params())["learning_rate"] = "-1"; },
       "spec.params[learning_rate]"},
      {[](JobSpec* s) { (*s->mutable_params())["epochs"] = "many"; },
       "spec.params[epochs]"},
      {[](JobSpec* s) { (*s->mutable_params())["dropout_rate"] = "0.1"; },
       "spec.params[dropout_rate]"},
      {[](JobSpec* s) { s->set_device("tpu:0"); }, "spec.device"},
  };
  for (const auto& c : cases) {
    JobSpec spec = Spec();
    c.mutate(&spec);
    auto job = manager_->Submit(spec, "");
    EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument)
        << c.field;
    EXPECT_THAT(std::string(job.status().message()), HasSubstr(c.field));
  }
  auto page = manager_->List({}, "", 0, "");
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->first.empty()) << "a refused submit must store nothing";
}

TEST_F(JobManagerTest, RequestIdMakesSubmitIdempotent) {
  auto a = manager_->Submit(Spec(), "req-1");
  auto b = manager_->Submit(Spec(), "req-1");
  auto c = manager_->Submit(Spec(), "req-2");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->id(), b->id());
  EXPECT_NE(a->id(), c->id());
}

TEST_F(JobManagerTest, FifoQueueAndFullLifecycle) {
  auto first = manager_->Submit(Spec(), "");
  clock_.Advance(1);
  auto second = manager_->Submit(Spec(), "");
  ASSERT_TRUE(first.ok() && second.ok());
  const std::string w = RegisterWorker();

  auto a = manager_->AcquireJob(w, absl::ZeroDuration());
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->job_id(), first->id());
  EXPECT_EQ((*a)->attempt(), 1);

  Event train;
  train.set_type(lathe::v1::EVENT_TYPE_TRAIN_METRICS);
  train.mutable_train()->set_step(5);
  train.mutable_train()->set_total_steps(10);
  train.mutable_train()->set_loss(0.5);
  Event eval;
  eval.set_type(lathe::v1::EVENT_TYPE_EVAL_METRICS);
  (*eval.mutable_eval())["accuracy"] = 0.75;
  auto commands = manager_->ReportEvents(first->id(), 1, {train, eval});
  ASSERT_TRUE(commands.ok()) << commands.status();
  EXPECT_FALSE(commands->cancel);
  EXPECT_FALSE(commands->pause);

  ASSERT_TRUE(
      manager_->FinishAttempt(first->id(), 1, lathe::v1::SUCCEEDED, "").ok());
  auto done = manager_->Get(first->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), lathe::v1::SUCCEEDED);
  EXPECT_EQ(done->train_metrics().step(), 5);
  EXPECT_DOUBLE_EQ(done->eval_metrics().at("accuracy"), 0.75);
  EXPECT_GT(done->end_time_ms(), 0);

  auto next = manager_->AcquireJob(w, absl::ZeroDuration());
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->job_id(), second->id());
  auto none = manager_->AcquireJob(w, absl::ZeroDuration());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(JobManagerTest, WorkersCannotSetStateOrReportForOthers) {
  auto job = manager_->Submit(Spec(), "");
  const std::string w = RegisterWorker();
  ASSERT_TRUE(manager_->AcquireJob(w, absl::ZeroDuration()).ok());
  Event state;
  state.set_type(lathe::v1::EVENT_TYPE_STATE);
  state.set_state(lathe::v1::SUCCEEDED);
  EXPECT_EQ(manager_->ReportEvents(job->id(), 1, {state}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->ReportEvents(job->id(), 2, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->ReportEvents("job-none", 1, {}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, CancelQueuedIsImmediateAndRunningGoesThroughCancelling) {
  auto queued = manager_->Submit(Spec(), "");
  auto c = manager_->Cancel(queued->id());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state(), lathe::v1::CANCELLED);

  auto running = manager_->Submit(Spec(), "");
  const std::string w = RegisterWorker();
  ASSERT_TRUE(manager_->AcquireJob(w, absl::ZeroDuration()).ok());
  auto cancelling = manager_->Cancel(running->id());
  ASSERT_TRUE(cancelling.ok());
  EXPECT_EQ(cancelling->state(), lathe::v1::CANCELLING);
  // The worker learns of it from its heartbeat and from its next report.
  auto hb = manager_->Heartbeat(w);
  ASSERT_TRUE(hb.ok());
  EXPECT_THAT(hb->cancel, ::testing::ElementsAre(running->id()));
  auto report = manager_->ReportEvents(running->id(), 1, {});
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->cancel);
  ASSERT_TRUE(
      manager_->FinishAttempt(running->id(), 1, lathe::v1::CANCELLED, "").ok());
  EXPECT_EQ(manager_->Get(running->id())->state(), lathe::v1::CANCELLED);
  // Cancelling a finished job changes nothing.
  EXPECT_EQ(manager_->Cancel(running->id())->state(), lathe::v1::CANCELLED);
}

TEST_F(JobManagerTest, SilentWorkerLosesItsJobAndStaleReportsAreRefused) {
  auto job = manager_->Submit(Spec(), "");
  const std::string w1 = RegisterWorker();
  ASSERT_TRUE(manager_->AcquireJob(w1, absl::ZeroDuration())->has_value());
  clock_.Advance(9000);
  manager_->ExpireWorkers();
  EXPECT_EQ(manager_->Get(job->id())->state(), lathe::v1::RUNNING);
  clock_.Advance(2000);
  manager_->ExpireWorkers();
  EXPECT_EQ(manager_->Get(job->id())->state(), lathe::v1::QUEUED);
  EXPECT_EQ(manager_->Heartbeat(w1).status().code(),
            absl::StatusCode::kNotFound);

  const std::string w2 = RegisterWorker();
  auto again = manager_->AcquireJob(w2, absl::ZeroDuration());
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->attempt(), 2);
  // The first worker comes back late: its attempt is fenced off.
  EXPECT_EQ(manager_->ReportEvents(job->id(), 1, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      manager_->FinishAttempt(job->id(), 1, lathe::v1::SUCCEEDED, "").code(),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(manager_
                  ->FinishAttempt(job->id(), 2, lathe::v1::FAILED, "boom",
                                  lathe::v1::FAILURE_KIND_INVALID_INPUT)
                  .ok());
  auto failed = manager_->Get(job->id());
  EXPECT_EQ(failed->state(), lathe::v1::FAILED);
  EXPECT_EQ(failed->error(), "boom");
}

TEST_F(JobManagerTest, CheckpointsNeedUploadedFilesAndBestIsByAccuracy) {
  auto job = manager_->Submit(Spec(), "");
  const std::string w = RegisterWorker();
  ASSERT_TRUE(manager_->AcquireJob(w, absl::ZeroDuration()).ok());

  auto put = [&](const std::string& content) {
    auto writer = artifacts_->NewWriter(1 << 20);
    EXPECT_TRUE((*writer)->Append(content).ok());
    lathe::v1::FileInfo f;
    f.set_name("model.safetensors");
    f.set_size((*writer)->size());
    f.set_sha256(*(*writer)->Commit());
    return f;
  };
  auto checkpoint = [&](int64_t step, double acc,
                        const lathe::v1::FileInfo& f) {
    Event e;
    e.set_type(lathe::v1::EVENT_TYPE_CHECKPOINT);
    e.mutable_checkpoint()->set_step(step);
    (*e.mutable_checkpoint()->mutable_metrics())["accuracy"] = acc;
    *e.mutable_checkpoint()->add_files() = f;
    return e;
  };
  lathe::v1::FileInfo missing;
  missing.set_name("model.safetensors");
  missing.set_size(3);
  missing.set_sha256(std::string(64, 'b'));
  EXPECT_EQ(manager_->ReportEvents(job->id(), 1, {checkpoint(5, 0.5, missing)})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);

  auto f10 = put("ten"), f20 = put("twenty"), f30 = put("thirty");
  ASSERT_TRUE(
      manager_->ReportEvents(job->id(), 1, {checkpoint(10, 0.6, f10)}).ok());
  ASSERT_TRUE(
      manager_->ReportEvents(job->id(), 1, {checkpoint(20, 0.9, f20)}).ok());
  ASSERT_TRUE(
      manager_->ReportEvents(job->id(), 1, {checkpoint(30, 0.8, f30)}).ok());
  auto list = manager_->ListCheckpoints(job->id());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->first.size(), 3u);
  EXPECT_EQ(list->second, 20);
  auto best =
      manager_->ResolveCheckpointFile(job->id(), "best", "model.safetensors");
  ASSERT_TRUE(best.ok());
  EXPECT_EQ(*ReadFile(best->path), "twenty");
  auto latest =
      manager_->ResolveCheckpointFile(job->id(), "", "model.safetensors");
  EXPECT_EQ(*ReadFile(latest->path), "thirty");
  auto step =
      manager_->ResolveCheckpointFile(job->id(), "10", "model.safetensors");
  EXPECT_EQ(*ReadFile(step->path), "ten");
  EXPECT_EQ(
      manager_->ResolveCheckpointFile(job->id(), "11", "model.safetensors")
          .status()
          .code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->ResolveCheckpointFile(job->id(), "best", "nope")
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, ListPagesNewestFirstAndFiltersByState) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(manager_->Submit(Spec(), "")->id());
  ASSERT_TRUE(manager_->Cancel(ids[1]).ok());
  auto p1 = manager_->List({}, "", 2, "");
  ASSERT_TRUE(p1.ok());
  ASSERT_EQ(p1->first.size(), 2u);
  EXPECT_EQ(p1->first[0].id(), ids[4]);
  EXPECT_EQ(p1->first[1].id(), ids[3]);
  auto p2 = manager_->List({}, "", 2, p1->second);
  ASSERT_EQ(p2->first.size(), 2u);
  EXPECT_EQ(p2->first[0].id(), ids[2]);
  auto p3 = manager_->List({}, "", 2, p2->second);
  ASSERT_EQ(p3->first.size(), 1u);
  EXPECT_TRUE(p3->second.empty());
  auto cancelled = manager_->List({lathe::v1::CANCELLED}, "", 0, "");
  ASSERT_EQ(cancelled->first.size(), 1u);
  EXPECT_EQ(cancelled->first[0].id(), ids[1]);
  EXPECT_EQ(manager_->List({}, "", 0, "garbage").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, RestartKeepsRunningJobsForTheirWorkers) {
  auto job = manager_->Submit(Spec(), "");
  auto other = manager_->Submit(Spec(), "");
  const std::string w = RegisterWorker();
  ASSERT_TRUE(manager_->AcquireJob(w, absl::ZeroDuration()).ok());
  auto restart = [&] {
    manager_.reset();
    store_.reset();
    store_ = *Store::Open(dir_.path() + "/lathe.db");
    JobManagerOptions opts;
    opts.heartbeat_timeout = absl::Seconds(10);
    manager_ = *JobManager::Create(opts, store_.get(), artifacts_.get(),
                                   &metrics_, clock_.AsClock());
  };
  restart();
  EXPECT_EQ(manager_->Get(job->id())->state(), lathe::v1::RUNNING);
  EXPECT_EQ(manager_->Get(other->id())->state(), lathe::v1::QUEUED);
  // The worker carries on: heartbeats and reports under its lease work.
  ASSERT_TRUE(manager_->Heartbeat(w).ok());
  ASSERT_TRUE(manager_->ReportEvents(job->id(), 1, {}).ok());
  ASSERT_TRUE(
      manager_->FinishAttempt(job->id(), 1, lathe::v1::SUCCEEDED, "").ok());

  // After another restart, a worker that never comes back loses its job.
  const std::string w2 = RegisterWorker();
  ASSERT_EQ(Acquire(w2), other->id());
  restart();
  clock_.Advance(11000);
  manager_->ExpireWorkers();
  EXPECT_EQ(manager_->Get(other->id())->state(), lathe::v1::QUEUED);
  auto events = store_->EventsAfter(other->id(), 0, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_THAT(events->back().message(),
              HasSubstr("stopped sending heartbeats"));
}

TEST_F(JobManagerTest, PriorityThenFairShareThenFifo) {
  const std::string a1 = SubmitAs("alice");
  const std::string a2 = SubmitAs("alice");
  const std::string a3 = SubmitAs("alice");
  const std::string b1 = SubmitAs("bob");
  const std::string c_urgent = SubmitAs("carol", 5);
  const std::string w = RegisterWorker();
  EXPECT_EQ(Acquire(w), c_urgent);  // highest priority first
  EXPECT_EQ(Acquire(w), a1);        // alice and bob run nothing: oldest first
  // alice now runs one job, bob none: bob goes first although a2 is older.
  EXPECT_EQ(Acquire(w), b1);
  EXPECT_EQ(Acquire(w), a2);
  EXPECT_EQ(Acquire(w), a3);
  EXPECT_EQ(Acquire(w), "");
}

TEST_F(JobManagerTest, OwnerLimitHoldsJobsBack) {
  manager_.reset();
  JobManagerOptions opts;
  opts.allowed_roots = {dir_.path()};
  opts.max_running_per_owner = 1;
  manager_ = *JobManager::Create(opts, store_.get(), artifacts_.get(),
                                 &metrics_, clock_.AsClock());
  const std::string a1 = SubmitAs("alice");
  const std::string a2 = SubmitAs("alice");
  const std::string w = RegisterWorker();
  EXPECT_EQ(Acquire(w), a1);
  EXPECT_EQ(Acquire(w), "") << "alice is at her limit";
  ASSERT_TRUE(manager_->FinishAttempt(a1, 1, lathe::v1::SUCCEEDED, "").ok());
  EXPECT_EQ(Acquire(w), a2);
}

TEST_F(JobManagerTest, PlacementWaitsForAWorkerThatCanHoldTheJob) {
  JobSpec gpu = Spec();
  gpu.set_device("cuda");
  gpu.mutable_resources()->set_min_device_memory_mb(40000);
  auto big = manager_->Submit(gpu, "");
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->spec().resources().device_kind(), "cuda");
  clock_.Advance(1);
  const std::string cpu_job = SubmitAs("x");
  const std::string cpu = RegisterWorker("cpu", 64000);
  const std::string small_gpu = RegisterWorker("cuda:0", 24000);
  EXPECT_EQ(Acquire(small_gpu), "") << "too little memory, and no cpu jobs";
  EXPECT_EQ(Acquire(cpu), cpu_job) << "the gpu job does not block cpu workers";
  const std::string big_gpu = RegisterWorker("cuda:1", 80000);
  EXPECT_EQ(Acquire(big_gpu), big->id());

  JobSpec two = Spec();
  two.mutable_resources()->set_device_count(2);
  auto pair = manager_->Submit(two, "");
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(Acquire(cpu), "") << "no worker has two cpu devices";
  EXPECT_EQ(manager_->Get(pair->id())->queue_position(), 1);
  JobSpec bad = Spec();
  bad.mutable_resources()->set_device_kind("tpu");
  EXPECT_EQ(manager_->Submit(bad, "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, CrashesAreRetriedWithBackoffOthersAreNot) {
  JobSpec spec = Spec();
  spec.set_max_attempts(2);
  auto job = manager_->Submit(spec, "");
  const std::string w = RegisterWorker();
  ASSERT_EQ(Acquire(w), job->id());
  ASSERT_TRUE(manager_
                  ->FinishAttempt(job->id(), 1, lathe::v1::FAILED,
                                  "killed by signal 9",
                                  lathe::v1::FAILURE_KIND_CRASH)
                  .ok());
  auto queued = manager_->Get(job->id());
  EXPECT_EQ(queued->state(), lathe::v1::QUEUED);
  EXPECT_GT(queued->not_before_ms(), 0);
  EXPECT_EQ(Acquire(w), "") << "backoff not over";
  clock_.Advance(1000);
  ASSERT_EQ(Acquire(w), job->id());
  ASSERT_TRUE(manager_
                  ->FinishAttempt(job->id(), 2, lathe::v1::FAILED,
                                  "killed by signal 9",
                                  lathe::v1::FAILURE_KIND_CRASH)
                  .ok());
  EXPECT_EQ(manager_->Get(job->id())->state(), lathe::v1::FAILED)
      << "no attempts left";
  EXPECT_THAT(store_->EventsAfter(job->id(), 0, 100)->back().message(),
              HasSubstr("no attempts left"));

  auto oom = manager_->Submit(Spec(), "");
  ASSERT_EQ(Acquire(w), oom->id());
  ASSERT_TRUE(manager_
                  ->FinishAttempt(oom->id(), 1, lathe::v1::FAILED, "oom",
                                  lathe::v1::FAILURE_KIND_OUT_OF_MEMORY)
                  .ok());
  EXPECT_EQ(manager_->Get(oom->id())->state(), lathe::v1::FAILED);
  EXPECT_THAT(store_->EventsAfter(oom->id(), 0, 100)->back().message(),
              HasSubstr("out of memory; not retried"));
}

TEST_F(JobManagerTest, PauseCheckpointsReleasesAndResumeRequeues) {
  const std::string id = SubmitAs("a");
  EXPECT_EQ(manager_->Pause(id)->state(), lathe::v1::PAUSED);
  EXPECT_EQ(manager_->Resume(id)->state(), lathe::v1::QUEUED);
  const std::string w = RegisterWorker();
  ASSERT_EQ(Acquire(w), id);
  EXPECT_EQ(manager_->Pause(id)->state(), lathe::v1::PAUSING);
  EXPECT_THAT(manager_->Heartbeat(w)->pause, ::testing::ElementsAre(id));
  EXPECT_TRUE(manager_->ReportEvents(id, 1, {})->pause);
  ASSERT_TRUE(manager_->FinishAttempt(id, 1, lathe::v1::PAUSED, "").ok());
  EXPECT_EQ(manager_->Get(id)->state(), lathe::v1::PAUSED);
  EXPECT_EQ(Acquire(w), "") << "a paused job is not run";
  EXPECT_EQ(manager_->Resume(id)->state(), lathe::v1::QUEUED);
  EXPECT_EQ(Acquire(w), id);
  EXPECT_EQ(manager_->Get(id)->attempt(), 2);
  // Cancel works in every state, paused included.
  ASSERT_TRUE(manager_->Pause(id).ok());
  ASSERT_TRUE(manager_->FinishAttempt(id, 2, lathe::v1::PAUSED, "").ok());
  EXPECT_EQ(manager_->Cancel(id)->state(), lathe::v1::CANCELLED);
  EXPECT_EQ(manager_->Resume(id).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->Pause(id).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, CheckpointNowIsRelayedUntilACheckpointArrives) {
  const std::string id = SubmitAs("a");
  EXPECT_EQ(manager_->RequestCheckpoint(id).status().code(),
            absl::StatusCode::kFailedPrecondition);
  const std::string w = RegisterWorker();
  ASSERT_EQ(Acquire(w), id);
  EXPECT_TRUE(manager_->RequestCheckpoint(id)->checkpoint_requested());
  EXPECT_THAT(manager_->Heartbeat(w)->checkpoint, ::testing::ElementsAre(id));
  auto writer = artifacts_->NewWriter(100);
  ASSERT_TRUE((*writer)->Append("weights").ok());
  lathe::v1::FileInfo f;
  f.set_name("model.safetensors");
  f.set_size(7);
  f.set_sha256(*(*writer)->Commit());
  Event cp;
  cp.set_type(lathe::v1::EVENT_TYPE_CHECKPOINT);
  cp.mutable_checkpoint()->set_step(3);
  *cp.mutable_checkpoint()->add_files() = f;
  auto commands = manager_->ReportEvents(id, 1, {cp});
  ASSERT_TRUE(commands.ok()) << commands.status();
  EXPECT_FALSE(commands->checkpoint);
  EXPECT_TRUE(manager_->Heartbeat(w)->checkpoint.empty());
}

TEST_F(JobManagerTest, RetentionKeepsTheLastKAndTheBestAndFreesFiles) {
  const std::string id = SubmitAs("a");
  const std::string w = RegisterWorker();
  ASSERT_EQ(Acquire(w), id);
  std::vector<std::string> shas;
  std::string vocab_sha;
  auto put = [&](int64_t step, double accuracy) {
    auto writer = artifacts_->NewWriter(100);
    ASSERT_TRUE(
        (*writer)->Append("weights at step " + std::to_string(step)).ok());
    lathe::v1::FileInfo f;
    f.set_name("model.safetensors");
    f.set_size((*writer)->size());
    f.set_sha256(*(*writer)->Commit());
    shas.push_back(f.sha256());
    // A file shared by every checkpoint must survive any deletion.
    auto shared = artifacts_->NewWriter(100);
    ASSERT_TRUE((*shared)->Append("vocab").ok());
    lathe::v1::FileInfo v;
    v.set_name("vocab.txt");
    v.set_size(5);
    v.set_sha256(*(*shared)->Commit());
    vocab_sha = v.sha256();
    Event e;
    e.set_type(lathe::v1::EVENT_TYPE_CHECKPOINT);
    e.mutable_checkpoint()->set_step(step);
    (*e.mutable_checkpoint()->mutable_metrics())["accuracy"] = accuracy;
    *e.mutable_checkpoint()->add_files() = f;
    *e.mutable_checkpoint()->add_files() = v;
    ASSERT_TRUE(manager_->ReportEvents(id, 1, {e}).ok());
  };
  put(10, 0.5);
  put(20, 0.99);  // the best
  put(30, 0.6);
  put(40, 0.7);
  put(50, 0.8);
  put(60, 0.9);
  auto list = manager_->ListCheckpoints(id);
  ASSERT_TRUE(list.ok());
  std::vector<int64_t> steps;
  for (const auto& c : list->first) steps.push_back(c.step());
  EXPECT_THAT(steps, ::testing::ElementsAre(20, 40, 50, 60));
  EXPECT_EQ(list->second, 20);
  EXPECT_FALSE(PathExists(artifacts_->PathFor(shas[0])));
  EXPECT_FALSE(PathExists(artifacts_->PathFor(shas[2])));
  EXPECT_TRUE(PathExists(artifacts_->PathFor(shas[1])));
  EXPECT_TRUE(PathExists(artifacts_->PathFor(vocab_sha)));
}

TEST_F(JobManagerTest, QueuePositionFollowsPriority) {
  const std::string a = SubmitAs("a");
  const std::string b = SubmitAs("b", 3);
  const std::string c = SubmitAs("c");
  EXPECT_EQ(manager_->Get(b)->queue_position(), 1);
  EXPECT_EQ(manager_->Get(a)->queue_position(), 2);
  EXPECT_EQ(manager_->Get(c)->queue_position(), 3);
  auto page = manager_->List({}, "", 0, "");
  ASSERT_EQ(page->first.size(), 3u);
  for (const auto& j : page->first) EXPECT_GT(j.queue_position(), 0);
}

TEST_F(JobManagerTest, StartEstimateAveragesTheLatestTwentySuccessfulRuns) {
  const std::string w = RegisterWorker();
  // One old run of 100 s, then twenty of 1 s: only the twenty count.
  for (int i = 0; i < 21; ++i) {
    const std::string id = SubmitAs("a");
    auto a = manager_->AcquireJob(w, absl::ZeroDuration());
    ASSERT_TRUE(a.ok() && a->has_value());
    ASSERT_EQ((*a)->job_id(), id);
    clock_.Advance(i == 0 ? 100000 : 1000);
    ASSERT_TRUE(manager_->FinishAttempt(id, 1, lathe::v1::SUCCEEDED, "").ok());
  }
  const std::string first = SubmitAs("a");
  const std::string second = SubmitAs("a");
  auto one = manager_->Get(first);
  auto two = manager_->Get(second);
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_EQ(one->queue_position(), 1);
  EXPECT_EQ(two->queue_position(), 2);
  // One worker: the second waits one run behind the first.
  EXPECT_EQ(two->estimated_start_time_ms() - one->estimated_start_time_ms(),
            1000);
}

TEST_F(JobManagerTest, WatchReturnsEventsAfterASequence) {
  auto job = manager_->Submit(Spec(), "");
  ASSERT_TRUE(manager_->Cancel(job->id()).ok());
  auto all = manager_->WaitForEvents(job->id(), 0, 100, absl::ZeroDuration());
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->second.size(), 2u);
  auto rest = manager_->WaitForEvents(job->id(), 1, 100, absl::ZeroDuration());
  ASSERT_EQ(rest->second.size(), 1u);
  EXPECT_EQ(rest->second[0].seq(), 2);
  EXPECT_EQ(rest->second[0].state(), lathe::v1::CANCELLED);
  // A final job with nothing newer returns at once, without events.
  auto none = manager_->WaitForEvents(job->id(), 2, 100, absl::Hours(1));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->second.empty());
}

TEST_F(JobManagerTest, WatchersGetEveryEventFromMemoryInOrder) {
  auto job = manager_->Submit(Spec(), "");
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(Acquire(RegisterWorker()), job->id());
  // Watchers with different page sizes follow while events arrive in
  // reports of varying size.
  const std::vector<int> limits = {1, 3, 256, 1000};
  std::vector<std::vector<Event>> got(limits.size());
  std::vector<std::thread> watchers;
  for (size_t w = 0; w < limits.size(); ++w) {
    watchers.emplace_back([&, w] { got[w] = Follow(job->id(), 0, limits[w]); });
  }
  const int kLogs = 600;
  for (int i = 0; i < kLogs; i += 1 + i % 7) {
    ReportLogs(job->id(), i + 1, std::min(1 + i % 7, kLogs - i), 1 + i % 7);
  }
  ASSERT_TRUE(
      manager_->FinishAttempt(job->id(), 1, lathe::v1::SUCCEEDED, "").ok());
  for (auto& t : watchers) t.join();
  // QUEUED, RUNNING, the logs, SUCCEEDED.
  const size_t total = kLogs + 3;
  for (size_t w = 0; w < limits.size(); ++w) {
    ASSERT_EQ(got[w].size(), total) << "limit " << limits[w];
    EXPECT_TRUE(Contiguous(got[w], 1)) << "limit " << limits[w];
    for (int i = 0; i < kLogs; ++i) {
      ASSERT_EQ(got[w][2 + i].message(), "e" + std::to_string(i + 1));
    }
    EXPECT_EQ(got[w].back().state(), lathe::v1::SUCCEEDED);
  }
}

TEST_F(JobManagerTest, RecentEventsAreServedWithoutTheDatabase) {
  auto job = manager_->Submit(Spec(), "");
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(Acquire(RegisterWorker()), job->id());
  ReportLogs(job->id(), 1, 20, 4);
  DeleteStoredEvents(job->id());
  auto recent = manager_->WaitForEvents(job->id(), 0, 100, absl::Seconds(1));
  ASSERT_TRUE(recent.ok()) << recent.status();
  ASSERT_EQ(recent->second.size(), 22u);
  EXPECT_TRUE(Contiguous(recent->second, 1));
  EXPECT_EQ(recent->first.last_event_seq(), 22);
  // A waiting watcher is woken by the next event and gets only it.
  std::thread report([&] { ReportLogs(job->id(), 21, 1); });
  auto next = manager_->WaitForEvents(job->id(), 22, 100, absl::Seconds(30));
  report.join();
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->second.size(), 1u);
  EXPECT_EQ(next->second[0].seq(), 23);
  EXPECT_EQ(next->second[0].message(), "e21");
}

TEST_F(JobManagerTest, WatchFromBeforeTheTailReadsTheStore) {
  EventTailOptions tail;
  tail.events = 8;
  Restart(tail);
  auto job = manager_->Submit(Spec(), "");
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(Acquire(RegisterWorker()), job->id());
  ReportLogs(job->id(), 1, 50, 3);  // seqs 3..52; memory holds 45..52
  // From the start: pages from the store, then from memory, no gap.
  for (int limit : {5, 8, 100}) {
    std::vector<Event> got;
    int64_t after = 0;
    while (after < 52) {
      auto page =
          manager_->WaitForEvents(job->id(), after, limit, absl::Seconds(1));
      ASSERT_TRUE(page.ok());
      ASSERT_FALSE(page->second.empty());
      ASSERT_LE(page->second.size(), static_cast<size_t>(limit));
      for (const Event& e : page->second) got.push_back(e);
      after = got.back().seq();
    }
    ASSERT_EQ(got.size(), 52u) << "limit " << limit;
    EXPECT_TRUE(Contiguous(got, 1)) << "limit " << limit;
    EXPECT_EQ(got[2].message(), "e1");
    EXPECT_EQ(got[51].message(), "e50");
  }
  // Older events come from the store: gone once deleted there, while the
  // tail still answers.
  DeleteStoredEvents(job->id());
  auto old = manager_->WaitForEvents(job->id(), 10, 100, absl::ZeroDuration());
  ASSERT_TRUE(old.ok());
  EXPECT_TRUE(old->second.empty());
  auto recent =
      manager_->WaitForEvents(job->id(), 44, 100, absl::ZeroDuration());
  ASSERT_TRUE(recent.ok());
  ASSERT_EQ(recent->second.size(), 8u);
  EXPECT_TRUE(Contiguous(recent->second, 45));
}

TEST_F(JobManagerTest, WatchWorksAfterARestart) {
  auto job = manager_->Submit(Spec(), "");
  ASSERT_TRUE(job.ok());
  const std::string w = RegisterWorker();
  ASSERT_EQ(Acquire(w), job->id());
  ReportLogs(job->id(), 1, 10, 2);  // seqs 3..12
  Restart();
  // The new manager holds nothing in memory: the store answers, then a
  // waiting watcher gets what the worker reports next.
  std::vector<Event> got;
  std::thread watcher([&] { got = Follow(job->id(), 0, 4); });
  ASSERT_TRUE(manager_->Heartbeat(w).ok());
  ReportLogs(job->id(), 11, 10, 3);  // seqs 13..22
  ASSERT_TRUE(
      manager_->FinishAttempt(job->id(), 1, lathe::v1::SUCCEEDED, "").ok());
  watcher.join();
  ASSERT_EQ(got.size(), 23u);
  EXPECT_TRUE(Contiguous(got, 1));
  EXPECT_EQ(got[21].message(), "e20");
  EXPECT_EQ(got.back().state(), lathe::v1::SUCCEEDED);
  // A watcher that joins after the end of a job gets its last events.
  auto late = manager_->WaitForEvents(job->id(), 20, 100, absl::Hours(1));
  ASSERT_TRUE(late.ok());
  ASSERT_EQ(late->second.size(), 3u);
  EXPECT_TRUE(Contiguous(late->second, 21));
  // And a restart after the end: the store alone answers.
  Restart();
  auto after = Follow(job->id(), 0, 100);
  EXPECT_EQ(after.size(), 23u);
  EXPECT_TRUE(Contiguous(after, 1));
}

// Counts OnJobChanged calls.
class CountingListener : public EventListener {
 public:
  void OnJobChanged() override {
    absl::MutexLock lock(&mu_);
    ++calls_;
  }
  // Waits up to 10 s for at least `n` calls; returns the count.
  int WaitFor(int n) {
    absl::MutexLock lock(&mu_);
    const auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return calls_ >= n;
    };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
    return calls_;
  }

 private:
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(JobManagerTest, PollRegistersAListenerThatAChangeCalls) {
  auto job = manager_->Submit(Spec(), "");
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(Acquire(RegisterWorker()), job->id());  // seqs 1, 2
  auto listener = std::make_shared<CountingListener>();
  // Events there: returned at once, nothing registered.
  auto now = manager_->PollEvents(job->id(), 0, 100, listener);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->second.size(), 2u);
  // Nothing newer: registered, and called once by the next event.
  auto none = manager_->PollEvents(job->id(), 2, 100, listener);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->second.empty());
  EXPECT_EQ(none->first.state(), lathe::v1::RUNNING);
  ReportLogs(job->id(), 1, 1);
  EXPECT_EQ(listener->WaitFor(1), 1);
  auto next = manager_->PollEvents(job->id(), 2, 100, listener);
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->second.size(), 1u);
  EXPECT_EQ(next->second[0].seq(), 3);
  // A listener that is gone by then is skipped; a live one is called at
  // shutdown and polls UNAVAILABLE from then on.
  auto gone = std::make_shared<CountingListener>();
  ASSERT_TRUE(manager_->PollEvents(job->id(), 3, 100, gone).ok());
  gone.reset();
  ASSERT_TRUE(manager_->PollEvents(job->id(), 3, 100, listener).ok());
  manager_->Shutdown();
  EXPECT_EQ(listener->WaitFor(2), 2);
  EXPECT_EQ(manager_->PollEvents(job->id(), 3, 100, listener).status().code(),
            absl::StatusCode::kUnavailable);
  // A final job still answers: it ends the stream rather than failing it.
  ASSERT_TRUE(
      manager_->FinishAttempt(job->id(), 1, lathe::v1::SUCCEEDED, "").ok());
  auto end = manager_->PollEvents(job->id(), 4, 100, listener);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->first.state(), lathe::v1::SUCCEEDED);
}

TEST_F(JobManagerTest, EventTailIsBoundedByJobs) {
  EventTailOptions tail;
  tail.jobs = 4;
  tail.final_jobs = 1;
  tail.final_events = 1;
  Restart(tail);
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i) {
    auto job = manager_->Submit(Spec(), "");
    ASSERT_TRUE(job.ok());
    ids.push_back(job->id());
    if (i % 3 == 0) ASSERT_TRUE(manager_->Cancel(job->id()).ok());
  }
  // Every job, held or dropped, still answers completely.
  for (size_t i = 0; i < ids.size(); ++i) {
    auto page = manager_->WaitForEvents(ids[i], 0, 100, absl::ZeroDuration());
    ASSERT_TRUE(page.ok());
    EXPECT_EQ(page->second.size(), i % 3 == 0 ? 2u : 1u);
    EXPECT_TRUE(Contiguous(page->second, 1));
  }
}

TEST_F(JobManagerTest, ConcurrentSubmitsAreAllStoredOnceEach) {
  const int kThreads = 16;
  const int kEach = 20;
  const int kShared = 5;
  // ids[t][i]: what thread t's i-th submit returned. Every thread also
  // submits the same kShared request ids, all at about the same time.
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::vector<std::string>> shared(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready++;
      while (ready < kThreads) std::this_thread::yield();
      for (int i = 0; i < kEach; ++i) {
        auto job =
            manager_->Submit(Spec(), i % 2 ? "" : absl::StrCat(t, "-", i));
        EXPECT_TRUE(job.ok()) << job.status();
        ids[t].push_back(job.ok() ? job->id() : "");
        if (i < kShared) {
          auto again = manager_->Submit(Spec(), absl::StrCat("shared-", i));
          EXPECT_TRUE(again.ok()) << again.status();
          shared[t].push_back(again.ok() ? again->id() : "");
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> unique;
  for (const auto& v : ids) unique.insert(v.begin(), v.end());
  EXPECT_EQ(unique.size(), static_cast<size_t>(kThreads * kEach));
  for (int i = 0; i < kShared; ++i) {
    for (int t = 1; t < kThreads; ++t) {
      EXPECT_EQ(shared[t][i], shared[0][i]) << "shared-" << i;
    }
    unique.insert(shared[0][i]);
  }
  // Exactly those jobs are stored, each with its submitted event.
  auto counts = store_->CountJobsByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[lathe::v1::QUEUED],
            static_cast<int64_t>(kThreads * kEach + kShared));
  for (const std::string& id : unique) {
    auto events = store_->EventsAfter(id, 0, 10);
    ASSERT_TRUE(events.ok());
    ASSERT_EQ(events->size(), 1u) << id;
    EXPECT_EQ((*events)[0].state(), lathe::v1::QUEUED);
  }
  // Repeating a request id later still returns the first job.
  auto repeat = manager_->Submit(Spec(), "3-4");
  ASSERT_TRUE(repeat.ok());
  EXPECT_EQ(repeat->id(), ids[3][4]);
}

TEST(StoreTest, InsertJobsRollsBackOnlyTheJobsThatFail) {
  TempDir dir;
  auto store = Store::Open(dir.path() + "/lathe.db");
  ASSERT_TRUE(store.ok());
  auto make = [](const std::string& id) {
    Job job;
    job.set_id(id);
    job.set_state(lathe::v1::QUEUED);
    return job;
  };
  Job existing = make("job-existing");
  std::vector<Event> existing_events(1);
  ASSERT_TRUE((*store)->InsertJob(&existing, "", &existing_events).ok());
  // a and b share a request id; c reuses an existing job's id.
  std::vector<Job> jobs = {make("job-a"), make("job-b"), make("job-existing"),
                           make("job-d")};
  std::vector<std::vector<Event>> events(jobs.size(), std::vector<Event>(2));
  const std::vector<std::string> request_ids = {"r1", "r1", "", ""};
  std::vector<Store::NewJob> batch;
  for (size_t i = 0; i < jobs.size(); ++i) {
    batch.push_back({&jobs[i], request_ids[i], &events[i], {}});
  }
  (*store)->InsertJobs(&batch);
  EXPECT_TRUE(batch[0].status.ok()) << batch[0].status;
  EXPECT_EQ(batch[1].status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(batch[2].status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(batch[3].status.ok()) << batch[3].status;
  EXPECT_EQ(**(*store)->JobIdForRequest("r1"), "job-a");
  EXPECT_EQ((*store)->GetJob("job-b").status().code(),
            absl::StatusCode::kNotFound);
  for (const char* id : {"job-a", "job-d"}) {
    auto job = (*store)->GetJob(id);
    ASSERT_TRUE(job.ok()) << id;
    EXPECT_EQ(job->last_event_seq(), 2);
    auto stored = (*store)->EventsAfter(id, 0, 10);
    ASSERT_TRUE(stored.ok());
    ASSERT_EQ(stored->size(), 2u);
    EXPECT_EQ((*stored)[1].seq(), 2);
  }
  // The existing job kept its one event.
  EXPECT_EQ((*store)->EventsAfter("job-existing", 0, 10)->size(), 1u);
  auto counts = (*store)->CountJobsByState();
  EXPECT_EQ((*counts)[lathe::v1::QUEUED], 3);
}

TEST(ArtifactStoreTest, ContentAddressedAndVerified) {
  TempDir dir;
  auto store = ArtifactStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  auto w = (*store)->NewWriter(100);
  ASSERT_TRUE((*w)->Append("abc").ok());
  auto sha = (*w)->Commit();
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(*sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE((*store)->Has(*sha, 3));
  EXPECT_FALSE((*store)->Has(*sha, 4));
  EXPECT_EQ(*ReadFile((*store)->PathFor(*sha)), "abc");

  auto bad = (*store)->NewWriter(100);
  ASSERT_TRUE((*bad)->Append("abd").ok());
  EXPECT_EQ((*bad)->Commit(*sha).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*ReadFile((*store)->PathFor(*sha)), "abc")
      << "stored blob untouched";

  auto big = (*store)->NewWriter(4);
  EXPECT_EQ((*big)->Append("12345").code(),
            absl::StatusCode::kResourceExhausted);
  // Abandoned uploads leave no temporary files behind.
  bad->reset();
  big->reset();
  EXPECT_TRUE(std::filesystem::is_empty(dir.path() + "/tmp"));
}

}  // namespace
}  // namespace lathe::server
