// Feeds: a token-classification dataset file (JSONL rows of words and BIO
// tags, or of text and labelled character spans) to ReadTokenRows
// (worker/tasks/token_classification_data.h), then TagSet and CheckTags on
// what it read. The first input byte picks whether tags are required
// (bit 0) and renamed columns (bit 1); the rest is the file. Checks: no
// crash or sanitizer report; every error is INVALID_ARGUMENT starting with
// the file's display name; accepted rows are non-empty, with increasing
// line numbers from 1; each row has as many byte spans as code point spans
// and, when tagged, as many tags; word spans are non-empty, sorted,
// disjoint and inside the text, and agree with CharIndexOfBytes; every
// row's tags belong to the tag set read from the same rows.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/tasks/token_classification_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const bool require_tags = (mode & 1) != 0;
  lathe::TokenColumns columns;
  if ((mode >> 1 & 1) != 0) columns = {"w", "t", "s"};
  const std::string display_name = "fuzz.jsonl";

  const std::string path = lathe::fuzz::ScratchDir() + "/data";
  lathe::fuzz::WriteFileOrDie(
      path,
      std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  const absl::StatusOr<std::vector<lathe::TokenRow>> rows =
      lathe::ReadTokenRows(path, display_name, columns, require_tags);
  if (!rows.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(rows.status()));
    FUZZ_CHECK(absl::StartsWith(rows.status().message(), display_name + ":"));
    return 0;
  }
  FUZZ_CHECK(!rows->empty());
  int64_t last_line = 0;
  bool any_tags = false;
  for (const lathe::TokenRow& row : *rows) {
    FUZZ_CHECK(row.line > last_line);
    last_line = row.line;
    FUZZ_CHECK(row.word_bytes.size() == row.word_chars.size());
    if (require_tags) FUZZ_CHECK(row.tags.size() == row.word_bytes.size());
    if (!row.tags.empty()) {
      any_tags = true;
      FUZZ_CHECK(row.tags.size() == row.word_bytes.size());
    }
    const std::vector<int64_t> chars = lathe::CharIndexOfBytes(row.text);
    const int64_t text_bytes = static_cast<int64_t>(row.text.size());
    int64_t last_end = 0;
    for (size_t i = 0; i < row.word_bytes.size(); ++i) {
      const auto [begin, end] = row.word_bytes[i];
      FUZZ_CHECK(begin >= last_end && begin < end && end <= text_bytes);
      last_end = end;
      FUZZ_CHECK(row.word_chars[i].first == chars[begin]);
      FUZZ_CHECK(row.word_chars[i].second == chars[end]);
    }
  }

  const absl::StatusOr<std::vector<std::string>> tags =
      lathe::TagSet(*rows, display_name);
  if (!any_tags) {
    FUZZ_CHECK(!tags.ok() && absl::IsInvalidArgument(tags.status()));
    return 0;
  }
  FUZZ_CHECK(tags.ok());
  FUZZ_CHECK(!tags->empty());
  FUZZ_CHECK(lathe::CheckTags(*rows, *tags, display_name).ok());
  return 0;
}
