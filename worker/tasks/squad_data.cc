#include "worker/tasks/squad_data.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/tasks/token_classification_data.h"

namespace lathe {
namespace {

using Json = nlohmann::json;

// Where a question came from, for messages: "NAME:LINE: " plus, for SQuAD
// JSON, the path to the question inside the file.
struct Where {
  const std::string* name;
  int64_t line;
  std::string path;  // "data[0].paragraphs[1].qas[2]" or empty.
  absl::Status Error(const std::string& id, const std::string& msg) const {
    std::string at = path;
    if (!id.empty()) {
      absl::StrAppend(&at, at.empty() ? "" : " ", "(id \"", id, "\")");
    }
    return absl::InvalidArgumentError(
        absl::StrCat(*name, ":", line, ": ", at, at.empty() ? "" : ": ", msg));
  }
};

// Byte offset of every code point of `text`, plus text.size() at the end.
std::vector<int64_t> CodePointBytes(std::string_view text) {
  const std::vector<int64_t> char_of_byte = CharIndexOfBytes(text);
  std::vector<int64_t> out;
  out.reserve(char_of_byte.back() + 1);
  for (size_t b = 0; b < text.size(); ++b) {
    if (b == 0 || char_of_byte[b] != char_of_byte[b - 1]) out.push_back(b);
  }
  out.push_back(static_cast<int64_t>(text.size()));
  return out;
}

absl::StatusOr<QaAnswer> MakeAnswer(const Json& text, const Json& start,
                                    const std::string& context,
                                    const std::vector<int64_t>& cp_bytes,
                                    const Where& where, const std::string& id,
                                    const std::string& label) {
  if (!text.is_string() || !start.is_number_integer()) {
    return where.Error(id, absl::StrCat(label,
                                        " needs a string \"text\" and an "
                                        "integer \"answer_start\""));
  }
  QaAnswer a;
  a.text = text.get<std::string>();
  a.start = start.get<int64_t>();
  if (a.text.empty()) return where.Error(id, absl::StrCat(label, " is empty"));
  const int64_t chars = static_cast<int64_t>(cp_bytes.size()) - 1;
  if (a.start < 0 || a.start >= chars) {
    return where.Error(
        id, absl::StrCat(label, " answer_start ", a.start, " is outside the ",
                         chars, "-character context"));
  }
  a.byte_start = cp_bytes[a.start];
  a.byte_end = a.byte_start + static_cast<int64_t>(a.text.size());
  if (a.byte_end > static_cast<int64_t>(context.size()) ||
      context.compare(a.byte_start, a.text.size(), a.text) != 0) {
    const size_t shown = std::min<size_t>(context.size() - a.byte_start,
                                          std::min<size_t>(a.text.size(), 80));
    return where.Error(
        id, absl::StrCat(label, " \"", a.text.substr(0, 80),
                         "\" is not the context at answer_start ", a.start,
                         " (which reads \"",
                         context.substr(a.byte_start, shown), "\")"));
  }
  return a;
}

// Answers as {"text": [...], "answer_start": [...]} or as a list of
// {"text", "answer_start"}.
absl::StatusOr<std::vector<QaAnswer>> ParseAnswers(const Json& answers,
                                                   const std::string& context,
                                                   const Where& where,
                                                   const std::string& id,
                                                   const std::string& field) {
  const std::vector<int64_t> cp_bytes = CodePointBytes(context);
  std::vector<QaAnswer> out;
  if (answers.is_object()) {
    if (!answers.contains("text") || !answers.contains("answer_start") ||
        !answers["text"].is_array() || !answers["answer_start"].is_array()) {
      return where.Error(id, absl::StrCat("\"", field,
                                          "\" must hold \"text\" and "
                                          "\"answer_start\" lists"));
    }
    const Json& texts = answers["text"];
    const Json& starts = answers["answer_start"];
    if (texts.size() != starts.size()) {
      return where.Error(
          id, absl::StrCat("\"", field, "\" has ", texts.size(), " texts but ",
                           starts.size(), " answer_start values"));
    }
    for (size_t i = 0; i < texts.size(); ++i) {
      ASSIGN_OR_RETURN(QaAnswer a,
                       MakeAnswer(texts[i], starts[i], context, cp_bytes, where,
                                  id, absl::StrCat("answer ", i)));
      out.push_back(std::move(a));
    }
    return out;
  }
  if (!answers.is_array()) {
    return where.Error(id, absl::StrCat("\"", field,
                                        "\" must be a list of {\"text\", "
                                        "\"answer_start\"} or an object of "
                                        "lists"));
  }
  for (size_t i = 0; i < answers.size(); ++i) {
    const Json& a = answers[i];
    if (!a.is_object()) {
      return where.Error(id, absl::StrCat("answer ", i, " is not an object"));
    }
    ASSIGN_OR_RETURN(
        QaAnswer ans,
        MakeAnswer(a.contains("text") ? a["text"] : Json(),
                   a.contains("answer_start") ? a["answer_start"] : Json(),
                   context, cp_bytes, where, id, absl::StrCat("answer ", i)));
    out.push_back(std::move(ans));
  }
  return out;
}

absl::StatusOr<std::string> GetText(const Json& obj, const std::string& key,
                                    const Where& where, const std::string& id) {
  if (!obj.contains(key)) {
    return where.Error(id, absl::StrCat("missing field \"", key, "\""));
  }
  if (!obj[key].is_string()) {
    return where.Error(id, absl::StrCat("field \"", key, "\" is not a string"));
  }
  std::string s = obj[key].get<std::string>();
  if (absl::StripAsciiWhitespace(s).empty()) {
    return where.Error(id, absl::StrCat("field \"", key, "\" is empty"));
  }
  return s;
}

// Fills the answers and is_impossible of `ex` from a question object.
// `shown_id` is the id messages name (empty: none).
absl::Status FillAnswers(const Json& q, const std::string& field,
                         bool require_answers, const Where& where,
                         const std::string& shown_id, QaExample* ex) {
  bool impossible = false;
  if (q.contains("is_impossible") && !q["is_impossible"].is_null()) {
    if (!q["is_impossible"].is_boolean()) {
      return where.Error(shown_id, "\"is_impossible\" must be true or false");
    }
    impossible = q["is_impossible"].get<bool>();
  }
  if (!q.contains(field) || q[field].is_null()) {
    if (require_answers && !impossible) {
      return where.Error(shown_id,
                         absl::StrCat("missing field \"", field, "\""));
    }
    ex->is_impossible = impossible;
    return absl::OkStatus();
  }
  // SQuAD v2 keeps the answers of unanswerable questions elsewhere
  // ("plausible_answers"); whatever "answers" says, none is trained on.
  if (!impossible) {
    ASSIGN_OR_RETURN(ex->answers, ParseAnswers(q[field], ex->context, where,
                                               shown_id, field));
  }
  ex->is_impossible = impossible || ex->answers.empty();
  return absl::OkStatus();
}

absl::StatusOr<std::string> IdOf(const Json& q, const Where& where) {
  if (!q.contains("id") || q["id"].is_null()) return std::string();
  if (q["id"].is_string()) return q["id"].get<std::string>();
  if (q["id"].is_number_integer()) return q["id"].dump();
  return where.Error("", "\"id\" must be a string or an integer");
}

absl::StatusOr<std::vector<QaExample>> ParseSquad(const Json& doc,
                                                  const std::string& name,
                                                  const QaColumns& columns,
                                                  bool require_answers) {
  std::vector<QaExample> out;
  const Json& data = doc["data"];
  Where top{&name, 1, "data"};
  if (!data.is_array()) return top.Error("", "must be a list of articles");
  for (size_t a = 0; a < data.size(); ++a) {
    Where art{&name, 1, absl::StrCat("data[", a, "]")};
    if (!data[a].is_object() || !data[a].contains("paragraphs") ||
        !data[a]["paragraphs"].is_array()) {
      return art.Error("", "needs a \"paragraphs\" list");
    }
    const Json& paragraphs = data[a]["paragraphs"];
    for (size_t p = 0; p < paragraphs.size(); ++p) {
      Where par{&name, 1, absl::StrCat(art.path, ".paragraphs[", p, "]")};
      const Json& para = paragraphs[p];
      if (!para.is_object()) return par.Error("", "is not an object");
      ASSIGN_OR_RETURN(std::string context, GetText(para, "context", par, ""));
      if (!para.contains("qas") || !para["qas"].is_array()) {
        return par.Error("", "needs a \"qas\" list");
      }
      const Json& qas = para["qas"];
      for (size_t i = 0; i < qas.size(); ++i) {
        Where qw{&name, 1, absl::StrCat(par.path, ".qas[", i, "]")};
        if (!qas[i].is_object()) return qw.Error("", "is not an object");
        QaExample ex;
        ex.line = 1;
        ASSIGN_OR_RETURN(ex.id, IdOf(qas[i], qw));
        if (ex.id.empty()) ex.id = absl::StrCat(a, ".", p, ".", i);
        ASSIGN_OR_RETURN(ex.question, GetText(qas[i], "question", qw, ex.id));
        ex.context = context;
        RETURN_IF_ERROR(
            FillAnswers(qas[i], "answers", require_answers, qw, ex.id, &ex));
        out.push_back(std::move(ex));
      }
    }
  }
  (void)columns;  // SQuAD files use their own fixed names.
  return out;
}

absl::StatusOr<std::vector<QaExample>> ParseJsonl(const std::string& contents,
                                                  const std::string& name,
                                                  const QaColumns& columns,
                                                  bool require_answers) {
  std::vector<QaExample> out;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    if (end == std::string::npos) end = contents.size();
    absl::string_view line(contents.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    Where where{&name, line_no, ""};
    Json row;
    try {
      row = Json::parse(line.begin(), line.end());
    } catch (const Json::exception& e) {
      return where.Error("", absl::StrCat("invalid JSON: ", e.what()));
    }
    if (!row.is_object()) return where.Error("", "expected a JSON object");
    QaExample ex;
    ex.line = line_no;
    ASSIGN_OR_RETURN(ex.id, IdOf(row, where));
    const bool named = !ex.id.empty();
    if (!named) ex.id = absl::StrCat(line_no);
    const std::string shown = named ? ex.id : "";
    ASSIGN_OR_RETURN(ex.question, GetText(row, columns.question, where, shown));
    ASSIGN_OR_RETURN(ex.context, GetText(row, columns.context, where, shown));
    RETURN_IF_ERROR(
        FillAnswers(row, columns.answers, require_answers, where, shown, &ex));
    out.push_back(std::move(ex));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<QaExample>> ReadQaExamples(
    const std::string& path, const std::string& display_name,
    const QaColumns& columns, bool require_answers) {
  const std::string& name = display_name.empty() ? path : display_name;
  ASSIGN_OR_RETURN(std::string contents, ReadSpanDataFile(path, name));
  // A SQuAD file is one JSON object with "data"; anything else is JSONL
  // (whose single-row files also parse as one object, without "data").
  std::vector<QaExample> examples;
  const size_t first = contents.find_first_not_of(" \t\r\n");
  bool squad = false;
  if (first != std::string::npos && contents[first] == '{') {
    Json doc = Json::parse(contents, nullptr, /*allow_exceptions=*/false);
    if (doc.is_object() && doc.contains("data") &&
        !doc.contains(columns.question)) {
      squad = true;
      ASSIGN_OR_RETURN(examples,
                       ParseSquad(doc, name, columns, require_answers));
    }
  }
  if (!squad) {
    ASSIGN_OR_RETURN(examples,
                     ParseJsonl(contents, name, columns, require_answers));
  }
  if (examples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": no questions"));
  }
  std::set<std::string> ids;
  for (const QaExample& ex : examples) {
    if (!ids.insert(ex.id).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ":", ex.line, ": duplicate question id \"", ex.id, "\""));
    }
  }
  return examples;
}

