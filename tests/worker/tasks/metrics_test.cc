// Metric code checked against values worked out by hand (the arithmetic is
// in the comments).
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/tasks/classification_metrics.h"
#include "worker/tasks/lm_metrics.h"
#include "worker/tasks/regression_metrics.h"
#include "worker/tasks/seqeval_metrics.h"
#include "worker/tasks/squad_metrics.h"

namespace lathe {
namespace {

constexpr double kEps = 1e-9;

// ---------------------------------------------------------------- classes

TEST(ClassificationMetricsTest, ThreeClassesOneNeverPredicted) {
  // gold 0 0 1 1 2 2, predicted 0 1 1 1 0 1; class 2 is never predicted.
  // confusion [gold][pred]: g0 = {1,1,0}, g1 = {0,2,0}, g2 = {1,1,0}.
  // class 0: tp 1 fp 1 fn 1 -> P 1/2, R 1/2, F1 1/2
  // class 1: tp 2 fp 2 fn 0 -> P 1/2, R 1,   F1 4/6 = 2/3
  // class 2: tp 0 fp 0 fn 2 -> P 0,   R 0,   F1 0
  const ClassificationMetrics m =
      ComputeClassificationMetrics({0, 1, 1, 1, 0, 1}, {0, 0, 1, 1, 2, 2}, 3);
  EXPECT_NEAR(m.accuracy, 3.0 / 6, kEps);
  EXPECT_NEAR(m.f1, (0.5 + 2.0 / 3 + 0) / 3, kEps);  // 7/18
  EXPECT_NEAR(m.precision, (0.5 + 0.5 + 0) / 3, kEps);
  EXPECT_NEAR(m.recall, (0.5 + 1 + 0) / 3, kEps);
  // Pooled: tp 3, fp 3, fn 3 -> 6 / (6 + 3 + 3).
  EXPECT_NEAR(m.f1_micro, 0.5, kEps);
  // MCC: s = 6, c = 3, gold counts t = (2,2,2), predicted p = (2,4,0).
  // t.p = 12, p.p = 20, t.t = 12 -> (3*6 - 12) / sqrt((36-20) * (36-12))
  // = 6 / sqrt(384).
  EXPECT_NEAR(m.mcc, 6.0 / std::sqrt(384.0), kEps);
  const std::vector<std::vector<int64_t>> confusion = {
      {1, 1, 0}, {0, 2, 0}, {1, 1, 0}};
  EXPECT_EQ(m.confusion, confusion);
}

TEST(ClassificationMetricsTest, BinaryMccMatchesTheTwoByTwoFormula) {
  // gold 1 1 0 0, predicted 1 0 0 0: TP 1, FN 1, TN 2, FP 0.
  // (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 2 / sqrt(12).
  const ClassificationMetrics m =
      ComputeClassificationMetrics({1, 0, 0, 0}, {1, 1, 0, 0}, 2);
  EXPECT_NEAR(m.mcc, 2.0 / std::sqrt(12.0), kEps);
  // class 0: tp 2 fp 1 fn 0 -> P 2/3 R 1; class 1: tp 1 fp 0 fn 1 -> P 1
  // R 1/2.
  EXPECT_NEAR(m.precision, (2.0 / 3 + 1) / 2, kEps);
  EXPECT_NEAR(m.recall, (1 + 0.5) / 2, kEps);
}

TEST(ClassificationMetricsTest, PerfectConstantAndEmpty) {
  const ClassificationMetrics perfect =
      ComputeClassificationMetrics({0, 1, 2}, {0, 1, 2}, 3);
  EXPECT_NEAR(perfect.mcc, 1.0, kEps);
  EXPECT_NEAR(perfect.f1, 1.0, kEps);
  // A constant prediction leaves MCC undefined (0/0): reported as 0.
  const ClassificationMetrics constant =
      ComputeClassificationMetrics({1, 1, 1}, {0, 1, 1}, 2);
  EXPECT_EQ(constant.mcc, 0.0);
  EXPECT_NEAR(constant.accuracy, 2.0 / 3, kEps);
  // A class absent on both sides still counts in the macro averages:
  // F1 (1 + 1 + 0) / 3.
  const ClassificationMetrics absent =
      ComputeClassificationMetrics({0, 1}, {0, 1}, 3);
  EXPECT_NEAR(absent.f1, 2.0 / 3, kEps);
  EXPECT_NEAR(absent.precision, 2.0 / 3, kEps);
  const ClassificationMetrics empty = ComputeClassificationMetrics({}, {}, 2);
  EXPECT_EQ(empty.accuracy, 0.0);
  EXPECT_EQ(empty.f1, 0.0);
  EXPECT_EQ(empty.mcc, 0.0);
  ASSERT_EQ(empty.confusion.size(), 2u);
  EXPECT_EQ(empty.confusion[1][1], 0);
}

TEST(TopKAccuracyTest, RanksWithTiesTowardsTheLowerIndex) {
  const std::vector<float> scores = {
      0.1f, 0.7f, 0.2f,  // gold 2: one class ahead
      0.5f, 0.3f, 0.2f,  // gold 0: first
      0.4f, 0.4f, 0.2f,  // gold 1: tied with class 0, which wins the tie
      0.6f, 0.3f, 0.1f,  // gold 2: last
  };
  const std::vector<int64_t> gold = {2, 0, 1, 2};
  EXPECT_NEAR(TopKAccuracy(scores, gold, 3, 1), 1.0 / 4, kEps);
  EXPECT_NEAR(TopKAccuracy(scores, gold, 3, 2), 3.0 / 4, kEps);
  EXPECT_NEAR(TopKAccuracy(scores, gold, 3, 3), 1.0, kEps);
  EXPECT_NEAR(TopKAccuracy(scores, gold, 3, 5), 1.0, kEps);
  EXPECT_EQ(TopKAccuracy({}, {}, 3, 1), 0.0);
  // Too few scores for the rows: refused, not read past the end.
  EXPECT_EQ(TopKAccuracy({0.1f, 0.2f}, {0, 1}, 3, 1), 0.0);
}

TEST(MultiLabelMetricsTest, ExactMatchAndMicroF1) {
  // gold  {0,2} {1} {} {0,1}
  // pred  {0,2} {1,2} {} {0}
  // exact: rows 0 and 2 -> 2/4.
  // label 0: tp 2;  label 1: tp 1 fn 1;  label 2: tp 1 fp 1.
  // micro: tp 4 fp 1 fn 1 -> 8 / 10; P = R = 4/5.
  // macro: (1 + 2/3 + 2/3) / 3 = 7/9.
  const std::vector<std::vector<uint8_t>> gold = {
      {1, 0, 1}, {0, 1, 0}, {0, 0, 0}, {1, 1, 0}};
  const std::vector<std::vector<uint8_t>> pred = {
      {1, 0, 1}, {0, 1, 1}, {0, 0, 0}, {1, 0, 0}};
  const MultiLabelMetrics m = ComputeMultiLabelMetrics(pred, gold, 3);
  EXPECT_NEAR(m.exact_match, 0.5, kEps);
  EXPECT_NEAR(m.f1_micro, 0.8, kEps);
  EXPECT_NEAR(m.precision_micro, 0.8, kEps);
  EXPECT_NEAR(m.recall_micro, 0.8, kEps);
  EXPECT_NEAR(m.f1_macro, 7.0 / 9, kEps);
}

TEST(MultiLabelMetricsTest, EmptySetsAndEmptyInput) {
  // Every row empty on both sides: exact match 1, micro F1 0/0 -> 0.
  const MultiLabelMetrics none =
      ComputeMultiLabelMetrics({{0, 0}, {0, 0}}, {{0, 0}, {0, 0}}, 2);
  EXPECT_EQ(none.exact_match, 1.0);
  EXPECT_EQ(none.f1_micro, 0.0);
  // Short rows read as zeros: {1} is {1, 0}.
  const MultiLabelMetrics short_rows =
      ComputeMultiLabelMetrics({{1}}, {{1, 0}}, 2);
  EXPECT_EQ(short_rows.exact_match, 1.0);
  EXPECT_EQ(short_rows.f1_micro, 1.0);
  EXPECT_EQ(ComputeMultiLabelMetrics({}, {}, 2).exact_match, 0.0);
}

// ------------------------------------------------------------- regression

TEST(RegressionMetricsTest, HandComputed) {
  // pred 1 2 3 4, gold 1 3 2 6: errors 0 -1 1 -2.
  // MSE (0+1+1+4)/4 = 1.5; MAE (0+1+1+2)/4 = 1.
  // Pearson: dx = -1.5 -.5 .5 1.5, dy = -2 0 -1 3 (mean 3);
  // sxy = 3 + 0 - .5 + 4.5 = 7, sxx = 5, syy = 14 -> 7 / sqrt(70).
  // Spearman: gold ranks 1 3 2 4; d = 0 -1 1 0 -> 1 - 6*2/(4*15) = 0.8.
  const RegressionMetrics m =
      ComputeRegressionMetrics({1, 2, 3, 4}, {1, 3, 2, 6});
  EXPECT_NEAR(m.mse, 1.5, kEps);
  EXPECT_NEAR(m.mae, 1.0, kEps);
  EXPECT_NEAR(m.pearson, 7.0 / std::sqrt(70.0), kEps);
  EXPECT_NEAR(m.spearman, 0.8, kEps);
}

TEST(RegressionMetricsTest, SpearmanAveragesTiedRanks) {
  EXPECT_EQ(AverageRanks({10, 20, 20, 30}),
            (std::vector<double>{1, 2.5, 2.5, 4}));
  EXPECT_EQ(AverageRanks({3, 1, 3, 3}), (std::vector<double>{3, 1, 3, 3}));
  // pred 1 2 2 3 -> ranks 1 2.5 2.5 4; gold 1 2 3 4 -> ranks 1 2 3 4.
  // Centred: -1.5 0 0 1.5 and -1.5 -.5 .5 1.5: sxy 4.5, sxx 4.5, syy 5
  // -> 4.5 / sqrt(22.5) = sqrt(0.9).
  const RegressionMetrics m =
      ComputeRegressionMetrics({1, 2, 2, 3}, {1, 2, 3, 4});
  EXPECT_NEAR(m.spearman, std::sqrt(0.9), kEps);
}

TEST(RegressionMetricsTest, UndefinedCorrelationsAreZero) {
  const RegressionMetrics constant =
      ComputeRegressionMetrics({2, 2, 2}, {1, 2, 3});
  EXPECT_EQ(constant.pearson, 0.0);
  EXPECT_EQ(constant.spearman, 0.0);
  EXPECT_NEAR(constant.mse, (1 + 0 + 1) / 3.0, kEps);
  const RegressionMetrics one = ComputeRegressionMetrics({5}, {3});
  EXPECT_EQ(one.pearson, 0.0);
  EXPECT_NEAR(one.mse, 4.0, kEps);
  EXPECT_NEAR(one.mae, 2.0, kEps);
  const RegressionMetrics empty = ComputeRegressionMetrics({}, {});
  EXPECT_EQ(empty.mse, 0.0);
  // Perfectly anti-correlated.
  EXPECT_NEAR(ComputeRegressionMetrics({1, 2, 3}, {3, 2, 1}).pearson, -1.0,
              kEps);
  // A NaN prediction does not break the ranking.
  const RegressionMetrics with_nan =
      ComputeRegressionMetrics({1, NAN, 3}, {1, 2, 3});
  EXPECT_TRUE(std::isnan(with_nan.mse));
}

// ----------------------------------------------------------------- seqeval

std::vector<TagEntity> E(std::vector<TagEntity> v) { return v; }

TEST(SeqevalTest, ExtractEntitiesFollowsTheChunkingRules) {
  EXPECT_EQ(ExtractEntities({"B-PER", "I-PER", "O", "B-LOC"}),
            E({{"PER", 0, 1}, {"LOC", 3, 3}}));
  // An I- tag after O starts an entity.
  EXPECT_EQ(ExtractEntities({"O", "I-PER", "I-PER"}), E({{"PER", 1, 2}}));
  // A change of type ends one entity and starts another, even on I-.
  EXPECT_EQ(ExtractEntities({"B-PER", "I-LOC"}),
            E({{"PER", 0, 0}, {"LOC", 1, 1}}));
  EXPECT_EQ(ExtractEntities({"I-PER", "I-LOC", "I-LOC"}),
            E({{"PER", 0, 0}, {"LOC", 1, 2}}));
  // Adjacent B- tags of one type are two entities.
  EXPECT_EQ(ExtractEntities({"B-PER", "B-PER"}),
            E({{"PER", 0, 0}, {"PER", 1, 1}}));
  // An entity "nested" inside another cannot be expressed in BIO: the inner
  // B- splits the outer one into three.
  EXPECT_EQ(ExtractEntities({"B-ORG", "I-ORG", "B-LOC", "I-ORG"}),
            E({{"ORG", 0, 1}, {"LOC", 2, 2}, {"ORG", 3, 3}}));
  // IOBES and a trailing entity.
  EXPECT_EQ(ExtractEntities({"S-PER", "B-LOC", "E-LOC", "O", "B-X"}),
            E({{"PER", 0, 0}, {"LOC", 1, 2}, {"X", 4, 4}}));
  // A type containing '-' keeps it; empty tags read as O.
  EXPECT_EQ(ExtractEntities({"B-NAT-ORG", "", "I-A"}),
            E({{"NAT-ORG", 0, 0}, {"A", 2, 2}}));
  EXPECT_TRUE(ExtractEntities({}).empty());
  EXPECT_TRUE(ExtractEntities({"O", "O"}).empty());
}

TEST(SeqevalTest, MicroAveragedEntityScores) {
  // Gold: MISC 3..5, PER 8..9 (the second sentence starts at 7 + 1).
  // Predicted: MISC 2..5 (wrong start), PER 8..9.
  // tp 1, predicted 2, gold 2 -> P = R = F1 = 1/2.
  // Tags: 10, of which 2 differ (positions 2 and 3) -> accuracy 8/10.
  const std::vector<std::vector<std::string>> gold = {
      {"O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"},
      {"B-PER", "I-PER", "O"}};
  const std::vector<std::vector<std::string>> pred = {
      {"O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"},
      {"B-PER", "I-PER", "O"}};
  auto m = ComputeSeqevalMetrics(gold, pred);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_NEAR(m->precision, 0.5, kEps);
  EXPECT_NEAR(m->recall, 0.5, kEps);
  EXPECT_NEAR(m->f1, 0.5, kEps);
  EXPECT_NEAR(m->accuracy, 0.8, kEps);
  EXPECT_EQ(m->per_type.at("PER").true_positives, 1);
  EXPECT_EQ(m->per_type.at("MISC").true_positives, 0);
  EXPECT_NEAR(m->per_type.at("PER").f1, 1.0, kEps);
}

TEST(SeqevalTest, WrongTypeAndUnequalCounts) {
  // Gold: PER 0..1, LOC 3; predicted: PER 0..1, ORG 3, ORG 4.
  // tp 1, predicted 3, gold 2: P 1/3, R 1/2, F1 2*(1/6)/(5/6) = 2/5.
  // Tags equal at 0, 1, 2 -> accuracy 3/5.
  auto m = ComputeSeqevalMetrics({{"B-PER", "I-PER", "O", "B-LOC", "O"}},
                                 {{"B-PER", "I-PER", "O", "B-ORG", "B-ORG"}});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_NEAR(m->precision, 1.0 / 3, kEps);
  EXPECT_NEAR(m->recall, 0.5, kEps);
  EXPECT_NEAR(m->f1, 0.4, kEps);
  EXPECT_NEAR(m->accuracy, 0.6, kEps);
  EXPECT_EQ(m->per_type.at("ORG").predicted, 2);
  EXPECT_EQ(m->per_type.at("LOC").gold, 1);
  EXPECT_EQ(m->overall.gold, 2);
}

TEST(SeqevalTest, SentencesDoNotJoinAndEdgeCases) {
  // "B-PER" ending one sentence and "I-PER" opening the next are two
  // entities; predicting the same tags scores 1.
  auto same =
      ComputeSeqevalMetrics({{"B-PER"}, {"I-PER"}}, {{"B-PER"}, {"I-PER"}});
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->overall.gold, 2);
  EXPECT_NEAR(same->f1, 1.0, kEps);
  // No entities anywhere: every score 0 (0/0), accuracy still counted.
  auto none = ComputeSeqevalMetrics({{"O", "O"}}, {{"O", "O"}});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->f1, 0.0);
  EXPECT_EQ(none->accuracy, 1.0);
  // Nothing at all.
  auto empty = ComputeSeqevalMetrics({}, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->f1, 0.0);
  EXPECT_EQ(empty->accuracy, 0.0);
  // Lengths must agree.
  EXPECT_EQ(ComputeSeqevalMetrics({{"O"}}, {{"O", "O"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ComputeSeqevalMetrics({{"O"}}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------- SQuAD

TEST(SquadMetricsTest, Normalisation) {
  // Lowercase, punctuation out, whole-word articles out, spaces collapsed.
  EXPECT_EQ(NormalizeSquadAnswer("The Quick, brown fox!"), "quick brown fox");
  EXPECT_EQ(NormalizeSquadAnswer("  An apple a day.  "), "apple day");
  EXPECT_EQ(NormalizeSquadAnswer("theater Anand"), "theater anand");
  // Punctuation goes first, so "a-the" becomes the word "athe".
  EXPECT_EQ(NormalizeSquadAnswer("a-the"), "athe");
  EXPECT_EQ(NormalizeSquadAnswer("Hello\tWorld\n"), "hello world");
  EXPECT_EQ(NormalizeSquadAnswer("the"), "");
  EXPECT_EQ(NormalizeSquadAnswer(""), "");
  // Non-ASCII letters are part of words: "à" is not an article.
  EXPECT_EQ(NormalizeSquadAnswer("caf\xc3\xa9 a \xc3\xa0"),
            "caf\xc3\xa9 \xc3\xa0");
}

TEST(SquadMetricsTest, ExactAndF1) {
  EXPECT_EQ(SquadExactMatch("The Eiffel Tower", "eiffel tower."), 1.0);
  EXPECT_EQ(SquadExactMatch("Eiffel Tower", "Tower"), 0.0);
  // gold tokens: cat sat on mat (4); predicted: cat on mat sat down (5);
  // 4 shared -> P 4/5, R 1 -> F1 2*0.8/1.8 = 8/9.
  EXPECT_NEAR(SquadF1("the cat sat on the mat", "cat on mat sat down"), 8.0 / 9,
              kEps);
  // Tokens count with multiplicity: gold x y y, predicted y y y share 2
  // -> P = R = 2/3.
  EXPECT_NEAR(SquadF1("x y y", "y y y"), 2.0 / 3, kEps);
  EXPECT_EQ(SquadF1("cat", "dog"), 0.0);
  // Either side empty after normalisation: 1 only when both are.
  EXPECT_EQ(SquadF1("", "the"), 1.0);
  EXPECT_EQ(SquadF1("", "cat"), 0.0);
  EXPECT_EQ(SquadF1("cat", ""), 0.0);
}

TEST(SquadMetricsTest, BestOverGoldAnswersAndNoAnswerQuestions) {
  const SquadMetrics m = ComputeSquadMetrics(
      {
          // Best of two answers: "the Broncos" matches "Broncos" exactly.
          {{"Denver Broncos", "Broncos"}, "the Broncos", 0},
          // No answer, empty prediction: 1.
          {{}, "", 0},
          // No answer, "the" normalises to nothing: 1.
          {{}, "the", 0},
          // No answer, a real prediction: 0.
          {{}, "London", 0},
      },
      false);
  EXPECT_EQ(m.total, 4);
  EXPECT_NEAR(m.exact, 3.0 / 4, kEps);
  EXPECT_NEAR(m.f1, 3.0 / 4, kEps);
  EXPECT_EQ(m.has_ans_total, 1);
  EXPECT_EQ(m.no_ans_total, 3);
  EXPECT_NEAR(m.has_ans_exact, 1.0, kEps);
  EXPECT_NEAR(m.no_ans_exact, 2.0 / 3, kEps);
  EXPECT_EQ(ComputeSquadMetrics({}, true).total, 0);
}

TEST(SquadMetricsTest, BestNoAnswerThreshold) {
  // q0 Paris/paris       EM 1 F1 1    no-answer score 0.1 (has answer)
  // q1 big red dog/red dog EM 0 F1 0.8 (P 1, R 2/3)  0.2 (has answer)
  // q2 no answer / ""    EM 1 F1 1    0.9
  // q3 no answer / London EM 0 F1 0   0.3
  // exact (1+0+1+0)/4 = 0.5, f1 (1+0.8+1+0)/4 = 0.7.
  const std::vector<SquadQuestion> qs = {
      {{"Paris"}, "paris", 0.1},
      {{"big red dog"}, "red dog", 0.2},
      {{}, "", 0.9},
      {{}, "London", 0.3},
  };
  const SquadMetrics m = ComputeSquadMetrics(qs, true);
  EXPECT_NEAR(m.exact, 0.5, kEps);
  EXPECT_NEAR(m.f1, 0.7, kEps);
  EXPECT_NEAR(m.has_ans_f1, 0.9, kEps);
  EXPECT_NEAR(m.no_ans_f1, 0.5, kEps);
  // Search: start with all "no answer" = 2 (the unanswerable ones).
  // By ascending score q0 (0.1), q1 (0.2), q3 (0.3), q2 (0.9).
  // EM: q0 +1 -> 3 (best, t 0.1); q1 +0 -> 3; q3 -1 -> 2; q2 +0 -> 2.
  // F1: q0 +1 -> 3 (t 0.1); q1 +0.8 -> 3.8 (best, t 0.2); q3 -1; q2 +0.
  EXPECT_NEAR(m.best_exact, 3.0 / 4, kEps);
  EXPECT_NEAR(m.best_exact_thresh, 0.1, kEps);
  EXPECT_NEAR(m.best_f1, 3.8 / 4, kEps);
  EXPECT_NEAR(m.best_f1_thresh, 0.2, kEps);
  // Nothing beats answering nothing: threshold stays 0.
  const ThresholdResult r = FindBestNoAnswerThreshold({{{}, "x", 0.5}}, {0.0});
  EXPECT_NEAR(r.score, 1.0, kEps);
  EXPECT_EQ(r.threshold, 0.0);
}

// --------------------------------------------------------------------- LM

TEST(LmMetricsTest, PerplexityAndTokenAccuracy) {
  EXPECT_NEAR(Perplexity(std::log(4.0)), 4.0, 1e-12);
  EXPECT_EQ(Perplexity(0), 1.0);
  EXPECT_TRUE(std::isfinite(Perplexity(1e6)));
  // Counted positions 0, 2, 3 (1 is ignored); right at 0 and 2 -> 2/3.
  EXPECT_NEAR(TokenAccuracy({1, 2, 3, 4}, {1, -100, 3, 5}), 2.0 / 3, kEps);
  EXPECT_EQ(TokenAccuracy({1}, {-100}), 0.0);
}

}  // namespace
}  // namespace lathe
