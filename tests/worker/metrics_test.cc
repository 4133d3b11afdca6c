#include <gtest/gtest.h>

#include "worker/tasks/classification_metrics.h"

namespace lathe {
namespace {

TEST(ClassificationMetricsTest, KnownConfusion) {
  // gold:      0 0 0 0 1 1 1 2 2 2
  // predicted: 0 0 1 2 1 1 0 2 2 1
  // class 0: tp 2, fp 1, fn 2 -> F1 = 4/7
  // class 1: tp 2, fp 2, fn 1 -> F1 = 4/7
  // class 2: tp 2, fp 1, fn 1 -> F1 = 4/6
  const std::vector<int64_t> gold = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2};
  const std::vector<int64_t> pred = {0, 0, 1, 2, 1, 1, 0, 2, 2, 1};
  const ClassificationMetrics m = ComputeClassificationMetrics(pred, gold, 3);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.6);
  EXPECT_NEAR(m.f1, (4.0 / 7 + 4.0 / 7 + 4.0 / 6) / 3, 1e-12);
}

TEST(ClassificationMetricsTest, PerfectAndAbsentClass) {
  const ClassificationMetrics m =
      ComputeClassificationMetrics({0, 1}, {0, 1}, 3);
  EXPECT_DOUBLE_EQ(m.accuracy, 1.0);
  EXPECT_NEAR(m.f1, 2.0 / 3, 1e-12);  // Class 2 never occurs: F1 0.
}

TEST(ClassificationMetricsTest, EmptyInput) {
  const ClassificationMetrics m = ComputeClassificationMetrics({}, {}, 2);
  EXPECT_EQ(m.accuracy, 0);
  EXPECT_EQ(m.f1, 0);
}

}  // namespace
}  // namespace lathe
