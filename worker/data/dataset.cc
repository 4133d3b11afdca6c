#include "worker/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace lathe {
namespace {

absl::Status RowError(const std::string& name, int64_t line,
                      const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(name, ":", line, ": ", msg));
}

bool IsBlank(absl::string_view s) {
  return absl::StripAsciiWhitespace(s).empty();
}

std::string Quoted(const std::string& s) { return absl::StrCat("\"", s, "\""); }

// One class label from a JSON string or integer; empty when it is neither.
std::string ClassLabel(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return v.dump();
  return "";
}

// Fills ex.labels from a JSON array of class labels (duplicates dropped).
absl::Status ListLabel(const nlohmann::json& list, const std::string& column,
                       const std::string& name, int64_t line, Example* ex) {
  ex->label_is_list = true;
  for (const nlohmann::json& v : list) {
    if (!v.is_string() && !v.is_number_integer()) {
      return RowError(name, line,
                      absl::StrCat("field ", Quoted(column),
                                   " must list strings or integers"));
    }
    std::string l = ClassLabel(v);
    if (l.empty()) {
      return RowError(
          name, line,
          absl::StrCat("field ", Quoted(column), " lists an empty label"));
    }
    if (std::find(ex->labels.begin(), ex->labels.end(), l) ==
        ex->labels.end()) {
      ex->labels.push_back(std::move(l));
    }
  }
  return absl::OkStatus();
}

// A finite number from its text (CSV/TSV fields, JSON strings are refused).
bool ParseNumber(absl::string_view text, double* out) {
  return absl::SimpleAtod(absl::StripAsciiWhitespace(text), out) &&
         std::isfinite(*out);
}

absl::StatusOr<std::vector<Example>> ParseJsonl(const std::string& contents,
                                                const std::string& name,
                                                const ReadOptions& options) {
  const TextColumns& cols = options.columns;
  std::vector<Example> rows;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    if (end == std::string::npos) end = contents.size();
    absl::string_view line(contents.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (IsBlank(line)) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::exception& e) {
      return RowError(name, line_no, absl::StrCat("invalid JSON: ", e.what()));
    }
    if (!row.is_object()) {
      return RowError(name, line_no, "expected a JSON object");
    }
    Example ex;
    ex.line = line_no;
    if (!row.contains(cols.text)) {
      return RowError(name, line_no,
                      absl::StrCat("missing field ", Quoted(cols.text)));
    }
    if (!row[cols.text].is_string()) {
      return RowError(
          name, line_no,
          absl::StrCat("field ", Quoted(cols.text), " is not a string"));
    }
    ex.text = row[cols.text].get<std::string>();
    if (row.contains(cols.text_pair) && !row[cols.text_pair].is_null()) {
      if (!row[cols.text_pair].is_string()) {
        return RowError(
            name, line_no,
            absl::StrCat("field ", Quoted(cols.text_pair), " is not a string"));
      }
      ex.text_pair = row[cols.text_pair].get<std::string>();
    }
    if (!row.contains(cols.label) && options.labels_optional) {
      rows.push_back(std::move(ex));
      continue;
    }
    if (!row.contains(cols.label)) {
      return RowError(name, line_no,
                      absl::StrCat("missing field ", Quoted(cols.label)));
    }
    const auto& label = row[cols.label];
    switch (options.label_kind) {
      case LabelKind::kNumber:
        if (!label.is_number()) {
          return RowError(
              name, line_no,
              absl::StrCat("field ", Quoted(cols.label), " is not a number"));
        }
        ex.value = label.get<double>();
        if (!std::isfinite(ex.value)) {
          return RowError(name, line_no,
                          absl::StrCat("field ", Quoted(cols.label),
                                       " is not a finite number"));
        }
        ex.label = label.dump();
        break;
      case LabelKind::kClassOrList:
        if (label.is_array()) {
          RETURN_IF_ERROR(ListLabel(label, cols.label, name, line_no, &ex));
          break;
        }
        [[fallthrough]];
      case LabelKind::kClass:
        if (!label.is_string() && !label.is_number_integer()) {
          return RowError(
              name, line_no,
              absl::StrCat("field ", Quoted(cols.label),
                           options.label_kind == LabelKind::kClassOrList
                               ? " must be a string, an integer or a list"
                               : " must be a string or an integer"));
        }
        ex.label = ClassLabel(label);
        if (ex.label.empty()) {
          return RowError(
              name, line_no,
              absl::StrCat("field ", Quoted(cols.label), " is empty"));
        }
        break;
    }
    rows.push_back(std::move(ex));
  }
  return rows;
}

struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;  // Line where the record starts.
  bool blank = false;
};

