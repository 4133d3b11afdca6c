#include "worker/tasks/classification_metrics.h"

#include <algorithm>
#include <cmath>

namespace lathe {
namespace {

double Ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

double F1(double tp, double fp, double fn) {
  return Ratio(2.0 * tp, 2.0 * tp + fp + fn);
}

}  // namespace

ClassificationMetrics ComputeClassificationMetrics(
    const std::vector<int64_t>& predicted, const std::vector<int64_t>& gold,
    int64_t num_labels) {
  ClassificationMetrics m;
  if (num_labels <= 0) return m;
  const size_t k = static_cast<size_t>(num_labels);
  m.confusion.assign(k, std::vector<int64_t>(k, 0));
  const size_t n = std::min(predicted.size(), gold.size());
  if (n == 0) return m;
  std::vector<int64_t> tp(k, 0), fp(k, 0), fn(k, 0);
  int64_t correct = 0;
  auto in_range = [num_labels](int64_t c) { return c >= 0 && c < num_labels; };
  for (size_t i = 0; i < n; ++i) {
    const int64_t p = predicted[i], g = gold[i];
    if (in_range(p) && in_range(g)) ++m.confusion[g][p];
    if (p == g && in_range(g)) {
      ++correct;
      ++tp[g];
    } else {
      if (in_range(p)) ++fp[p];
      if (in_range(g)) ++fn[g];
    }
  }
  m.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  double f1_sum = 0, p_sum = 0, r_sum = 0;
  int64_t tp_all = 0, fp_all = 0, fn_all = 0;
  for (size_t c = 0; c < k; ++c) {
    f1_sum += F1(tp[c], fp[c], fn[c]);
    p_sum += Ratio(tp[c], tp[c] + fp[c]);
    r_sum += Ratio(tp[c], tp[c] + fn[c]);
    tp_all += tp[c];
    fp_all += fp[c];
    fn_all += fn[c];
  }
  m.f1 = f1_sum / static_cast<double>(k);
  m.precision = p_sum / static_cast<double>(k);
  m.recall = r_sum / static_cast<double>(k);
  m.f1_micro = F1(tp_all, fp_all, fn_all);

  // Multi-class MCC from the confusion matrix C (s = rows counted, c =
  // trace, t = gold counts per class, p = predicted counts per class):
  //   (c*s - t.p) / sqrt((s^2 - p.p) * (s^2 - t.t)).
  // Counted in doubles: products of row counts overflow no sooner than 2^53.
  double s = 0, c = 0, tp_dot = 0, pp_dot = 0, tt_dot = 0;
  std::vector<double> t_sum(k, 0), p_sum_col(k, 0);
  for (size_t g = 0; g < k; ++g) {
    for (size_t p = 0; p < k; ++p) {
      const double v = static_cast<double>(m.confusion[g][p]);
      t_sum[g] += v;
      p_sum_col[p] += v;
      s += v;
      if (g == p) c += v;
    }
  }
  for (size_t i = 0; i < k; ++i) {
    tp_dot += t_sum[i] * p_sum_col[i];
    pp_dot += p_sum_col[i] * p_sum_col[i];
    tt_dot += t_sum[i] * t_sum[i];
  }
  const double cov_pp = s * s - pp_dot, cov_tt = s * s - tt_dot;
  if (cov_pp > 0 && cov_tt > 0) {
    m.mcc = (c * s - tp_dot) / std::sqrt(cov_pp * cov_tt);
  }
  return m;
}

double TopKAccuracy(const std::vector<float>& scores,
                    const std::vector<int64_t>& gold, int64_t num_labels,
                    int64_t k) {
  if (gold.empty() || k <= 0 || num_labels <= 0 ||
      scores.size() < gold.size() * static_cast<size_t>(num_labels)) {
    return 0.0;
  }
  int64_t hits = 0;
  for (size_t i = 0; i < gold.size(); ++i) {
    const int64_t g = gold[i];
    if (g < 0 || g >= num_labels) continue;
    const float* row = scores.data() + i * static_cast<size_t>(num_labels);
    // Rank of the gold class: classes that come before it in a stable
    // descending order (higher score, or equal score and lower index).
    int64_t ahead = 0;
    for (int64_t c = 0; c < num_labels; ++c) {
      if (row[c] > row[g] || (row[c] == row[g] && c < g)) ++ahead;
    }
    if (ahead < k) ++hits;
  }
  return static_cast<double>(hits) / static_cast<double>(gold.size());
}

MultiLabelMetrics ComputeMultiLabelMetrics(
    const std::vector<std::vector<uint8_t>>& predicted,
    const std::vector<std::vector<uint8_t>>& gold, int64_t num_labels) {
  MultiLabelMetrics m;
  const size_t n = std::min(predicted.size(), gold.size());
  if (n == 0 || num_labels <= 0) return m;
  const size_t k = static_cast<size_t>(num_labels);
  std::vector<int64_t> tp(k, 0), fp(k, 0), fn(k, 0);
  int64_t exact = 0;
  for (size_t i = 0; i < n; ++i) {
    bool same = true;
    for (size_t c = 0; c < k; ++c) {
      const bool p = c < predicted[i].size() && predicted[i][c] != 0;
      const bool g = c < gold[i].size() && gold[i][c] != 0;
      if (p && g) ++tp[c];
      if (p && !g) ++fp[c];
      if (!p && g) ++fn[c];
      if (p != g) same = false;
    }
    if (same) ++exact;
  }
  m.exact_match = static_cast<double>(exact) / static_cast<double>(n);
  double tp_all = 0, fp_all = 0, fn_all = 0, f1_sum = 0;
  for (size_t c = 0; c < k; ++c) {
    tp_all += tp[c];
    fp_all += fp[c];
    fn_all += fn[c];
    f1_sum += F1(tp[c], fp[c], fn[c]);
  }
  m.f1_micro = F1(tp_all, fp_all, fn_all);
  m.precision_micro = Ratio(tp_all, tp_all + fp_all);
  m.recall_micro = Ratio(tp_all, tp_all + fn_all);
  m.f1_macro = f1_sum / static_cast<double>(k);
  return m;
}

nlohmann::json DescribePrediction(const std::string& field,
                                  const std::string& input,
                                  const float* probabilities, int64_t classes,
                                  const std::vector<std::string>& labels) {
  auto name = [&](int64_t i) {
    return i < static_cast<int64_t>(labels.size())
               ? labels[static_cast<size_t>(i)]
               : "LABEL_" + std::to_string(i);
  };
  nlohmann::json by_label = nlohmann::json::object();
  int64_t best = 0;
  for (int64_t i = 0; i < classes; ++i) {
    by_label[name(i)] = probabilities[i];
    if (probabilities[i] > probabilities[best]) best = i;
  }
  return {{field, input}, {"label", name(best)}, {"probabilities", by_label}};
}

}  // namespace lathe
