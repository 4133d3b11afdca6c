#include "worker/tasks/token_classification_data.h"

#include <utf8proc.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace lathe {
namespace {

using Json = nlohmann::json;

absl::Status RowError(const std::string& name, int64_t line,
                      const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(name, ":", line, ": ", msg));
}

// Decodes the code point at text[*pos] and advances past it; an invalid
// sequence counts as one byte (U+FFFD).
int32_t NextCodePoint(std::string_view text, size_t* pos) {
  utf8proc_int32_t cp = 0;
  const utf8proc_ssize_t n = utf8proc_iterate(
      reinterpret_cast<const utf8proc_uint8_t*>(text.data() + *pos),
      static_cast<utf8proc_ssize_t>(text.size() - *pos), &cp);
  if (n <= 0) {
    *pos += 1;
    return 0xFFFD;
  }
  *pos += static_cast<size_t>(n);
  return cp;
}

bool IsSpace(int32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\f' ||
      cp == '\v') {
    return true;
  }
  const utf8proc_category_t c = utf8proc_category(cp);
  return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL ||
         c == UTF8PROC_CATEGORY_ZP;
}

// ASCII symbols and Unicode punctuation (P*) and symbols (S*), the
// characters word-piece tokenizers split off on their own.
bool IsPunctOrSymbol(int32_t cp) {
  if (cp < 128) {
    return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) ||
           (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126);
  }
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
    case UTF8PROC_CATEGORY_SM:
    case UTF8PROC_CATEGORY_SC:
    case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
      return true;
    default:
      return false;
  }
}

bool IsBlank(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (!IsSpace(NextCodePoint(s, &pos))) return false;
  }
  return true;
}

std::vector<std::pair<int64_t, int64_t>> ToChars(
    const std::vector<int64_t>& char_of_byte,
    const std::vector<std::pair<int64_t, int64_t>>& bytes) {
  std::vector<std::pair<int64_t, int64_t>> out;
  out.reserve(bytes.size());
  for (const auto& [b, e] : bytes) {
    out.emplace_back(char_of_byte[b], char_of_byte[e]);
  }
  return out;
}

