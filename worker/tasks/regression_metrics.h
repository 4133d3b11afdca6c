// Regression metrics over predicted and gold values. No LibTorch.
#ifndef LATHE_WORKER_TASKS_REGRESSION_METRICS_H_
#define LATHE_WORKER_TASKS_REGRESSION_METRICS_H_

#include <vector>

namespace lathe {

struct RegressionMetrics {
  double mse = 0;  // Mean squared error.
  double mae = 0;  // Mean absolute error.
  // Pearson's r. Undefined (fewer than two rows, or either side constant)
  // is reported as 0 rather than NaN, which JSON cannot carry.
  double pearson = 0;
  // Spearman's rho: Pearson's r of the ranks, tied values sharing the mean
  // of the ranks they span (as scipy.stats.spearmanr). Undefined -> 0.
  double spearman = 0;
};

// Rows beyond the shorter vector are ignored; empty input gives zeros. A
// NaN input makes mse and mae NaN (the caller decides how to report it).
RegressionMetrics ComputeRegressionMetrics(const std::vector<double>& predicted,
                                           const std::vector<double>& gold);

// 1-based ranks of `values`, ties given the average of their ranks
// ({10, 20, 20, 30} -> {1, 2.5, 2.5, 4}).
std::vector<double> AverageRanks(const std::vector<double>& values);

// Pearson's r of two equally long vectors; 0 when undefined.
double PearsonCorrelation(const std::vector<double>& x,
                          const std::vector<double>& y);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_REGRESSION_METRICS_H_
