// Token-classification (NER) data: JSONL rows of pre-split words with BIO
// tags, or of raw text with labelled character spans, read into words with
// their character spans and one tag per word. No LibTorch.
#ifndef LATHE_WORKER_TASKS_TOKEN_CLASSIFICATION_DATA_H_
#define LATHE_WORKER_TASKS_TOKEN_CLASSIFICATION_DATA_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/tokenizers/tokenizer.h"

namespace lathe {

// One row: its text, its words (as [begin, end) byte spans into `text` and
// as [begin, end) Unicode code point spans, the unit users' offsets use) and
// one tag per word (empty when the row carries no labels).
struct TokenRow {
  std::string text;
  std::vector<std::pair<int64_t, int64_t>> word_bytes;
  std::vector<std::pair<int64_t, int64_t>> word_chars;
  std::vector<std::string> tags;
  int64_t line = 0;  // 1-based line of the row in its file.
};

struct TokenColumns {
  std::string tokens = "tokens";  // List of word strings.
  std::string tags = "tags";      // List of tag strings, one per word.
  std::string text = "text";      // Raw text (with "spans" or "entities").
};

// Largest data file the readers accept (they hold it in memory).
inline constexpr int64_t kMaxSpanDataBytes = int64_t{512} << 20;

// Reads JSONL rows of either form:
//   {"tokens": ["Ada", "lives", "in", "Paris"], "tags": ["B-PER", "O", ...]}
//   {"text": "Ada lives in Paris", "spans": [{"start": 13, "end": 18,
//    "label": "LOC"}]}        ("entities" is accepted for "spans")
// Token rows have the text of their words joined by single spaces. Text
// rows are split into words at whitespace, with each punctuation character a
// word of its own; span offsets are code points, end exclusive; every word
// that overlaps a span is tagged (B- on the first, I- on the rest), others
// "O". With `require_tags` false, tags and spans are optional (prediction
// input). Errors are INVALID_ARGUMENT starting with "DISPLAY_NAME:LINE: "
// (length mismatches, spans out of range, empty or overlapping spans, empty
// words, malformed JSON); files over kMaxSpanDataBytes and files without
// rows are refused.
absl::StatusOr<std::vector<TokenRow>> ReadTokenRows(
    const std::string& path, const std::string& display_name,
    const TokenColumns& columns, bool require_tags);

// Words of `text` as byte spans: runs of non-whitespace, with each Unicode
// punctuation or symbol character split off as its own word.
std::vector<std::pair<int64_t, int64_t>> SplitWords(std::string_view text);

// The sorted distinct tags of `rows`; INVALID_ARGUMENT when there are none.
absl::StatusOr<std::vector<std::string>> TagSet(
    const std::vector<TokenRow>& rows, const std::string& display_name);

// INVALID_ARGUMENT naming `display_name`, the first line concerned and every
// tag of `rows` that `labels` lacks.
absl::Status CheckTags(const std::vector<TokenRow>& rows,
                       const std::vector<std::string>& labels,
                       const std::string& display_name);

// For each token of `encoding` (a tokenization of a row's text), the index
// of the word whose FIRST sub-token it is, else -1: special tokens, a word's
// later sub-tokens, and tokens that overlap no word (whitespace) get -1. A
// token belongs to the first word its byte offsets overlap. `word_bytes`
// must be sorted and disjoint (as ReadTokenRows makes them).
std::vector<int64_t> FirstSubTokenWords(
    const TokenizedText& encoding,
    const std::vector<std::pair<int64_t, int64_t>>& word_bytes);

// The contents of `path`, refusing (INVALID_ARGUMENT naming `display_name`)
// files over kMaxSpanDataBytes and files that cannot be read.
absl::StatusOr<std::string> ReadSpanDataFile(const std::string& path,
                                             const std::string& display_name);

// Code point offset of every byte boundary of `text`: result[b] is the
// number of code points that start before byte b (size text.size() + 1).
std::vector<int64_t> CharIndexOfBytes(std::string_view text);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_TOKEN_CLASSIFICATION_DATA_H_
