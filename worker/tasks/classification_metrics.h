// Classification metrics from label indices (single-label), class scores
// (top-k) and label indicator sets (multi-label). No LibTorch.
//
// Conventions follow scikit-learn with labels=range(num_labels) and
// zero_division=0: a ratio whose denominator is zero counts as 0, and every
// class in [0, num_labels) counts in a macro average, even one that occurs
// neither in the gold labels nor in the predictions.
#ifndef LATHE_WORKER_TASKS_CLASSIFICATION_METRICS_H_
#define LATHE_WORKER_TASKS_CLASSIFICATION_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace lathe {

struct ClassificationMetrics {
  double accuracy = 0;   // Fraction of rows predicted right.
  double f1 = 0;         // Macro F1 over classes [0, num_labels).
  double f1_micro = 0;   // F1 of the pooled counts (equals accuracy here).
  double precision = 0;  // Macro precision.
  double recall = 0;     // Macro recall.
  // Matthews correlation coefficient, multi-class form (Gorodkin's R_K, as
  // scikit-learn's matthews_corrcoef); 0 when undefined (a constant gold
  // or predicted column).
  double mcc = 0;
  // confusion[g][p]: rows with gold class g predicted as p; num_labels x
  // num_labels (empty when num_labels <= 0).
  std::vector<std::vector<int64_t>> confusion;
};

// `predicted` and `gold` have equal length (extra entries of the longer one
// are ignored), entries in [0, num_labels); an entry out of range counts as
// wrong and is left out of the confusion matrix and the per-class counts.
// Empty input gives zeros (and an all-zero confusion matrix).
ClassificationMetrics ComputeClassificationMetrics(
    const std::vector<int64_t>& predicted, const std::vector<int64_t>& gold,
    int64_t num_labels);

// Fraction of rows whose gold class is among the k highest scores of the
// row. `scores` is row-major [gold.size() x num_labels]. Ties are broken
// towards the lower class index (as a stable descending sort would), so a
// gold class tied with others counts only if it wins that order. k >=
// num_labels gives 1. Empty input, k <= 0 or a short `scores` give 0.
double TopKAccuracy(const std::vector<float>& scores,
                    const std::vector<int64_t>& gold, int64_t num_labels,
                    int64_t k);

struct MultiLabelMetrics {
  double exact_match = 0;  // Subset accuracy: rows whose sets are equal.
  double f1_micro = 0;     // F1 over every (row, label) cell pooled.
  double precision_micro = 0;
  double recall_micro = 0;
  double f1_macro = 0;  // Mean over labels of each label's F1.
};

// `predicted` and `gold` hold one indicator row per example (1 = label
// present), each row of length num_labels; missing cells count as 0 and
// cells past num_labels are ignored. Rows beyond the shorter list are
// ignored. Empty input gives zeros.
MultiLabelMetrics ComputeMultiLabelMetrics(
    const std::vector<std::vector<uint8_t>>& predicted,
    const std::vector<std::vector<uint8_t>>& gold, int64_t num_labels);

// One row's prediction as a single-label classifier reports it: `field`
// (the input's name, e.g. "image") = `input`, "label" the most likely class
// and "probabilities" each class's, classes named by `labels` (LABEL_i past
// its end).
nlohmann::json DescribePrediction(const std::string& field,
                                  const std::string& input,
                                  const float* probabilities, int64_t classes,
                                  const std::vector<std::string>& labels);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_CLASSIFICATION_METRICS_H_
