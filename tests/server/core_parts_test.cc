// Unit tests of the server core's parts that read and write the store: the
// dataset catalogue and allowed roots, the checkpoint catalogue, the event
// hub, the lifecycle's state machine and submission's validation. Real
// SQLite and real files in a temporary directory; the clock is a fake.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "server/core/allowed_roots.h"
#include "server/core/checkpoints.h"
#include "server/core/datasets.h"
#include "server/core/event_hub.h"
#include "server/core/lifecycle.h"
#include "server/core/submission.h"
#include "tests/support/fake_clock.h"
#include "tests/support/temp_dir.h"

namespace lathe::server {
namespace {

using lathe::v1::Event;
using lathe::v1::Job;
using ::testing::HasSubstr;

// The parts wired as JobManager wires them, each reachable by the tests.
class CorePartsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *Store::Open(dir_.path() + "/lathe.db");
    artifacts_ = *ArtifactStore::Open(dir_.path() + "/artifacts");
    roots_ = *AllowedRoots::Create({dir_.path()});
    models_ = std::make_unique<ModelStore>(ModelStoreOptions{}, store_.get(),
                                           artifacts_.get(), &metrics_,
                                           clock_.AsClock());
    datasets_ = std::make_unique<DatasetCatalogue>(
        &roots_, store_.get(), artifacts_.get(), &metrics_, 1 << 20);
    checkpoints_ = std::make_unique<CheckpointCatalogue>(
        store_.get(), artifacts_.get(), &metrics_, clock_.AsClock(), 1);
    workers_ = std::make_unique<WorkerRegistry>(&metrics_, clock_.AsClock());
    lifecycle_ = std::make_unique<JobLifecycle>(
        LifecycleOptions{},
        LifecycleParts{store_.get(), &metrics_, &scheduler_, workers_.get(),
                       checkpoints_.get(), models_.get()},
        clock_.AsClock());
    ASSERT_TRUE(lifecycle_->Init().ok());
    submission_ = std::make_unique<Submission>(
        SubmissionParts{&roots_, store_.get(), datasets_.get(),
                        checkpoints_.get(), lifecycle_.get()},
        clock_.AsClock());
    std::ofstream(dir_.path() + "/train.jsonl")
        << "{\"text\":\"a\",\"label\":\"x\"}\n";
  }

  lathe::v1::JobSpec Spec() {
    lathe::v1::JobSpec spec;
    spec.set_task("text-classification");
    spec.set_model("preset:bert-tiny");
    spec.set_train_data(dir_.path() + "/train.jsonl");
    return spec;
  }

  // A file in the artifact store, as a worker's upload leaves it.
  lathe::v1::FileInfo Blob(const std::string& name, const std::string& data) {
    auto w = *artifacts_->NewWriter(1 << 20);
    EXPECT_TRUE(w->Append(data).ok());
    lathe::v1::FileInfo f;
    f.set_name(name);
    f.set_sha256(*w->Commit());
    f.set_size(static_cast<int64_t>(data.size()));
    return f;
  }

  TempDir dir_;
  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  AllowedRoots roots_;
  std::unique_ptr<ModelStore> models_;
  std::unique_ptr<DatasetCatalogue> datasets_;
  std::unique_ptr<CheckpointCatalogue> checkpoints_;
  std::unique_ptr<WorkerRegistry> workers_;
  Scheduler scheduler_{SchedulerOptions{}};
  std::unique_ptr<JobLifecycle> lifecycle_;
  std::unique_ptr<Submission> submission_;
};

TEST_F(CorePartsTest, AllowedRootsConfineLocalPaths) {
  EXPECT_TRUE(roots_.Resolve("spec.model", dir_.path() + "/x").ok());
  auto outside = roots_.Resolve("spec.model", "/etc/passwd");
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(outside.status().message(), HasSubstr("spec.model:"));
  auto escape = roots_.Resolve("spec.model", dir_.path() + "/../../etc");
  EXPECT_FALSE(escape.ok());
  EXPECT_FALSE(roots_.Resolve("f", "relative/path").ok());
  EXPECT_FALSE(AllowedRoots::Create({"relative"}).ok());
}

