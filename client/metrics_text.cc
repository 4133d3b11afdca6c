#include "client/metrics_text.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace lathe::client {
namespace {

constexpr char kNamedPrefix[] = "confusion_matrix/";
constexpr char kIndexPrefix[] = "confusion_matrix.";
// Longer labels are cut in the table (the JSON keeps them whole).
constexpr size_t kMaxLabelWidth = 16;

struct TaskMetrics {
  const char* task;
  // The default metric_for_best_model: the first of these present (a
  // multi-label classifier reports f1_micro, not accuracy).
  std::vector<const char*> defaults;
  std::vector<const char*> companions;
};

// Mirrors docs/tasks.md: each task's default metric and the others worth a
// glance.
const std::vector<TaskMetrics>& TaskTable() {
  static const auto* table = new std::vector<TaskMetrics>{
      {"text-classification",
       {"accuracy", "f1_micro"},
       {"f1", "precision", "recall", "mcc", "exact_match", "f1_macro"}},
      {"text-regression", {"mse"}, {"mae", "pearson", "spearman"}},
      {"token-classification", {"f1"}, {"precision", "recall", "accuracy"}},
      {"question-answering", {"f1"}, {"exact_match", "best_f1", "best_exact"}},
      // Preference tuning (method=dpo) reports rewards instead.
      {"causal-lm",
       {"loss"},
       {"perplexity", "token_accuracy", "reward_accuracy", "reward_margin"}},
      {"masked-lm", {"loss"}, {"perplexity", "accuracy"}},
      {"image-classification", {"accuracy"}, {"top5_accuracy", "f1"}},
      {"audio-classification", {"accuracy"}, {"f1"}},
      {"speech-recognition", {"wer"}, {"cer"}},
  };
  return *table;
}

std::string DecodeLabel(const std::string& part) {
  std::string out;
  for (size_t i = 0; i < part.size(); ++i) {
    if (part[i] == '%' && i + 2 < part.size()) {
      const std::string code = part.substr(i + 1, 2);
      if (code == "2F" || code == "2f") {
        out += '/';
        i += 2;
        continue;
      }
      if (code == "25") {
        out += '%';
        i += 2;
        continue;
      }
    }
    out += part[i];
  }
  return out;
}

std::string Cut(const std::string& label) {
  if (label.size() <= kMaxLabelWidth) return label;
  return label.substr(0, kMaxLabelWidth - 1) + "~";
}

std::string Count(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  return FormatMetric(v);
}

}  // namespace

std::string FormatMetric(double value) {
  return absl::StrFormat("%.4g", value);
}

bool IsConfusionCell(const std::string& name) {
  return absl::StartsWith(name, kNamedPrefix) ||
         absl::StartsWith(name, kIndexPrefix);
}

std::vector<std::string> HeadlineMetricNames(
    const std::string& task, const std::string& best_metric,
    const std::map<std::string, double>& metrics) {
  std::vector<std::string> names;
  auto add = [&](const std::string& name) {
    if (metrics.count(name) > 0 &&
        std::find(names.begin(), names.end(), name) == names.end()) {
      names.push_back(name);
    }
  };
  const TaskMetrics* known = nullptr;
  for (const TaskMetrics& t : TaskTable()) {
    if (task == t.task) known = &t;
  }
  auto add_default = [&] {
    if (known == nullptr) return;
    for (const char* d : known->defaults) {
      if (metrics.count(d) > 0) {
        add(d);
        return;
      }
    }
  };
  if (!best_metric.empty()) {
    add(best_metric);
    add("loss");
    add_default();
  } else {
    add_default();
    add("loss");
  }
  if (known != nullptr) {
    for (const char* c : known->companions) add(c);
  }
  if (names.empty()) {
    for (const auto& [name, value] : metrics) {
      if (!IsConfusionCell(name)) names.push_back(name);
    }
  }
  return names;
}

