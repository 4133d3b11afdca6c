// SQuAD v1.1 / v2.0 answer metrics as the official evaluation scripts
// compute them, on a 0..1 scale (the scripts print 100 times these). No
// LibTorch.
//
// Normalisation: lowercase, drop ASCII punctuation (Python's
// string.punctuation), replace the words "a", "an" and "the" with a space,
// then collapse whitespace. Lowercasing is ASCII-only, and bytes of UTF-8
// sequences count as word characters for the article rule; the official
// script also lowercases other scripts, so answers that differ only in
// non-ASCII case compare unequal here.
#ifndef LATHE_WORKER_TASKS_SQUAD_METRICS_H_
#define LATHE_WORKER_TASKS_SQUAD_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace lathe {

std::string NormalizeSquadAnswer(const std::string& s);

// 1 if the normalised strings are equal, else 0.
double SquadExactMatch(const std::string& gold, const std::string& predicted);

// Token F1 of the normalised, whitespace-split answers (tokens counted with
// multiplicity). When either side has no tokens the score is 1 if both have
// none, else 0.
double SquadF1(const std::string& gold, const std::string& predicted);

struct SquadQuestion {
  // Gold answer texts; an empty list means the question has no answer
  // (SQuAD v2.0). For scoring, answers that normalise to nothing are
  // dropped, and when none remain only a prediction that normalises to
  // nothing scores 1.
  std::vector<std::string> gold_answers;
  std::string prediction;  // Empty: the model predicts "no answer".
  // The model's no-answer score (a probability or the null-minus-best span
  // score difference): larger means "no answer" is more likely. Read only
  // for the threshold search.
  double no_answer_score = 0;
};

struct SquadMetrics {
  // Best over the gold answers, averaged over questions.
  double exact = 0;
  double f1 = 0;
  int64_t total = 0;
  // Questions with an answer and without one (v2.0 breakdown); a group
  // with no questions reports 0.
  double has_ans_exact = 0, has_ans_f1 = 0;
  int64_t has_ans_total = 0;
  double no_ans_exact = 0, no_ans_f1 = 0;
  int64_t no_ans_total = 0;
  // Set when ComputeSquadMetrics was asked to search thresholds: the best
  // score over thresholds on no_answer_score (questions scoring above the
  // threshold are answered "no answer"), and the threshold reaching it.
  double best_exact = 0, best_exact_thresh = 0;
  double best_f1 = 0, best_f1_thresh = 0;
};

// Scores every question as given. With `search_threshold`, also runs the
// official v2.0 best-threshold search over no_answer_score (see
// FindBestNoAnswerThreshold). Empty input gives zeros.
SquadMetrics ComputeSquadMetrics(const std::vector<SquadQuestion>& questions,
                                 bool search_threshold);

struct ThresholdResult {
  double score = 0;      // Mean score at the best threshold (0..1).
  double threshold = 0;  // 0 when no threshold beats answering nothing.
};

// The official script's find_best_thresh: start with every question
// answered "no answer" (scoring 1 for each unanswerable one), then visit the
// questions by ascending no-answer score (stably, in input order on ties),
// switching each to its prediction: an answerable question gains its
// score, an unanswerable one loses 1 if the prediction is non-empty. The
// threshold is the no-answer score of the question after which the running
// total was highest (the first such question on ties). `scores[i]` is
// question i's exact or F1 score as predicted.
ThresholdResult FindBestNoAnswerThreshold(
    const std::vector<SquadQuestion>& questions,
    const std::vector<double>& scores);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_SQUAD_METRICS_H_
