// Evaluation metrics for people: the few that matter for the job's task,
// rounded, and the confusion matrix as a table. `--output json` keeps every
// metric at full precision; this is only for the text output of `lathe get`,
// `watch`, `list` and `checkpoints`. No gRPC.
#ifndef LATHE_CLIENT_METRICS_TEXT_H_
#define LATHE_CLIENT_METRICS_TEXT_H_

#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace lathe::client {

// A number to 4 significant digits ("0.9375", "16", "1.235e+06").
std::string FormatMetric(double value);

// The names to show first for a job of `task`: `best_metric` (its
// metric_for_best_model; empty: the task's default), loss, the task's
// default, then the task's usual companions (f1, precision, ...); those
// present in `metrics` only, without repeats. Every scalar metric, sorted, when
// the task is unknown and neither the best metric nor loss is present.
std::vector<std::string> HeadlineMetricNames(
    const std::string& task, const std::string& best_metric,
    const std::map<std::string, double>& metrics);

// "accuracy 0.9375  loss 0.2154  f1 0.9371" for the headline names. With
// `max_names` 0, all of them, then "  (+N more: --output json)" when scalar
// metrics were left out (confusion-matrix cells are not counted); else at
// most `max_names` of them and no note, for a column.
std::string HeadlineMetricsText(const std::string& task,
                                const std::string& best_metric,
                                const std::map<std::string, double>& metrics,
                                size_t max_names = 0);

// The confusion matrix in `metrics` ("confusion_matrix/GOLD/PREDICTED",
// labels percent-encoded, or "confusion_matrix.G.P" by class index) as
// lines of a table, rows the true label and columns the predicted one,
// each line starting with `indent`; empty when `metrics` holds none.
// Labels are ordered numerically when all are integers, else by name.
std::vector<std::string> ConfusionMatrixLines(
    const std::map<std::string, double>& metrics, const std::string& indent);

// True for a confusion-matrix cell's name.
bool IsConfusionCell(const std::string& name);

}  // namespace lathe::client

#endif  // LATHE_CLIENT_METRICS_TEXT_H_