std::string HeadlineMetricsText(const std::string& task,
                                const std::string& best_metric,
                                const std::map<std::string, double>& metrics,
                                size_t max_names) {
  std::vector<std::string> names =
      HeadlineMetricNames(task, best_metric, metrics);
  if (max_names > 0 && names.size() > max_names) names.resize(max_names);
  std::vector<std::string> parts;
  for (const std::string& name : names) {
    parts.push_back(absl::StrCat(name, " ", FormatMetric(metrics.at(name))));
  }
  size_t scalars = 0;
  for (const auto& entry : metrics) {
    if (!IsConfusionCell(entry.first)) ++scalars;
  }
  std::string out = absl::StrJoin(parts, "  ");
  if (max_names == 0 && scalars > names.size()) {
    absl::StrAppend(&out, out.empty() ? "" : "  ", "(+", scalars - names.size(),
                    " more: --output json)");
  }
  return out;
}

std::vector<std::string> ConfusionMatrixLines(
    const std::map<std::string, double>& metrics, const std::string& indent) {
  // (gold, predicted) -> count, by label name when the job named them.
  std::map<std::pair<std::string, std::string>, double> named, indexed;
  for (const auto& [name, value] : metrics) {
    if (absl::StartsWith(name, kNamedPrefix)) {
      std::vector<std::string> parts =
          absl::StrSplit(name.substr(sizeof(kNamedPrefix) - 1), '/');
      if (parts.size() != 2) continue;
      named[{DecodeLabel(parts[0]), DecodeLabel(parts[1])}] = value;
    } else if (absl::StartsWith(name, kIndexPrefix)) {
      std::vector<std::string> parts =
          absl::StrSplit(name.substr(sizeof(kIndexPrefix) - 1), '.');
      int64_t g = 0, p = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &g) ||
          !absl::SimpleAtoi(parts[1], &p)) {
        continue;
      }
      indexed[{parts[0], parts[1]}] = value;
    }
  }
  const auto& cells = named.empty() ? indexed : named;
  if (cells.empty()) return {};
  std::vector<std::string> labels;
  for (const auto& [key, value] : cells) {
    for (const std::string* l : {&key.first, &key.second}) {
      if (std::find(labels.begin(), labels.end(), *l) == labels.end()) {
        labels.push_back(*l);
      }
    }
  }
  bool numeric = true;
  for (const std::string& l : labels) {
    int64_t v = 0;
    numeric = numeric && absl::SimpleAtoi(l, &v);
  }
  std::sort(labels.begin(), labels.end(),
            [numeric](const std::string& a, const std::string& b) {
              if (numeric) {
                int64_t x = 0, y = 0;
                (void)absl::SimpleAtoi(a, &x);
                (void)absl::SimpleAtoi(b, &y);
                return x < y;
              }
              return a < b;
            });
  size_t row_width = 0, col_width = 1;
  for (const std::string& l : labels) {
    row_width = std::max(row_width, Cut(l).size());
    col_width = std::max(col_width, Cut(l).size());
  }
  for (const auto& [key, value] : cells) {
    col_width = std::max(col_width, Count(value).size());
  }
  std::vector<std::string> lines;
  lines.push_back(absl::StrCat(indent, "confusion matrix (rows: true ",
                               named.empty() ? "class index" : "label",
                               ", columns: predicted)"));
  std::string header = absl::StrCat(indent, "  ", std::string(row_width, ' '));
  for (const std::string& l : labels) {
    absl::StrAppend(
        &header, "  ",
        absl::StrFormat("%*s", static_cast<int>(col_width), Cut(l)));
  }
  lines.push_back(header);
  for (const std::string& gold : labels) {
    std::string row = absl::StrCat(
        indent, "  ",
        absl::StrFormat("%-*s", static_cast<int>(row_width), Cut(gold)));
    for (const std::string& pred : labels) {
      auto it = cells.find({gold, pred});
      absl::StrAppend(
          &row, "  ",
          absl::StrFormat("%*s", static_cast<int>(col_width),
                          it == cells.end() ? "-" : Count(it->second)));
    }
    lines.push_back(row);
  }
  return lines;
}

}  // namespace lathe::client