absl::Status ParseTokenRow(const Json& row, const TokenColumns& columns,
                           const std::string& name, int64_t line,
                           TokenRow* out) {
  const Json& tokens = row[columns.tokens];
  if (!tokens.is_array()) {
    return RowError(name, line,
                    absl::StrCat("field \"", columns.tokens,
                                 "\" must be a list of strings"));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!tokens[i].is_string()) {
      return RowError(name, line,
                      absl::StrCat("field \"", columns.tokens, "\"[", i,
                                   "] is not a string"));
    }
    const std::string& word = tokens[i].get_ref<const std::string&>();
    if (IsBlank(word)) {
      return RowError(name, line,
                      absl::StrCat("field \"", columns.tokens, "\"[", i,
                                   "] is empty or only whitespace"));
    }
    if (!out->text.empty()) out->text += ' ';
    out->word_bytes.emplace_back(out->text.size(),
                                 out->text.size() + word.size());
    out->text += word;
  }
  if (row.contains(columns.tags) && !row[columns.tags].is_null()) {
    const Json& tags = row[columns.tags];
    if (!tags.is_array()) {
      return RowError(name, line,
                      absl::StrCat("field \"", columns.tags,
                                   "\" must be a list of strings"));
    }
    if (tags.size() != tokens.size()) {
      return RowError(
          name, line,
          absl::StrCat(tokens.size(), " tokens but ", tags.size(), " tags"));
    }
    for (size_t i = 0; i < tags.size(); ++i) {
      if (!tags[i].is_string() ||
          tags[i].get_ref<const std::string&>().empty()) {
        return RowError(name, line,
                        absl::StrCat("field \"", columns.tags, "\"[", i,
                                     "] is not a non-empty string"));
      }
      out->tags.push_back(tags[i].get<std::string>());
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTextRow(const Json& row, const TokenColumns& columns,
                          const std::string& name, int64_t line,
                          TokenRow* out) {
  if (!row[columns.text].is_string()) {
    return RowError(
        name, line,
        absl::StrCat("field \"", columns.text, "\" is not a string"));
  }
  out->text = row[columns.text].get<std::string>();
  out->word_bytes = SplitWords(out->text);
  const char* spans_key = row.contains("spans")      ? "spans"
                          : row.contains("entities") ? "entities"
                                                     : nullptr;
  if (spans_key == nullptr || row[spans_key].is_null()) return absl::OkStatus();
  const Json& spans = row[spans_key];
  if (!spans.is_array()) {
    return RowError(
        name, line,
        absl::StrCat("field \"", spans_key, "\" must be a list of objects"));
  }
  const std::vector<int64_t> char_of_byte = CharIndexOfBytes(out->text);
  const int64_t chars = char_of_byte.back();
  const auto word_chars = ToChars(char_of_byte, out->word_bytes);
  out->tags.assign(out->word_bytes.size(), "O");
  // The span that tagged each word, to report overlaps.
  std::vector<int64_t> owner(out->word_bytes.size(), -1);
  std::vector<std::pair<int64_t, int64_t>> seen;
  for (size_t s = 0; s < spans.size(); ++s) {
    const Json& span = spans[s];
    const std::string where = absl::StrCat(spans_key, "[", s, "]");
    if (!span.is_object() || !span.contains("start") || !span.contains("end") ||
        !span.contains("label") || !span["start"].is_number_integer() ||
        !span["end"].is_number_integer() || !span["label"].is_string()) {
      return RowError(name, line,
                      absl::StrCat(where,
                                   " must be {\"start\": int, \"end\": int, "
                                   "\"label\": string}"));
    }
    const int64_t start = span["start"].get<int64_t>();
    const int64_t end = span["end"].get<int64_t>();
    const std::string label = span["label"].get<std::string>();
    if (label.empty()) {
      return RowError(name, line, absl::StrCat(where, " has an empty label"));
    }
    if (start < 0 || end <= start || end > chars) {
      return RowError(name, line,
                      absl::StrCat(where, " [", start, ", ", end,
                                   ") is not a non-empty range inside the ",
                                   chars, "-character text"));
    }
    bool first = true;
    for (size_t w = 0; w < word_chars.size(); ++w) {
      if (word_chars[w].second <= start || word_chars[w].first >= end) continue;
      if (owner[w] >= 0) {
        return RowError(
            name, line,
            absl::StrCat(where, " [", start, ", ", end, ") overlaps ",
                         spans_key, "[", owner[w], "] [", seen[owner[w]].first,
                         ", ", seen[owner[w]].second, ")"));
      }
      owner[w] = static_cast<int64_t>(s);
      out->tags[w] = absl::StrCat(first ? "B-" : "I-", label);
      first = false;
    }
    seen.emplace_back(start, end);
    if (first) {
      return RowError(name, line,
                      absl::StrCat(where, " [", start, ", ", end,
                                   ") covers no word (only whitespace)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<int64_t> CharIndexOfBytes(std::string_view text) {
  std::vector<int64_t> out(text.size() + 1, 0);
  size_t pos = 0;
  int64_t chars = 0;
  while (pos < text.size()) {
    const size_t begin = pos;
    NextCodePoint(text, &pos);
    // Bytes inside a code point round down to its start.
    for (size_t b = begin; b < pos; ++b) out[b] = chars;
    ++chars;
  }
  out[text.size()] = chars;
  return out;
}

std::vector<std::pair<int64_t, int64_t>> SplitWords(std::string_view text) {
  std::vector<std::pair<int64_t, int64_t>> words;
  int64_t word_start = -1;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t begin = pos;
    const int32_t cp = NextCodePoint(text, &pos);
    if (IsSpace(cp) || IsPunctOrSymbol(cp)) {
      if (word_start >= 0) words.emplace_back(word_start, begin);
      word_start = -1;
      if (!IsSpace(cp)) words.emplace_back(begin, pos);
      continue;
    }
    if (word_start < 0) word_start = static_cast<int64_t>(begin);
  }
  if (word_start >= 0) words.emplace_back(word_start, text.size());
  return words;
}

std::vector<int64_t> FirstSubTokenWords(
    const TokenizedText& encoding,
    const std::vector<std::pair<int64_t, int64_t>>& word_bytes) {
  std::vector<int64_t> out(encoding.ids.size(), -1);
  std::vector<bool> labelled(word_bytes.size(), false);
  for (size_t t = 0; t < encoding.ids.size(); ++t) {
    if (t < encoding.special_mask.size() && encoding.special_mask[t]) continue;
    if (t < encoding.sequence_ids.size() && encoding.sequence_ids[t] != 0) {
      continue;
    }
    const auto [begin, end] = encoding.offsets[t];
    if (end <= begin) continue;
    // The first word ending after the token's start.
    auto it =
        std::upper_bound(word_bytes.begin(), word_bytes.end(), begin,
                         [](int64_t pos, const std::pair<int64_t, int64_t>& w) {
                           return pos < w.second;
                         });
    if (it == word_bytes.end() || it->first >= end) continue;
    const size_t w = static_cast<size_t>(it - word_bytes.begin());
    if (labelled[w]) continue;
    labelled[w] = true;
    out[t] = static_cast<int64_t>(w);
  }
  return out;
}

absl::StatusOr<std::string> ReadSpanDataFile(const std::string& path,
                                             const std::string& display_name) {
  auto size = FileSize(path);
  if (!size.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": cannot read: ", size.status().message()));
  }
  if (*size > kMaxSpanDataBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": ", *size, " bytes is over the ",
                     kMaxSpanDataBytes >> 20,
                     " MiB this task reads into memory; split the file"));
  }
  auto contents = ReadFile(path);
  if (!contents.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        display_name, ": cannot read: ", contents.status().message()));
  }
  return std::move(*contents);
}

