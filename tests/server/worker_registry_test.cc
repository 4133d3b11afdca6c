// Unit tests of the worker registry: validation, heartbeats (Touch), the
// jobs each worker holds, expiry and placeholders. The clock is a fake
// (tests/support/fake_clock.h); the metrics are real.
#include "server/core/worker_registry.h"

#include <gtest/gtest.h>

#include "tests/support/fake_clock.h"

namespace lathe::server {
namespace {

lathe::v1::Device Dev(const std::string& name, int64_t memory_mb = 0) {
  lathe::v1::Device d;
  d.set_name(name);
  d.set_memory_mb(memory_mb);
  return d;
}

TEST(WorkerRegistryTest, ValidationNamesTheField) {
  EXPECT_TRUE(WorkerRegistry::Validate("w", {Dev("cpu")}).ok());
  auto no_name = WorkerRegistry::Validate("", {Dev("cpu")});
  EXPECT_EQ(no_name.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(no_name.message().substr(0, 5), "name:");
  auto bad_device = WorkerRegistry::Validate("w", {Dev("tpu:0")});
  EXPECT_EQ(bad_device.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad_device.message().substr(0, 8), "devices:");
  EXPECT_FALSE(WorkerRegistry::Validate("w", {}).ok());
}

TEST(WorkerRegistryTest, TouchKeepsAWorkerAliveAndExpiryDropsIt) {
  Metrics metrics;
  FakeClock clock;
  WorkerRegistry registry(&metrics, clock.AsClock());
  registry.Add("w1", "one", {Dev("cpu")});
  registry.Add("w2", "two", {Dev("cpu")});
  registry.AddJob("w1", "job-a");
  clock.Advance(10000);
  ASSERT_TRUE(registry.Touch("w1").ok());
  clock.Advance(6000);
  auto gone = registry.Expire(15000);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].id, "w2");
  EXPECT_EQ(registry.size(), 1u);
  auto w1 = registry.Touch("w1");
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ(w1->jobs.count("job-a"), 1u);
  registry.RemoveJob("w1", "job-a");
  EXPECT_TRUE(registry.Touch("w1")->jobs.empty());
  EXPECT_EQ(registry.Touch("w2").status().code(), absl::StatusCode::kNotFound);
}

TEST(WorkerRegistryTest, APlaceholderHoldsItsJobsAndCanTakeNoWork) {
  Metrics metrics;
  FakeClock clock;
  WorkerRegistry registry(&metrics, clock.AsClock());
  registry.AddPlaceholder("w1", "job-a");
  registry.AddPlaceholder("w1", "job-b");
  auto w = registry.Touch("w1");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->jobs.size(), 2u);
  lathe::v1::Resources cpu;
  cpu.set_device_kind("cpu");
  EXPECT_FALSE(WorkerRegistry::Fits(w->devices, cpu));
}

TEST(WorkerRegistryTest, OwnedByNeverClaimsAStandIn) {
  Metrics metrics;
  FakeClock clock;
  WorkerRegistry registry(&metrics, clock.AsClock());
  registry.AddPlaceholder("w1", "job-a");
  // A gang member's credential asking about another member's stand-in
  // learns nothing and claims nothing...
  EXPECT_FALSE(registry.OwnedBy("w1", "other"));
  // ...so the stand-in's own worker still claims it.
  EXPECT_TRUE(registry.CheckOwner("w1", "owner").ok());
  EXPECT_TRUE(registry.OwnedBy("w1", "owner"));
  EXPECT_FALSE(registry.OwnedBy("w1", "other"));
  EXPECT_FALSE(registry.OwnedBy("unknown", "owner"));
}

TEST(WorkerRegistryTest, FitsCountsDevicesOfTheKindWithEnoughMemory) {
  lathe::v1::Resources two_gpus;
  two_gpus.set_device_kind("cuda");
  two_gpus.set_device_count(2);
  two_gpus.set_min_device_memory_mb(40000);
  EXPECT_TRUE(WorkerRegistry::Fits({Dev("cuda:0", 80000), Dev("cuda:1", 80000)},
                                   two_gpus));
  EXPECT_FALSE(WorkerRegistry::Fits(
      {Dev("cuda:0", 80000), Dev("cuda:1", 24000)}, two_gpus));
  EXPECT_FALSE(
      WorkerRegistry::Fits({Dev("cpu"), Dev("cuda:0", 80000)}, two_gpus));
  lathe::v1::Resources any;  // empty kind means cpu
  EXPECT_TRUE(WorkerRegistry::Fits({Dev("cpu")}, any));
}

}  // namespace
}  // namespace lathe::server
