#include "client/metrics_text.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace lathe::client {
namespace {

using ::testing::ElementsAre;

// What a text classifier reports on two labels.
const std::map<std::string, double> kClassifier = {
    {"accuracy", 0.93750000000000011},
    {"f1", 0.93725490196078431},
    {"f1_micro", 0.9375},
    {"precision", 0.94117647058823528},
    {"recall", 0.9375},
    {"mcc", 0.87904907299111},
    {"loss", 0.21541234},
    {"confusion_matrix/ham/ham", 15},
    {"confusion_matrix/ham/spam", 1},
    {"confusion_matrix/spam/ham", 1},
    {"confusion_matrix/spam/spam", 15},
};

TEST(MetricsTextTest, FourSignificantDigits) {
  EXPECT_EQ(FormatMetric(0.93750000000000011), "0.9375");
  EXPECT_EQ(FormatMetric(0.21541234), "0.2154");
  EXPECT_EQ(FormatMetric(16), "16");
  EXPECT_EQ(FormatMetric(1234567), "1.235e+06");
  EXPECT_EQ(FormatMetric(0.000123456), "0.0001235");
}

TEST(MetricsTextTest, HeadlineStartsWithTheTasksMetric) {
  EXPECT_EQ(HeadlineMetricsText("text-classification", "", kClassifier),
            "accuracy 0.9375  loss 0.2154  f1 0.9373  precision 0.9412  "
            "recall 0.9375  mcc 0.879  (+1 more: --output json)");
  // metric_for_best_model goes first.
  EXPECT_EQ(HeadlineMetricsText("text-classification", "mcc", kClassifier),
            "mcc 0.879  loss 0.2154  accuracy 0.9375  f1 0.9373  precision "
            "0.9412  recall 0.9375  (+1 more: --output json)");
  // A column: the first few, no note.
  EXPECT_EQ(HeadlineMetricsText("text-classification", "", kClassifier, 2),
            "accuracy 0.9375  loss 0.2154");
  EXPECT_THAT(HeadlineMetricNames("text-regression", "",
                                  {{"mse", 1}, {"mae", 1}, {"loss", 1}}),
              ElementsAre("mse", "loss", "mae"));
  EXPECT_THAT(
      HeadlineMetricNames("causal-lm", "", {{"perplexity", 3}, {"loss", 1.1}}),
      ElementsAre("loss", "perplexity"));
  // A DPO job (causal-lm) shows its rewards.
  EXPECT_THAT(HeadlineMetricNames("causal-lm", "",
                                  {{"loss", 0.3},
                                   {"reward_accuracy", 0.9},
                                   {"reward_margin", 1.2},
                                   {"chosen_reward", 0.4}}),
              ElementsAre("loss", "reward_accuracy", "reward_margin"));
  // Multi-label text classification ranks by f1_micro.
  EXPECT_THAT(HeadlineMetricNames(
                  "text-classification", "",
                  {{"exact_match", 0.5}, {"f1_micro", 0.7}, {"loss", 0.3}}),
              ElementsAre("f1_micro", "loss", "exact_match"));
}

TEST(MetricsTextTest, UnknownTaskShowsEveryScalar) {
  EXPECT_EQ(HeadlineMetricsText("", "", {{"b", 2}, {"a", 1}}), "a 1  b 2");
  EXPECT_EQ(HeadlineMetricsText("", "", {}), "");
}

TEST(MetricsTextTest, ConfusionMatrixByLabel) {
  EXPECT_THAT(
      ConfusionMatrixLines(kClassifier, "  "),
      ElementsAre("  confusion matrix (rows: true label, columns: predicted)",
                  "           ham  spam", "    ham     15     1",
                  "    spam     1    15"));
  EXPECT_TRUE(ConfusionMatrixLines({{"accuracy", 1}}, "").empty());
}

TEST(MetricsTextTest, ConfusionMatrixLabelsAreDecodedAndOrdered) {
  const auto lines = ConfusionMatrixLines({{"confusion_matrix/10/10", 3},
                                           {"confusion_matrix/10/9", 0},
                                           {"confusion_matrix/9/10", 1},
                                           {"confusion_matrix/9/9", 2}},
                                          "");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[1], "       9  10");  // numerically: 9 before 10
  EXPECT_EQ(lines[2], "  9    2   1");
  const auto slashed = ConfusionMatrixLines(
      {{"confusion_matrix/a%2Fb/a%2Fb", 1}, {"confusion_matrix/a%2Fb/c%25", 2}},
      "");
  ASSERT_EQ(slashed.size(), 4u);
  EXPECT_EQ(slashed[1], "       a/b   c%");
  EXPECT_EQ(slashed[3], "  c%     -    -");
}

TEST(MetricsTextTest, ConfusionMatrixByClassIndex) {
  EXPECT_THAT(ConfusionMatrixLines({{"confusion_matrix.0.0", 4},
                                    {"confusion_matrix.0.1", 1},
                                    {"confusion_matrix.1.0", 0},
                                    {"confusion_matrix.1.1", 5}},
                                   ""),
              ElementsAre("confusion matrix (rows: true class index, columns: "
                          "predicted)",
                          "     0  1", "  0  4  1", "  1  0  5"));
}

}  // namespace
}  // namespace lathe::client
