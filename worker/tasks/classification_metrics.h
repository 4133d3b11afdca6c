// Classification metrics from label indices. No LibTorch.
#ifndef LATHE_WORKER_TASKS_CLASSIFICATION_METRICS_H_
#define LATHE_WORKER_TASKS_CLASSIFICATION_METRICS_H_

#include <cstdint>
#include <vector>

namespace lathe {

struct ClassificationMetrics {
  double accuracy = 0;  // Fraction of rows predicted right.
  double f1 = 0;        // Macro F1 over classes [0, num_labels).
};

// `predicted` and `gold` have equal length, entries in [0, num_labels). A
// class with no gold and no predicted rows scores F1 = 0 but, like
// scikit-learn's f1_score(average="macro", labels=range(num_labels)), still
// counts in the average. Empty input gives zeros.
ClassificationMetrics ComputeClassificationMetrics(
    const std::vector<int64_t>& predicted, const std::vector<int64_t>& gold,
    int64_t num_labels);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_CLASSIFICATION_METRICS_H_
