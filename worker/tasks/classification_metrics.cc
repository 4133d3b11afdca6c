#include "worker/tasks/classification_metrics.h"

#include <algorithm>

namespace lathe {

ClassificationMetrics ComputeClassificationMetrics(
    const std::vector<int64_t>& predicted, const std::vector<int64_t>& gold,
    int64_t num_labels) {
  ClassificationMetrics m;
  const size_t n = std::min(predicted.size(), gold.size());
  if (n == 0 || num_labels <= 0) return m;
  std::vector<int64_t> tp(num_labels, 0), fp(num_labels, 0), fn(num_labels, 0);
  int64_t correct = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t p = predicted[i], g = gold[i];
    if (p == g) {
      ++correct;
      if (g >= 0 && g < num_labels) ++tp[g];
    } else {
      if (p >= 0 && p < num_labels) ++fp[p];
      if (g >= 0 && g < num_labels) ++fn[g];
    }
  }
  m.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  double sum = 0;
  for (int64_t c = 0; c < num_labels; ++c) {
    const double denom = 2.0 * tp[c] + fp[c] + fn[c];
    sum += denom > 0 ? 2.0 * tp[c] / denom : 0.0;
  }
  m.f1 = sum / static_cast<double>(num_labels);
  return m;
}

}  // namespace lathe
