#include "worker/tasks/lm_metrics.h"

#include <algorithm>
#include <cmath>

namespace lathe {

double Perplexity(double mean_loss) {
  if (std::isnan(mean_loss)) return mean_loss;
  return std::exp(std::min(mean_loss, 700.0));
}

double TokenAccuracy(const std::vector<int64_t>& predicted,
                     const std::vector<int64_t>& gold, int64_t ignore_index) {
  const size_t n = std::min(predicted.size(), gold.size());
  int64_t counted = 0, right = 0;
  for (size_t i = 0; i < n; ++i) {
    if (gold[i] == ignore_index) continue;
    ++counted;
    if (predicted[i] == gold[i]) ++right;
  }
  return counted > 0 ? static_cast<double>(right) / counted : 0.0;
}

}  // namespace lathe
