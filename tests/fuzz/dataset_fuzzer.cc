// Feeds: a dataset file as a client uploads it (JSONL, CSV or TSV rows) to
// ReadExamples (worker/data/dataset.h), then LabelSet, CheckLabels,
// LabelIndices and LabelIndicators on what it read. The first input byte
// picks the format, the label kind and whether labels are optional; the rest
// is the file. Checks: no crash or sanitizer report; every error is
// INVALID_ARGUMENT starting with the file's display name; accepted rows are
// non-empty, with strictly increasing line numbers from 1, list labels only
// where lists are allowed, finite numbers for numeric labels; every row's
// labels belong to the label set read from the same rows.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  static const char* const kNames[] = {"fuzz.jsonl", "fuzz.csv", "fuzz.tsv"};
  const std::string display_name = kNames[(mode & 3) % 3];
  lathe::ReadOptions options;
  options.label_kind = static_cast<lathe::LabelKind>((mode >> 2 & 3) % 3);
  options.labels_optional = (mode >> 4 & 1) != 0;
  if ((mode >> 5 & 1) != 0) options.columns = {"q", "p", "y"};

  const std::string path = lathe::fuzz::ScratchDir() + "/data";
  lathe::fuzz::WriteFileOrDie(
      path,
      std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  const absl::StatusOr<std::vector<lathe::Example>> rows =
      lathe::ReadExamples(path, display_name, options);
  if (!rows.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(rows.status()));
    FUZZ_CHECK(absl::StartsWith(rows.status().message(), display_name + ":"));
    return 0;
  }
  FUZZ_CHECK(!rows->empty());
  int64_t last_line = 0;
  bool any_list = false;
  for (const lathe::Example& ex : *rows) {
    FUZZ_CHECK(ex.line > last_line);
    last_line = ex.line;
    if (ex.label_is_list) {
      any_list = true;
      FUZZ_CHECK(options.label_kind == lathe::LabelKind::kClassOrList);
      FUZZ_CHECK(ex.label.empty());
    }
    if (options.label_kind == lathe::LabelKind::kNumber) {
      FUZZ_CHECK(std::isfinite(ex.value));
    }
  }

  const absl::StatusOr<std::vector<std::string>> labels =
      lathe::LabelSet(*rows, display_name);
  FUZZ_CHECK(labels.ok());
  FUZZ_CHECK(lathe::CheckLabels(*rows, *labels, display_name).ok());
  if (!any_list) {
    const std::vector<int64_t> indices = lathe::LabelIndices(*rows, *labels);
    FUZZ_CHECK(indices.size() == rows->size());
    for (size_t i = 0; i < indices.size(); ++i) {
      FUZZ_CHECK(indices[i] >= 0 &&
                 indices[i] < static_cast<int64_t>(labels->size()));
      FUZZ_CHECK((*labels)[indices[i]] == (*rows)[i].label);
    }
  }
  const auto indicators = lathe::LabelIndicators(*rows, *labels);
  FUZZ_CHECK(indicators.size() == rows->size());
  return 0;
}