absl::StatusOr<QaWindowing> BuildQaFeatures(
    const Tokenizer& tokenizer, const std::vector<QaExample>& examples,
    int64_t max_length, int64_t doc_stride) {
  QaWindowing out;
  out.stride = -1;
  for (size_t x = 0; x < examples.size(); ++x) {
    const QaExample& ex = examples[x];
    const TokenizedText full = tokenizer.Encode(
        ex.question, std::string_view(ex.context), /*add_special_tokens=*/true);
    const int64_t n = static_cast<int64_t>(full.ids.size());
    int64_t ctx_first = n, ctx_last = -1;
    std::vector<int64_t> question_tokens;
    for (int64_t i = 0; i < n; ++i) {
      if (full.sequence_ids[i] == 1) {
        ctx_first = std::min(ctx_first, i);
        ctx_last = i;
      } else if (full.sequence_ids[i] == 0 && ctx_last < 0) {
        question_tokens.push_back(i);
      }
    }
    // Around the context: the specials and the question before it, the
    // specials after it.
    std::vector<int64_t> prefix, suffix;
    const int64_t ctx_n = ctx_last < 0 ? 0 : ctx_last - ctx_first + 1;
    for (int64_t i = 0; i < n; ++i) {
      if (ctx_last >= 0 && i >= ctx_first && i <= ctx_last) continue;
      if (ctx_last < 0 || i < ctx_first) {
        prefix.push_back(i);
      } else {
        suffix.push_back(i);
      }
    }
    int64_t room = max_length - static_cast<int64_t>(prefix.size()) -
                   static_cast<int64_t>(suffix.size());
    // A long question gives way until the context has half the budget.
    const int64_t want = std::min<int64_t>(ctx_n, max_length / 2);
    if (room < want && !question_tokens.empty()) {
      const int64_t drop = std::min<int64_t>(
          want - room, static_cast<int64_t>(question_tokens.size()) - 1);
      if (drop > 0) {
        std::set<int64_t> dropped(question_tokens.end() - drop,
                                  question_tokens.end());
        std::vector<int64_t> kept;
        for (int64_t i : prefix) {
          if (!dropped.count(i)) kept.push_back(i);
        }
        prefix = std::move(kept);
        room += drop;
        ++out.truncated_questions;
      }
    }
    if (room < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_seq_length ", max_length,
          " leaves no room for the context after the question and special "
          "tokens (question \"",
          ex.id, "\")"));
    }
    const int64_t stride = doc_stride < room ? doc_stride : room / 2;
    out.stride = std::max(out.stride, stride);
    const int64_t step = std::max<int64_t>(1, room - stride);
    const bool has_answer = !ex.is_impossible && !ex.answers.empty();
    const int64_t ab = has_answer ? ex.answers[0].byte_start : 0;
    const int64_t ae = has_answer ? ex.answers[0].byte_end : 0;
    for (int64_t begin = 0;; begin += step) {
      const int64_t end = std::min(ctx_n, begin + room);
      QaFeature f;
      f.example = static_cast<int64_t>(x);
      TokenizedText& e = f.encoding;
      auto add = [&](int64_t i) {
        e.ids.push_back(full.ids[i]);
        e.type_ids.push_back(full.type_ids[i]);
        e.offsets.push_back(full.offsets[i]);
        e.sequence_ids.push_back(full.sequence_ids[i]);
        e.special_mask.push_back(full.special_mask[i]);
      };
      for (int64_t i : prefix) add(i);
      f.context_begin = static_cast<int64_t>(e.ids.size());
      for (int64_t i = begin; i < end; ++i) add(ctx_first + i);
      f.context_end = static_cast<int64_t>(e.ids.size());
      for (int64_t i : suffix) add(i);
      if (has_answer && f.context_end > f.context_begin &&
          e.offsets[f.context_begin].first <= ab &&
          e.offsets[f.context_end - 1].second >= ae) {
        int64_t s = f.context_begin;
        while (s + 1 < f.context_end && e.offsets[s + 1].first <= ab) ++s;
        int64_t t = f.context_end - 1;
        while (t - 1 >= s && e.offsets[t - 1].second >= ae) --t;
        f.start_position = s;
        f.end_position = t;
      }
      out.features.push_back(std::move(f));
      if (end >= ctx_n) break;
    }
  }
  if (out.stride < 0) out.stride = doc_stride;
  return out;
}