TEST_F(CorePartsTest, DatasetsImportFilesAndResolveReferences) {
  auto imported =
      datasets_->Resolve("spec.train_data", dir_.path() + "/train.jsonl");
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->name(), "train.jsonl");
  auto again = datasets_->Resolve("spec.train_data", imported->ref());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->sha256(), imported->sha256());
  EXPECT_TRUE(datasets_->Path(imported->ref()).ok());
  auto unknown =
      datasets_->Resolve("spec.train_data", "dataset:" + std::string(64, 'a'));
  EXPECT_THAT(unknown.status().message(), HasSubstr("does not exist"));
  EXPECT_EQ(datasets_->Path("dataset:" + std::string(64, 'a')).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(
      datasets_->Resolve("spec.train_data", "s3://b/k").status().message(),
      HasSubstr("spec.train_data:"));
}

TEST_F(CorePartsTest, SubmissionNamesTheFieldItRefuses) {
  lathe::v1::Job job;
  auto spec = Spec();
  spec.set_task("translation");
  EXPECT_THAT(submission_->Validate(&spec, &job).message(),
              HasSubstr("spec.task"));
  spec = Spec();
  spec.set_model("preset:nope");
  EXPECT_THAT(submission_->Validate(&spec, &job).message(),
              HasSubstr("spec.model"));
  spec = Spec();
  (*spec.mutable_params())["epochs"] = "0";
  EXPECT_THAT(submission_->Validate(&spec, &job).message(),
              HasSubstr("spec.params[epochs]"));
  spec = Spec();
  (*spec.mutable_params())["lora_r"] = "4";
  EXPECT_THAT(submission_->Validate(&spec, &job).message(),
              HasSubstr("spec.params[lora_r]: applies only with method=lora"));
  spec = Spec();
  spec.set_device("tpu");
  EXPECT_THAT(submission_->Validate(&spec, &job).message(),
              HasSubstr("spec.device"));
  spec = Spec();
  ASSERT_TRUE(submission_->Validate(&spec, &job).ok());
  EXPECT_EQ(spec.max_attempts(), 3);
  EXPECT_EQ(spec.resources().device_kind(), "cpu");
  EXPECT_TRUE(job.has_train_dataset());
}

