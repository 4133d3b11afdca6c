// Text-classification datasets: JSONL, CSV and TSV readers and label sets.
// No LibTorch.
#ifndef LATHE_WORKER_DATA_DATASET_H_
#define LATHE_WORKER_DATA_DATASET_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/params.h"

namespace lathe {

struct Example {
  std::string text;
  std::optional<std::string> text_pair;
  std::string label;  // Integer labels are kept in decimal text.
  // A label given as a list (multi-label): its distinct entries in order of
  // appearance, each like `label`; `label` is then empty.
  bool label_is_list = false;
  std::vector<std::string> labels;
  double value = 0;  // The label as a number (LabelKind::kNumber).
  int64_t line = 0;  // 1-based line in the source file where the row starts.
};

// Which JSONL keys / CSV header names hold the text, the optional pair and
// the label.
struct TextColumns {
  std::string text = "text";
  std::string text_pair = "text_pair";
  std::string label = "label";
};

// params.text_column, text_pair_column and label_column where set.
TextColumns TextColumnsFromParams(const TrainParams& params);

enum class LabelKind {
  kClass,        // A string or an integer.
  kClassOrList,  // That, or a list of them (a JSON array; in CSV/TSV a field
                 // that starts with '[' holds a JSON array).
  kNumber,       // A finite number (in CSV/TSV, its text), kept in `value`.
};

struct ReadOptions {
  TextColumns columns;
  LabelKind label_kind = LabelKind::kClass;
  // Rows to predict: a row may lack its label (then empty, not a list).
  bool labels_optional = false;
};

enum class DataFormat { kJsonl, kCsv, kTsv };

// Format from the extension of `name` (.jsonl/.json -> JSONL, .csv, .tsv);
// anything else is JSONL.
DataFormat DataFormatFromName(const std::string& name);

// Reads every row of `path`. JSONL: one object per line with "text",
// optional "text_pair" (string or null) and "label" (string or integer).
// CSV/TSV: a header row naming text, label and optionally text_pair (other
// columns ignored), RFC 4180 quoting. Blank lines are skipped. The format
// comes from `display_name` (or from `path` when the display name has no
// known extension). Every error is INVALID_ARGUMENT and starts with
// "DISPLAY_NAME:LINE: ", e.g. `train.jsonl:17: missing field "label"`;
// an empty file is an error too. With `labels_optional` (rows to predict), a
// row may lack its label (then empty).
absl::StatusOr<std::vector<Example>> ReadExamples(
    const std::string& path, const std::string& display_name,
    bool labels_optional = false);

// As above with renamed columns (error messages name the column as given)
// and the label forms of `options.label_kind`: a label of another form is an
// error naming the row, e.g. `train.jsonl:3: field "score" is not a number`.
absl::StatusOr<std::vector<Example>> ReadExamples(
    const std::string& path, const std::string& display_name,
    const ReadOptions& options);

// The sorted distinct labels of `train` (numerically when every label is an
// integer), list labels contributing each of their entries.
// INVALID_ARGUMENT when `train` is empty.
absl::StatusOr<std::vector<std::string>> LabelSet(
    const std::vector<Example>& train, const std::string& display_name);

// INVALID_ARGUMENT naming `display_name` and the labels of `rows` (single
// or in lists) that are not in `labels`.
absl::Status CheckLabels(const std::vector<Example>& rows,
                         const std::vector<std::string>& labels,
                         const std::string& display_name);

// Index of each row's label in `labels` (which must contain them all).
std::vector<int64_t> LabelIndices(const std::vector<Example>& rows,
                                  const std::vector<std::string>& labels);

// Each row's list label as an indicator row over `labels` (1 where the
// label is in the row's list; labels not in `labels` are skipped).
std::vector<std::vector<uint8_t>> LabelIndicators(
    const std::vector<Example>& rows, const std::vector<std::string>& labels);

}  // namespace lathe

#endif  // LATHE_WORKER_DATA_DATASET_H_