QaPrediction PostProcessQa(const QaExample& example,
                           const std::vector<const QaFeature*>& features,
                           const std::vector<std::vector<float>>& start_logits,
                           const std::vector<std::vector<float>>& end_logits,
                           const QaPostProcessing& options) {
  struct Best {
    bool found = false;
    double logits = 0;
    double prob = 0;
    int64_t byte_begin = 0, byte_end = 0;
  } best;
  bool have_null = false;
  double null_logits = 0, null_prob = 0;
  auto log_sum_exp = [](const std::vector<float>& v) {
    double m = -INFINITY;
    for (float x : v) m = std::max<double>(m, x);
    double sum = 0;
    for (float x : v) sum += std::exp(x - m);
    return m + std::log(sum);
  };
  auto top = [&](const std::vector<float>& v) {
    std::vector<int64_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    const size_t k = std::min<size_t>(idx.size(), options.n_best);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int64_t a, int64_t b) {
                        return v[a] > v[b] || (v[a] == v[b] && a < b);
                      });
    idx.resize(k);
    return idx;
  };
  for (size_t f = 0; f < features.size(); ++f) {
    const QaFeature& feat = *features[f];
    const std::vector<float>& sl = start_logits[f];
    const std::vector<float>& el = end_logits[f];
    const int64_t len = std::min<int64_t>(
        {static_cast<int64_t>(sl.size()), static_cast<int64_t>(el.size()),
         static_cast<int64_t>(feat.encoding.ids.size())});
    if (len == 0) continue;
    const double lse_s = log_sum_exp(sl), lse_e = log_sum_exp(el);
    const double null = static_cast<double>(sl[0]) + el[0];
    if (!have_null || null < null_logits) {
      have_null = true;
      null_logits = null;
      null_prob = std::exp(null - lse_s - lse_e);
    }
    const auto& off = feat.encoding.offsets;
    for (int64_t s : top(sl)) {
      if (s < feat.context_begin || s >= feat.context_end || s >= len) continue;
      for (int64_t e : top(el)) {
        if (e < s || e >= feat.context_end || e >= len) continue;
        if (e - s + 1 > options.max_answer_length) continue;
        if (off[e].second <= off[s].first) continue;
        const double score = static_cast<double>(sl[s]) + el[e];
        if (best.found && score <= best.logits) continue;
        best.found = true;
        best.logits = score;
        best.prob = std::exp(score - lse_s - lse_e);
        best.byte_begin = off[s].first;
        best.byte_end = off[e].second;
      }
    }
  }
  QaPrediction p;
  if (best.found) {
    p.score_diff = null_logits - best.logits;
  } else {
    // No span: the null answer is all there is.
    p.score_diff = INFINITY;
  }
  const bool no_answer =
      !best.found || (options.allow_no_answer && have_null &&
                      p.score_diff > options.null_score_diff_threshold);
  if (no_answer) {
    p.score = have_null ? null_prob : 0;
    return p;
  }
  const std::string& ctx = example.context;
  const int64_t b = std::clamp<int64_t>(best.byte_begin, 0, ctx.size());
  const int64_t e = std::clamp<int64_t>(best.byte_end, b, ctx.size());
  p.text = ctx.substr(b, e - b);
  const std::vector<int64_t> char_of_byte = CharIndexOfBytes(ctx);
  p.start = char_of_byte[b];
  p.end = char_of_byte[e];
  p.score = best.prob;
  return p;
}

}  // namespace lathe