TEST_F(CorePartsTest, SubmitQueuesIndexesAndPublishes) {
  auto job = submission_->Submit(Spec(), "req-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), lathe::v1::QUEUED);
  EXPECT_EQ(scheduler_.Position(job->id()), 1);
  auto again = submission_->Submit(Spec(), "req-1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id(), job->id());
  auto events =
      lifecycle_->events()->Wait(job->id(), 0, 10, absl::ZeroDuration());
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->second.size(), 1u);
  EXPECT_EQ(events->second[0].state(), lathe::v1::QUEUED);
}

TEST_F(CorePartsTest, LifecycleRunsAnAttemptUnderItsFencingNumber) {
  auto job = *submission_->Submit(Spec(), "");
  workers_->Add("w1", "one", {[] {
                  lathe::v1::Device d;
                  d.set_name("cpu");
                  return d;
                }()});
  auto a = lifecycle_->StartNext("w1", absl::ZeroDuration());
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->attempt(), 1);
  EXPECT_EQ(scheduler_.queued(), 0u);
  EXPECT_EQ(scheduler_.running(Principal::System().user), 1);
  // A report from another attempt is refused.
  EXPECT_EQ(lifecycle_->Report(job.id(), 2, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A crash with attempts left goes back to the queue after a backoff.
  ASSERT_TRUE(lifecycle_
                  ->FinishAttempt(job.id(), 1, lathe::v1::FAILED, "boom",
                                  lathe::v1::FAILURE_KIND_CRASH)
                  .ok());
  auto stored = *store_->GetJob(job.id());
  EXPECT_EQ(stored.state(), lathe::v1::QUEUED);
  EXPECT_GT(stored.not_before_ms(), 0);
  EXPECT_EQ(scheduler_.running(Principal::System().user), 0);
  EXPECT_EQ(*lifecycle_->StartNext("w1", absl::ZeroDuration()), std::nullopt);
  clock_.Advance(absl::ToInt64Milliseconds(lifecycle_->Backoff(1)));
  auto second = lifecycle_->StartNext("w1", absl::ZeroDuration());
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ((*second)->attempt(), 2);
  // Cancel of a running job asks the worker; the attempt then ends it.
  EXPECT_EQ(lifecycle_->Cancel(job.id())->state(), lathe::v1::CANCELLING);
  EXPECT_EQ(lifecycle_->Heartbeat("w1")->cancel.size(), 1u);
  ASSERT_TRUE(lifecycle_
                  ->FinishAttempt(job.id(), 2, lathe::v1::QUEUED, "stopping",
                                  lathe::v1::FAILURE_KIND_CRASH)
                  .ok());
  EXPECT_EQ(store_->GetJob(job.id())->state(), lathe::v1::CANCELLED);
}

TEST_F(CorePartsTest, LifecycleRefusesWhatAStateDoesNotAllow) {
  auto job = *submission_->Submit(Spec(), "");
  EXPECT_EQ(lifecycle_->RequestCheckpoint(job.id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(lifecycle_->Resume(job.id())->state(), lathe::v1::QUEUED);
  EXPECT_EQ(lifecycle_->Pause(job.id())->state(), lathe::v1::PAUSED);
  EXPECT_EQ(scheduler_.Position(job.id()), 0);
  EXPECT_EQ(lifecycle_->Resume(job.id())->state(), lathe::v1::QUEUED);
  EXPECT_EQ(scheduler_.Position(job.id()), 1);
  EXPECT_EQ(lifecycle_->Cancel(job.id())->state(), lathe::v1::CANCELLED);
  EXPECT_EQ(lifecycle_->Pause(job.id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(lifecycle_->Cancel("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CorePartsTest, CheckpointsRankKeepAndResolve) {
  auto job = *submission_->Submit(Spec(), "");
  auto add = [&](int64_t step, double accuracy) {
    lathe::v1::Checkpoint cp;
    cp.set_step(step);
    (*cp.mutable_metrics())["accuracy"] = accuracy;
    *cp.add_files() =
        Blob("config.json", "{\"step\":" + std::to_string(step) + "}");
    return checkpoints_->Record(job.id(), &cp);
  };
  ASSERT_TRUE(add(10, 0.5).ok());
  ASSERT_TRUE(add(20, 0.9).ok());
  ASSERT_TRUE(add(30, 0.7).ok());
  // keep=1: the latest and the best stay.
  auto listing = *checkpoints_->List(job.id());
  ASSERT_EQ(listing.checkpoints.size(), 2u);
  EXPECT_EQ(listing.best_step, 20);
  EXPECT_EQ(
      checkpoints_->ResolveFile(job.id(), "best", "config.json")->info.size(),
      std::string("{\"step\":20}").size());
  EXPECT_EQ(
      checkpoints_->ResolveFile(job.id(), "10", "config.json").status().code(),
      absl::StatusCode::kNotFound);
  auto model = checkpoints_->ModelFrom(job.id(), std::nullopt);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->origin(), "job:" + job.id() + "@20");
  // A file that was never uploaded is refused.
  lathe::v1::Checkpoint missing;
  missing.set_step(40);
  auto* f = missing.add_files();
  f->set_name("model.safetensors");
  f->set_sha256(std::string(64, 'b'));
  f->set_size(3);
  EXPECT_EQ(checkpoints_->Record(job.id(), &missing).code(),
            absl::StatusCode::kFailedPrecondition);
  lathe::v1::Checkpoint escape;
  *escape.add_files() = Blob("../x", "y");
  EXPECT_EQ(checkpoints_->Record(job.id(), &escape).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CorePartsTest, EventHubAnswersFromItsTailAndTheStore) {
  auto job = *submission_->Submit(Spec(), "");
  EventHub* hub = lifecycle_->events();
  // Nothing new yet: a bounded wait returns the job without events.
  auto none = hub->Wait(job.id(), 1, 10, absl::Milliseconds(1));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->second.empty());
  EXPECT_EQ(lifecycle_->Pause(job.id())->state(), lathe::v1::PAUSED);
  auto next = hub->Wait(job.id(), 1, 10, absl::ZeroDuration());
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->second.size(), 1u);
  EXPECT_EQ(next->second[0].seq(), 2);
  EXPECT_EQ(next->first.state(), lathe::v1::PAUSED);
  // A tail dropped after a failed write: readers fall back to the store.
  hub->Drop(job.id());
  auto all = hub->Wait(job.id(), 0, 10, absl::ZeroDuration());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->second.size(), 2u);
  EXPECT_EQ(hub->Wait("", 0, 1, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
  // After shutdown a listener is told the server is going away.
  struct Listener : EventListener {
    void OnJobChanged() override {}
  };
  auto listener = std::make_shared<Listener>();
  lifecycle_->Shutdown();
  EXPECT_EQ(hub->Poll(job.id(), 2, 10, listener).status().code(),
            absl::StatusCode::kUnavailable);
}

// ---- Gangs: jobs placed on several workers at once ----

class GangTest : public CorePartsTest {
 protected:
  // Workers with one CPU device each.
  void AddWorkers(std::initializer_list<std::string> ids) {
    for (const std::string& id : ids) {
      lathe::v1::Device d;
      d.set_name("cpu");
      workers_->Add(id, "name-" + id, {d});
    }
  }
  Job Submit(int devices, const std::string& owner = "alice") {
    auto spec = Spec();
    spec.mutable_resources()->set_device_count(devices);
    spec.set_owner(owner);
    auto job = submission_->Submit(spec, "");
    EXPECT_TRUE(job.ok()) << job.status();
    return *job;
  }
  std::optional<lathe::v1::Assignment> Poll(const std::string& worker) {
    auto a = lifecycle_->StartNext(worker, absl::ZeroDuration());
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : std::nullopt;
  }
  std::set<std::string> JobsHeldBy(const std::string& worker) {
    for (const auto& [info, seen] : workers_->Snapshot()) {
      if (info.id == worker) return info.jobs;
    }
    return {};
  }
  lathe::v1::JobState State(const Job& job) {
    return store_->GetJob(job.id())->state();
  }
};

TEST_F(GangTest, AGangIsPlacedAllOrNothing) {
  AddWorkers({"w1", "w2"});
  const Job job = Submit(2);
  // The first worker is held for the gang, and nothing starts yet.
  EXPECT_EQ(Poll("w1"), std::nullopt);
  EXPECT_EQ(State(job), lathe::v1::QUEUED);
  EXPECT_TRUE(JobsHeldBy("w1").empty());
  EXPECT_EQ(scheduler_.running("alice"), 0);
  // The second completes it: one attempt on both, ranks in arrival order.
  auto second = Poll("w2");
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->gang_member(), 1);
  ASSERT_EQ(second->gang_size(), 2);
  EXPECT_EQ(second->gang(0).worker_id(), "w1");
  EXPECT_EQ(second->gang(0).first_rank(), 0);
  EXPECT_EQ(second->gang(1).worker_id(), "w2");
  EXPECT_EQ(second->gang(1).first_rank(), 1);
  EXPECT_EQ(second->gang(1).device_count(), 1);
  auto stored = *store_->GetJob(job.id());
  EXPECT_EQ(stored.state(), lathe::v1::RUNNING);
  EXPECT_EQ(stored.worker_id(), "w1");
  EXPECT_EQ(stored.gang_size(), 2);
  EXPECT_EQ(scheduler_.running("alice"), 1);  // a gang is one running job
  EXPECT_EQ(JobsHeldBy("w1"), std::set<std::string>{job.id()});
  EXPECT_EQ(JobsHeldBy("w2"), std::set<std::string>{job.id()});
  // The first worker gets its part at its next poll.
  auto first = Poll("w1");
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->gang_member(), 0);
  EXPECT_EQ(first->attempt(), second->attempt());
  auto events = store_->EventsAfter(job.id(), 0, 100);
  ASSERT_TRUE(events.ok());
  bool placed = false;
  for (const auto& e : *events) {
    placed |= absl::StrContains(e.message(), "a gang of 2 workers") &&
              absl::StrContains(e.message(), "name-w2 (w2) rank 1");
  }
  EXPECT_TRUE(placed);
}

TEST_F(GangTest, MembersMeetAtTheRendezvousAndAFailedRankEndsTheAttempt) {
  AddWorkers({"w1", "w2", "w3"});
  const Job job = Submit(2);
  ASSERT_EQ(Poll("w1"), std::nullopt);
  ASSERT_TRUE(Poll("w2").has_value());
  ASSERT_TRUE(Poll("w1").has_value());
  // Rank 0's member must say where its store is; until it has joined, the
  // others learn nothing.
  EXPECT_EQ(*lifecycle_->JoinGang("w2", job.id(), 1, "", absl::ZeroDuration()),
            "");
  EXPECT_EQ(lifecycle_->JoinGang("w1", job.id(), 1, "", absl::ZeroDuration())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*lifecycle_->JoinGang("w1", job.id(), 1, "10.0.0.7:29500",
                                  absl::ZeroDuration()),
            "10.0.0.7:29500");
  EXPECT_EQ(*lifecycle_->JoinGang("w2", job.id(), 1, "", absl::ZeroDuration()),
            "10.0.0.7:29500");
  // Outsiders and stale attempts are refused.
  EXPECT_EQ(lifecycle_->JoinGang("w3", job.id(), 1, "", absl::ZeroDuration())
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(lifecycle_->JoinGang("w2", job.id(), 2, "", absl::ZeroDuration())
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  // A member other than rank 0's cannot end the attempt as a success, nor
  // can an outsider end it at all.
  EXPECT_EQ(lifecycle_
                ->FinishAttempt(job.id(), 1, lathe::v1::SUCCEEDED, "",
                                lathe::v1::FAILURE_KIND_UNSPECIFIED, "w2")
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(lifecycle_
                ->FinishAttempt(job.id(), 1, lathe::v1::FAILED, "x",
                                lathe::v1::FAILURE_KIND_CRASH, "w3")
                .code(),
            absl::StatusCode::kFailedPrecondition);
  // A failed rank on w2 ends the attempt for the whole gang, which goes
  // back to the queue after a backoff.
  ASSERT_TRUE(lifecycle_
                  ->FinishAttempt(job.id(), 1, lathe::v1::FAILED,
                                  "rank 1 (cpu) on worker name-w2 killed by "
                                  "signal 9; the whole gang stops",
                                  lathe::v1::FAILURE_KIND_CRASH, "w2")
                  .ok());
  EXPECT_EQ(State(job), lathe::v1::QUEUED);
  EXPECT_TRUE(JobsHeldBy("w1").empty());
  EXPECT_TRUE(JobsHeldBy("w2").empty());
  EXPECT_EQ(scheduler_.running("alice"), 0);
  // Rank 0's worker learns the attempt is over.
  EXPECT_EQ(lifecycle_->Report(job.id(), 1, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // The retry forms a gang from whoever is free: here w3 and w2.
  clock_.Advance(absl::ToInt64Milliseconds(lifecycle_->Backoff(1)));
  ASSERT_EQ(Poll("w3"), std::nullopt);
  auto retry = Poll("w2");
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(retry->attempt(), 2);
  EXPECT_EQ(retry->gang(0).worker_id(), "w3");
}

TEST_F(GangTest, PauseOfAGangIsNotAFailureOfItsOtherMembers) {
  AddWorkers({"w1", "w2"});
  const Job job = Submit(2);
  ASSERT_EQ(Poll("w1"), std::nullopt);
  ASSERT_TRUE(Poll("w2").has_value());
  ASSERT_TRUE(Poll("w1").has_value());
  ASSERT_EQ(lifecycle_->Pause(job.id())->state(), lathe::v1::PAUSING);
  // Both members hear it.
  EXPECT_EQ(lifecycle_->Heartbeat("w1")->pause.size(), 1u);
  EXPECT_EQ(lifecycle_->Heartbeat("w2")->pause.size(), 1u);
  // w2's ranks end when rank 0 stops: that changes nothing...
  ASSERT_TRUE(lifecycle_
                  ->FinishAttempt(job.id(), 1, lathe::v1::FAILED, "peer gone",
                                  lathe::v1::FAILURE_KIND_CRASH, "w2")
                  .ok());
  EXPECT_EQ(State(job), lathe::v1::PAUSING);
  // ...and rank 0's worker ends the attempt.
  ASSERT_TRUE(lifecycle_
                  ->FinishAttempt(job.id(), 1, lathe::v1::PAUSED, "",
                                  lathe::v1::FAILURE_KIND_UNSPECIFIED)
                  .ok());
  EXPECT_EQ(State(job), lathe::v1::PAUSED);
  EXPECT_TRUE(JobsHeldBy("w2").empty());
}

TEST_F(GangTest, AReservationEndsAndTheWorkersBackfill) {
  AddWorkers({"w1", "w2"});
  const Job busy = Submit(1, "carol");
  auto on_w2 = Poll("w2");
  ASSERT_TRUE(on_w2.has_value());
  ASSERT_EQ(on_w2->job_id(), busy.id());
  const Job gang = Submit(2);
  const Job small = Submit(1, "dave");
  // w1 waits for the gang rather than take the later job...
  EXPECT_EQ(Poll("w1"), std::nullopt);
  EXPECT_EQ(State(small), lathe::v1::QUEUED);
  // ...but not for ever: after the reservation it takes other work, and
  // the gang job keeps its place.
  clock_.Advance(
      absl::ToInt64Milliseconds(LifecycleOptions{}.gang_reservation));
  auto backfilled = Poll("w1");
  ASSERT_TRUE(backfilled.has_value());
  EXPECT_EQ(backfilled->job_id(), small.id());
  EXPECT_EQ(scheduler_.Position(gang.id()), 1);
  // Both workers free again after the backfill window: the gang forms.
  ASSERT_TRUE(lifecycle_
                  ->FinishAttempt(busy.id(), 1, lathe::v1::SUCCEEDED, "",
                                  lathe::v1::FAILURE_KIND_UNSPECIFIED)
                  .ok());
  ASSERT_TRUE(lifecycle_
                  ->FinishAttempt(small.id(), 1, lathe::v1::SUCCEEDED, "",
                                  lathe::v1::FAILURE_KIND_UNSPECIFIED)
                  .ok());
  clock_.Advance(
      absl::ToInt64Milliseconds(LifecycleOptions{}.gang_reservation));
  EXPECT_EQ(Poll("w2"), std::nullopt);
  auto formed = Poll("w1");
  ASSERT_TRUE(formed.has_value());
  EXPECT_EQ(formed->job_id(), gang.id());
  EXPECT_EQ(formed->gang(0).worker_id(), "w2");
}

TEST_F(GangTest, AGangTooBigForAllTheWorkersHoldsNone) {
  AddWorkers({"w1", "w2"});
  const Job huge = Submit(3);
  const Job small = Submit(1, "bob");
  // No two workers together have 3 devices: nobody is held for it.
  auto a = Poll("w1");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job_id(), small.id());
  EXPECT_EQ(State(huge), lathe::v1::QUEUED);
  EXPECT_EQ(Poll("w2"), std::nullopt);
}

TEST_F(GangTest, GangsKeepFairShare) {
  AddWorkers({"w1", "w2", "w3"});
  const Job running = Submit(1, "alice");
  ASSERT_EQ(Poll("w3")->job_id(), running.id());
  const Job alices = Submit(2, "alice");
  const Job bobs = Submit(2, "bob");
  // Bob has nothing running, so his gang goes first although it is newer.
  ASSERT_EQ(Poll("w1"), std::nullopt);
  auto formed = Poll("w2");
  ASSERT_TRUE(formed.has_value());
  EXPECT_EQ(formed->job_id(), bobs.id());
  EXPECT_EQ(State(alices), lathe::v1::QUEUED);
}

TEST_F(GangTest, AGangMemberThatGoesSilentRequeuesTheJob) {
  AddWorkers({"w1", "w2"});
  const Job job = Submit(2);
  ASSERT_EQ(Poll("w1"), std::nullopt);
  ASSERT_TRUE(Poll("w2").has_value());
  ASSERT_TRUE(Poll("w1").has_value());
  // w1 keeps beating; w2 goes quiet past the timeout.
  clock_.Advance(10000);
  ASSERT_TRUE(lifecycle_->Heartbeat("w1").ok());
  clock_.Advance(10000);
  lifecycle_->ExpireWorkers();
  EXPECT_EQ(State(job), lathe::v1::QUEUED);
  EXPECT_TRUE(JobsHeldBy("w1").empty());
  EXPECT_EQ(lifecycle_->Report(job.id(), 1, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace lathe::server