// Splits RFC 4180 records; quoted fields may hold delimiters, "" and newlines.
absl::StatusOr<std::vector<CsvRecord>> SplitCsv(const std::string& s,
                                                char delim,
                                                const std::string& name) {
  std::vector<CsvRecord> records;
  size_t i = 0;
  int64_t line = 1;
  while (i < s.size()) {
    CsvRecord rec;
    rec.line = line;
    std::string field;
    bool any_char = false;
    while (true) {
      if (i < s.size() && s[i] == '"' && field.empty()) {
        // Quoted field.
        const int64_t quote_line = line;
        ++i;
        any_char = true;
        bool closed = false;
        while (i < s.size()) {
          if (s[i] == '"') {
            if (i + 1 < s.size() && s[i + 1] == '"') {
              field.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (s[i] == '\n') ++line;
          field.push_back(s[i++]);
        }
        if (!closed) {
          return RowError(name, quote_line, "unterminated quoted field");
        }
        if (i < s.size() && s[i] != delim && s[i] != '\n' && s[i] != '\r') {
          return RowError(name, line,
                          "unexpected character after a closing quote");
        }
        continue;
      }
      if (i >= s.size() || s[i] == '\n' ||
          (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n')) {
        rec.fields.push_back(std::move(field));
        if (i < s.size()) {
          i += s[i] == '\r' ? 2 : 1;
          ++line;
        }
        break;
      }
      if (s[i] == delim) {
        rec.fields.push_back(std::move(field));
        field.clear();
        any_char = true;
        ++i;
        continue;
      }
      any_char = true;
      field.push_back(s[i++]);
    }
    rec.blank = !any_char || (rec.fields.size() == 1 && IsBlank(rec.fields[0]));
    records.push_back(std::move(rec));
  }
  return records;
}

absl::StatusOr<std::vector<Example>> ParseCsv(const std::string& contents,
                                              char delim,
                                              const std::string& name,
                                              const ReadOptions& options) {
  const TextColumns& names = options.columns;
  ASSIGN_OR_RETURN(std::vector<CsvRecord> records,
                   SplitCsv(contents, delim, name));
  size_t r = 0;
  while (r < records.size() && records[r].blank) ++r;
  if (r == records.size()) {
    return RowError(name, 1, "empty file: expected a header row");
  }
  const CsvRecord& header = records[r++];
  std::map<std::string, size_t> cols;
  for (size_t c = 0; c < header.fields.size(); ++c) {
    std::string col(absl::StripAsciiWhitespace(header.fields[c]));
    if (c == 0 && col.rfind("\xEF\xBB\xBF", 0) == 0) col = col.substr(3);
    if (!cols.emplace(col, c).second) {
      return RowError(name, header.line,
                      absl::StrCat("duplicate column ", Quoted(col)));
    }
  }
  for (const std::string* need : {&names.text, &names.label}) {
    if (options.labels_optional && need == &names.label) continue;
    if (!cols.count(*need)) {
      return RowError(name, header.line,
                      absl::StrCat("header has no ", Quoted(*need), " column"));
    }
  }
  const size_t text_col = cols[names.text];
  const bool has_label = cols.count(names.label) > 0;
  const size_t label_col = has_label ? cols[names.label] : 0;
  const bool has_pair = cols.count(names.text_pair) > 0;
  const size_t pair_col = has_pair ? cols[names.text_pair] : 0;
  std::vector<Example> rows;
  for (; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    if (rec.blank) continue;
    if (rec.fields.size() != header.fields.size()) {
      return RowError(name, rec.line,
                      absl::StrCat("expected ", header.fields.size(),
                                   " fields, found ", rec.fields.size()));
    }
    Example ex;
    ex.line = rec.line;
    ex.text = rec.fields[text_col];
    if (has_pair) ex.text_pair = rec.fields[pair_col];
    if (has_label) {
      const std::string field(
          absl::StripAsciiWhitespace(rec.fields[label_col]));
      if (field.empty()) {
        if (!options.labels_optional) {
          return RowError(name, rec.line,
                          absl::StrCat("empty ", Quoted(names.label)));
        }
      } else if (options.label_kind == LabelKind::kNumber) {
        if (!ParseNumber(field, &ex.value)) {
          return RowError(
              name, rec.line,
              absl::StrCat("field ", Quoted(names.label), " is not a number"));
        }
        ex.label = field;
      } else if (options.label_kind == LabelKind::kClassOrList &&
                 field[0] == '[') {
        nlohmann::json list;
        try {
          list = nlohmann::json::parse(field);
        } catch (const nlohmann::json::exception& e) {
          return RowError(name, rec.line,
                          absl::StrCat("field ", Quoted(names.label),
                                       " is not a JSON list: ", e.what()));
        }
        if (!list.is_array()) {
          return RowError(name, rec.line,
                          absl::StrCat("field ", Quoted(names.label),
                                       " is not a JSON list"));
        }
        RETURN_IF_ERROR(ListLabel(list, names.label, name, rec.line, &ex));
      } else {
        ex.label = field;
      }
    }
    rows.push_back(std::move(ex));
  }
  return rows;
}

std::string LowerExtension(const std::string& name) {
  const size_t slash = name.find_last_of('/');
  const size_t dot = name.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) {
    return "";
  }
  return absl::AsciiStrToLower(name.substr(dot));
}

bool AllIntegers(const std::vector<std::string>& labels) {
  for (const std::string& l : labels) {
    int64_t v;
    if (!absl::SimpleAtoi(l, &v)) return false;
  }
  return true;
}

}  // namespace

DataFormat DataFormatFromName(const std::string& name) {
  const std::string ext = LowerExtension(name);
  if (ext == ".csv") return DataFormat::kCsv;
  if (ext == ".tsv") return DataFormat::kTsv;
  return DataFormat::kJsonl;
}

TextColumns TextColumnsFromParams(const TrainParams& params) {
  TextColumns c;
  if (!params.text_column.empty()) c.text = params.text_column;
  if (!params.text_pair_column.empty()) c.text_pair = params.text_pair_column;
  if (!params.label_column.empty()) c.label = params.label_column;
  return c;
}

absl::StatusOr<std::vector<Example>> ReadExamples(
    const std::string& path, const std::string& display_name,
    bool labels_optional) {
  ReadOptions options;
  options.labels_optional = labels_optional;
  return ReadExamples(path, display_name, options);
}

absl::StatusOr<std::vector<Example>> ReadExamples(
    const std::string& path, const std::string& display_name,
    const ReadOptions& options) {
  const std::string name = display_name.empty() ? path : display_name;
  auto contents = ReadFile(path);
  if (!contents.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": cannot read: ", contents.status().message()));
  }
  const std::string ext = LowerExtension(name);
  const bool known =
      ext == ".jsonl" || ext == ".json" || ext == ".csv" || ext == ".tsv";
  const DataFormat format = DataFormatFromName(known ? name : path);
  std::vector<Example> rows;
  switch (format) {
    case DataFormat::kJsonl: {
      ASSIGN_OR_RETURN(rows, ParseJsonl(*contents, name, options));
      break;
    }
    case DataFormat::kCsv: {
      ASSIGN_OR_RETURN(rows, ParseCsv(*contents, ',', name, options));
      break;
    }
    case DataFormat::kTsv: {
      ASSIGN_OR_RETURN(rows, ParseCsv(*contents, '\t', name, options));
      break;
    }
  }
  if (rows.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": no rows"));
  }
  return rows;
}

