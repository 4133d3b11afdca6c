#include "worker/tasks/regression_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lathe {

std::vector<double> AverageRanks(const std::vector<double>& values) {
  const size_t n = values.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  // NaN sorts after every number so that the order stays a strict weak
  // ordering; each NaN then ranks alone (NaN == NaN is false).
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const bool a_nan = std::isnan(values[a]), b_nan = std::isnan(values[b]);
    if (a_nan || b_nan) return !a_nan && b_nan;
    return values[a] < values[b];
  });
  std::vector<double> ranks(n, 0.0);
  size_t i = 0;
  while (i < n) {
    size_t j = i + 1;
    while (j < n && values[order[j]] == values[order[i]]) ++j;
    // Positions i..j-1 hold equal values: ranks i+1..j, mean (i+1+j)/2.
    const double mean_rank = (static_cast<double>(i + 1 + j)) / 2.0;
    for (size_t t = i; t < j; ++t) ranks[order[t]] = mean_rank;
    i = j;
  }
  return ranks;
}

double PearsonCorrelation(const std::vector<double>& x,
                          const std::vector<double>& y) {
  const size_t n = std::min(x.size(), y.size());
  if (n < 2) return 0.0;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  // Centred sums: more accurate than the one-pass sum-of-squares formula.
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    const double dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (!(sxx > 0) || !(syy > 0)) return 0.0;
  const double r = sxy / std::sqrt(sxx * syy);
  if (!std::isfinite(r)) return 0.0;
  // Rounding can push |r| a hair past 1.
  return std::max(-1.0, std::min(1.0, r));
}

RegressionMetrics ComputeRegressionMetrics(const std::vector<double>& predicted,
                                           const std::vector<double>& gold) {
  RegressionMetrics m;
  const size_t n = std::min(predicted.size(), gold.size());
  if (n == 0) return m;
  std::vector<double> p(predicted.begin(), predicted.begin() + n);
  std::vector<double> g(gold.begin(), gold.begin() + n);
  double se = 0, ae = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = p[i] - g[i];
    se += d * d;
    ae += std::fabs(d);
  }
  m.mse = se / static_cast<double>(n);
  m.mae = ae / static_cast<double>(n);
  m.pearson = PearsonCorrelation(p, g);
  m.spearman = PearsonCorrelation(AverageRanks(p), AverageRanks(g));
  return m;
}

}  // namespace lathe
