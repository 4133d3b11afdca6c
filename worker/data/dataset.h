// Text-classification datasets: JSONL, CSV and TSV readers and label sets.
// No LibTorch.
#ifndef LATHE_WORKER_DATA_DATASET_H_
#define LATHE_WORKER_DATA_DATASET_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lathe {

struct Example {
  std::string text;
  std::optional<std::string> text_pair;
  std::string label;  // Integer labels are kept in decimal text.
  int64_t line = 0;   // 1-based line in the source file where the row starts.
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
// an empty file is an error too.
absl::StatusOr<std::vector<Example>> ReadExamples(
    const std::string& path, const std::string& display_name);

// The sorted distinct labels of `train` (numerically when every label is an
// integer). INVALID_ARGUMENT when `train` is empty.
absl::StatusOr<std::vector<std::string>> LabelSet(
    const std::vector<Example>& train, const std::string& display_name);

// INVALID_ARGUMENT naming `display_name` and the labels of `rows` that are
// not in `labels`.
absl::Status CheckLabels(const std::vector<Example>& rows,
                         const std::vector<std::string>& labels,
                         const std::string& display_name);

// Index of each row's label in `labels` (which must contain them all).
std::vector<int64_t> LabelIndices(const std::vector<Example>& rows,
                                  const std::vector<std::string>& labels);

}  // namespace lathe

#endif  // LATHE_WORKER_DATA_DATASET_H_
