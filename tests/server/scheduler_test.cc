// Unit tests of the scheduler's queue index: order (priority, fair share,
// age), placement, per-owner limits, backoff and positions. No store: the
// index is fed jobs as the lifecycle would feed it after each commit.
#include "server/core/scheduler.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace lathe::server {
namespace {

using lathe::v1::Device;
using lathe::v1::Job;

Job Queued(const std::string& id, const std::string& owner, int priority = 0,
           const std::string& kind = "cpu") {
  Job j;
  j.set_id(id);
  j.set_state(lathe::v1::QUEUED);
  j.mutable_spec()->set_owner(owner);
  j.mutable_spec()->set_priority(priority);
  j.mutable_spec()->mutable_resources()->set_device_kind(kind);
  j.mutable_spec()->mutable_resources()->set_device_count(1);
  return j;
}

std::vector<Device> Cpu() {
  Device d;
  d.set_name("cpu");
  return {d};
}

std::string PickFor(Scheduler& s, const std::vector<Device>& devices,
                    int64_t now = 1000) {
  int64_t next = 0;
  auto id = s.Pick(devices, now, &next);
  return id.value_or("");
}

// Marks the job as started, as the lifecycle does after its commit.
void Start(Scheduler& s, Job job, int64_t seq) {
  job.set_state(lathe::v1::RUNNING);
  s.Update(job, seq);
}

TEST(SchedulerTest, OldestFirstWithinAPriority) {
  Scheduler s({});
  s.Update(Queued("b", "ann"), 2);
  s.Update(Queued("a", "ann"), 1);
  s.Update(Queued("c", "ann"), 3);
  EXPECT_EQ(PickFor(s, Cpu()), "a");
  EXPECT_EQ(s.Position("a"), 1);
  EXPECT_EQ(s.Position("b"), 2);
  EXPECT_EQ(s.Position("c"), 3);
  EXPECT_EQ(s.Position("unknown"), 0);
  EXPECT_EQ(s.Positions({"c", "unknown", "a", "c"}),
            (std::vector<int64_t>{3, 0, 1, 3}));
}

TEST(SchedulerTest, HigherPriorityGoesFirst) {
  Scheduler s({});
  s.Update(Queued("old", "ann", 0), 1);
  s.Update(Queued("urgent", "ann", 5), 2);
  EXPECT_EQ(PickFor(s, Cpu()), "urgent");
  EXPECT_EQ(s.Position("urgent"), 1);
  EXPECT_EQ(s.Position("old"), 2);
}

TEST(SchedulerTest, TheOwnerWithFewerRunningJobsGoesFirst) {
  Scheduler s({});
  s.Update(Queued("ann-1", "ann"), 1);
  s.Update(Queued("ann-2", "ann"), 2);
  s.Update(Queued("bob-1", "bob"), 3);
  Start(s, Queued("ann-1", "ann"), 1);
  EXPECT_EQ(s.running("ann"), 1);
  // ann-2 is older, but ann already runs a job and bob none.
  EXPECT_EQ(PickFor(s, Cpu()), "bob-1");
}

TEST(SchedulerTest, OwnersAtTheirLimitWait) {
  Scheduler s(SchedulerOptions{1});
  s.Update(Queued("ann-1", "ann"), 1);
  s.Update(Queued("ann-2", "ann"), 2);
  Start(s, Queued("ann-1", "ann"), 1);
  EXPECT_EQ(PickFor(s, Cpu()), "");
  // The running job finishes: ann may run again.
  Job done = Queued("ann-1", "ann");
  done.set_state(lathe::v1::SUCCEEDED);
  s.Update(done, 1);
  EXPECT_EQ(s.running("ann"), 0);
  EXPECT_EQ(PickFor(s, Cpu()), "ann-2");
}

TEST(SchedulerTest, JobsGoOnlyToWorkersWithTheirDevices) {
  Scheduler s({});
  s.Update(Queued("gpu-job", "ann", 0, "cuda"), 1);
  EXPECT_EQ(PickFor(s, Cpu()), "");
  Device gpu;
  gpu.set_name("cuda:0");
  gpu.set_memory_mb(80000);
  EXPECT_EQ(PickFor(s, {gpu}), "gpu-job");
  // A job that needs more memory than the device has waits.
  Job big = Queued("big", "ann", 9, "cuda");
  big.mutable_spec()->mutable_resources()->set_min_device_memory_mb(100000);
  s.Update(big, 2);
  EXPECT_EQ(PickFor(s, {gpu}), "gpu-job");
}

TEST(SchedulerTest, JobsInBackoffWaitUntilTheirTime) {
  Scheduler s({});
  Job retry = Queued("retry", "ann");
  retry.set_not_before_ms(5000);
  s.Update(retry, 1);
  int64_t next = 0;
  EXPECT_FALSE(s.Pick(Cpu(), 1000, &next).has_value());
  EXPECT_EQ(next, 5000);
  EXPECT_EQ(s.Position("retry"), 1);  // counted in the queue meanwhile
  EXPECT_EQ(PickFor(s, Cpu(), 5000), "retry");
}

TEST(SchedulerTest, LeavingTheQueueRemovesEveryTrace) {
  Scheduler s({});
  s.Update(Queued("a", "ann"), 1);
  s.Update(Queued("b", "bob", 3), 2);
  Job cancelled = Queued("b", "bob", 3);
  cancelled.set_state(lathe::v1::CANCELLED);
  s.Update(cancelled, 2);
  EXPECT_EQ(s.queued(), 1u);
  EXPECT_EQ(s.Position("b"), 0);
  EXPECT_EQ(PickFor(s, Cpu()), "a");
  // A changed priority re-indexes the job.
  s.Update(Queued("a", "ann", 7), 1);
  EXPECT_EQ(s.queued(), 1u);
  EXPECT_EQ(PickFor(s, Cpu()), "a");
}

TEST(SchedulerTest, RebuildReplacesTheIndex) {
  Scheduler s(SchedulerOptions{1});
  s.Update(Queued("stale", "ann"), 1);
  Job running = Queued("r", "ann");
  running.set_state(lathe::v1::RUNNING);
  s.Rebuild({Queued("x", "ann"), Queued("y", "bob")}, {10, 11}, {running});
  EXPECT_EQ(s.queued(), 2u);
  EXPECT_EQ(s.Position("stale"), 0);
  EXPECT_EQ(s.running("ann"), 1);
  // ann is at the limit, so bob's newer job goes first.
  EXPECT_EQ(PickFor(s, Cpu()), "y");
}

TEST(SchedulerTest, APickFindsItsJobBehindAHundredThousandOthers) {
  // 100,000 queued jobs that need a GPU and one CPU job behind them: the
  // CPU worker gets its job and its position counts every job ahead. How
  // long the pick takes is measured by the control benchmark, not here.
  Scheduler s({});
  for (int i = 0; i < 100000; ++i) {
    s.Update(Queued("gpu-" + std::to_string(i), "team-" + std::to_string(i % 8),
                    0, "cuda"),
             i + 1);
  }
  s.Update(Queued("cpu-job", "ann"), 100001);
  EXPECT_EQ(PickFor(s, Cpu()), "cpu-job");
  EXPECT_EQ(s.Position("cpu-job"), 100001);
}

}  // namespace
}  // namespace lathe::server