absl::StatusOr<std::vector<std::string>> LabelSet(
    const std::vector<Example>& train, const std::string& display_name) {
  if (train.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(display_name, ": no rows"));
  }
  std::set<std::string> distinct;
  for (const Example& ex : train) {
    if (ex.label_is_list) {
      distinct.insert(ex.labels.begin(), ex.labels.end());
    } else {
      distinct.insert(ex.label);
    }
  }
  std::vector<std::string> labels(distinct.begin(), distinct.end());
  if (AllIntegers(labels)) {
    std::sort(labels.begin(), labels.end(),
              [](const std::string& a, const std::string& b) {
                int64_t x = 0, y = 0;
                absl::SimpleAtoi(a, &x);
                absl::SimpleAtoi(b, &y);
                return x != y ? x < y : a < b;
              });
  }
  return labels;
}

absl::Status CheckLabels(const std::vector<Example>& rows,
                         const std::vector<std::string>& labels,
                         const std::string& display_name) {
  const std::set<std::string> known(labels.begin(), labels.end());
  std::set<std::string> unknown;
  int64_t first_line = 0;
  auto check = [&](const Example& ex, const std::string& label) {
    if (known.count(label)) return;
    if (unknown.empty()) first_line = ex.line;
    unknown.insert(label);
  };
  for (const Example& ex : rows) {
    if (ex.label_is_list) {
      for (const std::string& l : ex.labels) check(ex, l);
    } else {
      check(ex, ex.label);
    }
  }
  if (unknown.empty()) return absl::OkStatus();
  std::vector<std::string> quoted;
  for (const std::string& l : unknown)
    quoted.push_back(absl::StrCat("\"", l, "\""));
  return RowError(display_name, first_line,
                  absl::StrCat("labels not in the training data: ",
                               absl::StrJoin(quoted, ", ")));
}

std::vector<int64_t> LabelIndices(const std::vector<Example>& rows,
                                  const std::vector<std::string>& labels) {
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < labels.size(); ++i) index[labels[i]] = i;
  std::vector<int64_t> out;
  out.reserve(rows.size());
  for (const Example& ex : rows) out.push_back(index.at(ex.label));
  return out;
}

std::vector<std::vector<uint8_t>> LabelIndicators(
    const std::vector<Example>& rows, const std::vector<std::string>& labels) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < labels.size(); ++i) index[labels[i]] = i;
  std::vector<std::vector<uint8_t>> out;
  out.reserve(rows.size());
  for (const Example& ex : rows) {
    std::vector<uint8_t> row(labels.size(), 0);
    for (const std::string& l : ex.labels) {
      auto it = index.find(l);
      if (it != index.end()) row[it->second] = 1;
    }
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace lathe