absl::StatusOr<std::vector<TokenRow>> ReadTokenRows(
    const std::string& path, const std::string& display_name,
    const TokenColumns& columns, bool require_tags) {
  const std::string& name = display_name.empty() ? path : display_name;
  ASSIGN_OR_RETURN(std::string contents, ReadSpanDataFile(path, name));
  std::vector<TokenRow> rows;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    if (end == std::string::npos) end = contents.size();
    absl::string_view line(contents.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    Json row;
    try {
      row = Json::parse(line.begin(), line.end());
    } catch (const Json::exception& e) {
      return RowError(name, line_no, absl::StrCat("invalid JSON: ", e.what()));
    }
    if (!row.is_object()) {
      return RowError(name, line_no, "expected a JSON object");
    }
    TokenRow out;
    out.line = line_no;
    if (row.contains(columns.tokens)) {
      RETURN_IF_ERROR(ParseTokenRow(row, columns, name, line_no, &out));
    } else if (row.contains(columns.text)) {
      RETURN_IF_ERROR(ParseTextRow(row, columns, name, line_no, &out));
    } else {
      return RowError(
          name, line_no,
          absl::StrCat("expected a \"", columns.tokens, "\" list or a \"",
                       columns.text, "\" string"));
    }
    if (out.word_bytes.empty()) {
      return RowError(name, line_no, "the row has no words");
    }
    if (require_tags && out.tags.empty()) {
      return RowError(name, line_no,
                      row.contains(columns.tokens)
                          ? absl::StrCat("missing field \"", columns.tags, "\"")
                          : std::string("missing field \"spans\" (or "
                                        "\"entities\")"));
    }
    out.word_chars = ToChars(CharIndexOfBytes(out.text), out.word_bytes);
    rows.push_back(std::move(out));
  }
  if (rows.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": no rows"));
  }
  return rows;
}

absl::StatusOr<std::vector<std::string>> TagSet(
    const std::vector<TokenRow>& rows, const std::string& display_name) {
  std::set<std::string> distinct;
  for (const TokenRow& r : rows) distinct.insert(r.tags.begin(), r.tags.end());
  if (distinct.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": no tags in the data"));
  }
  return std::vector<std::string>(distinct.begin(), distinct.end());
}

absl::Status CheckTags(const std::vector<TokenRow>& rows,
                       const std::vector<std::string>& labels,
                       const std::string& display_name) {
  const std::set<std::string> known(labels.begin(), labels.end());
  std::set<std::string> unknown;
  int64_t first_line = 0;
  for (const TokenRow& r : rows) {
    for (const std::string& t : r.tags) {
      if (known.count(t)) continue;
      if (unknown.empty()) first_line = r.line;
      unknown.insert(t);
    }
  }
  if (unknown.empty()) return absl::OkStatus();
  std::vector<std::string> quoted;
  for (const std::string& t : unknown)
    quoted.push_back(absl::StrCat("\"", t, "\""));
  return RowError(display_name, first_line,
                  absl::StrCat("tags not in the training data: ",
                               absl::StrJoin(quoted, ", ")));
}

}  // namespace lathe
