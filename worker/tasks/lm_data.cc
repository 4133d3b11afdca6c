#include "worker/tasks/lm_data.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lathe {
namespace {

constexpr size_t kMaxLine = 64u << 20;
constexpr size_t kMaxMessages = 100000;

absl::Status RowError(const std::string& name, int64_t line,
                      const std::string& message) {
  return absl::InvalidArgumentError(
      absl::StrCat(name, ":", line, ": ", message));
}

bool IsBlank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
  });
}

absl::StatusOr<LmRows> ReadText(std::ifstream& in, const std::string& name) {
  LmRows out;
  out.format = LmFormat::kText;
  std::string line, doc;
  int64_t line_no = 0, start = 0;
  auto flush = [&] {
    if (!doc.empty()) {
      LmRow r;
      r.text = std::move(doc);
      r.line = start;
      out.rows.push_back(std::move(r));
    }
    doc.clear();
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (line.size() > kMaxLine) return RowError(name, line_no, "line too long");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (IsBlank(line)) {
      flush();
      continue;
    }
    if (doc.empty()) {
      start = line_no;
    } else {
      doc += '\n';
    }
    doc += line;
    if (doc.size() > kMaxLine)
      return RowError(name, start, "document too long");
  }
  flush();
  return out;
}

absl::StatusOr<std::string> StringField(const nlohmann::json& obj,
                                        const std::string& key,
                                        const std::string& name, int64_t line) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    return RowError(name, line, absl::StrCat("missing field \"", key, "\""));
  }
  if (!it->is_string()) {
    return RowError(name, line,
                    absl::StrCat("field \"", key, "\" must be a string"));
  }
  return it->get<std::string>();
}

}  // namespace

const char* LmFormatName(LmFormat format) {
  switch (format) {
    case LmFormat::kPromptCompletion:
      return "prompt/completion";
    case LmFormat::kChat:
      return "chat";
    case LmFormat::kText:
      return "text";
  }
  return "text";
}

LmColumns LmColumnsFromParams(const TrainParams& params) {
  LmColumns c;
  if (!params.prompt_column.empty()) c.prompt = params.prompt_column;
  if (!params.completion_column.empty())
    c.completion = params.completion_column;
  if (!params.messages_column.empty()) c.messages = params.messages_column;
  if (!params.text_column.empty()) c.text = params.text_column;
  return c;
}

absl::StatusOr<LmRows> ReadLmRows(const std::string& path,
                                  const std::string& display_name,
                                  const LmColumns& columns,
                                  bool for_prediction) {
  const std::string& name = display_name.empty() ? path : display_name;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": cannot be read"));
  }
  const bool txt = absl::EndsWithIgnoreCase(display_name, ".txt") ||
                   (!absl::EndsWithIgnoreCase(display_name, ".jsonl") &&
                    !absl::EndsWithIgnoreCase(display_name, ".json") &&
                    absl::EndsWithIgnoreCase(path, ".txt"));
  LmRows out;
  if (txt) {
    ASSIGN_OR_RETURN(out, ReadText(in, name));
  } else {
    std::string line;
    int64_t line_no = 0;
    bool have_format = false;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.size() > kMaxLine) {
        return RowError(name, line_no, "line too long");
      }
      if (IsBlank(line)) continue;
      nlohmann::json obj = nlohmann::json::parse(line, nullptr, false);
      if (obj.is_discarded() || !obj.is_object()) {
        return RowError(name, line_no, "not a JSON object");
      }
      LmFormat f;
      if (obj.contains(columns.messages)) {
        f = LmFormat::kChat;
      } else if (obj.contains(columns.prompt)) {
        f = LmFormat::kPromptCompletion;
      } else if (obj.contains(columns.text)) {
        f = LmFormat::kText;
      } else {
        return RowError(
            name, line_no,
            absl::StrCat("expected \"", columns.prompt, "\"/\"",
                         columns.completion, "\", \"", columns.messages,
                         "\" or \"", columns.text, "\""));
      }
      if (!have_format) {
        out.format = f;
        have_format = true;
      } else if (f != out.format) {
        return RowError(name, line_no,
                        absl::StrCat("a ", LmFormatName(f),
                                     " row in a file whose first row is ",
                                     LmFormatName(out.format),
                                     " (formats cannot be mixed)"));
      }
      LmRow row;
      row.line = line_no;
      if (f == LmFormat::kText) {
        ASSIGN_OR_RETURN(row.text,
                         StringField(obj, columns.text, name, line_no));
      } else if (f == LmFormat::kPromptCompletion) {
        ASSIGN_OR_RETURN(row.prompt,
                         StringField(obj, columns.prompt, name, line_no));
        if (!for_prediction || obj.contains(columns.completion)) {
          ASSIGN_OR_RETURN(row.completion,
                           StringField(obj, columns.completion, name, line_no));
        }
      } else {
        const nlohmann::json& m = obj[columns.messages];
        if (!m.is_array() || m.empty()) {
          return RowError(name, line_no,
                          absl::StrCat("\"", columns.messages,
                                       "\" must be a non-empty array"));
        }
        if (m.size() > kMaxMessages) {
          return RowError(name, line_no, "too many messages");
        }
        for (size_t k = 0; k < m.size(); ++k) {
          if (!m[k].is_object() || !m[k].contains("role") ||
              !m[k]["role"].is_string() || !m[k].contains("content") ||
              !m[k]["content"].is_string()) {
            return RowError(
                name, line_no,
                absl::StrCat("message ", k,
                             " needs string \"role\" and \"content\""));
          }
        }
        if (!for_prediction && m.back()["role"] != "assistant") {
          return RowError(name, line_no,
                          "the last message must be the assistant's reply "
                          "(the completion to train on)");
        }
        row.messages = m;
      }
      out.rows.push_back(std::move(row));
    }
  }
  if (out.rows.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": no rows"));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ChatFormatter>> ChatFormatter::ForTokenizer(
    const Tokenizer& tokenizer) {
  std::optional<std::string> source = tokenizer.chat_template();
  if (source.has_value() && !source->empty()) {
    return WithTemplate(tokenizer, *source);
  }
  auto f = std::unique_ptr<ChatFormatter>(new ChatFormatter(tokenizer));
  if (tokenizer.eos_id().has_value()) {
    f->eos_ = tokenizer.IdToToken(*tokenizer.eos_id()).value_or("");
  }
  return f;
}

absl::StatusOr<std::unique_ptr<ChatFormatter>> ChatFormatter::WithTemplate(
    const Tokenizer& tokenizer, const std::string& source) {
  auto f = std::unique_ptr<ChatFormatter>(new ChatFormatter(tokenizer));
  ASSIGN_OR_RETURN(f->template_, ChatTemplate::Parse(source));
  if (tokenizer.bos_id().has_value()) {
    f->bos_ = tokenizer.IdToToken(*tokenizer.bos_id()).value_or("");
  }
  if (tokenizer.eos_id().has_value()) {
    f->eos_ = tokenizer.IdToToken(*tokenizer.eos_id()).value_or("");
  }
  return f;
}

absl::StatusOr<std::string> ChatFormatter::Render(
    const nlohmann::json& messages, bool add_generation_prompt) const {
  if (template_ != nullptr) {
    ChatTemplateVariables vars;
    vars.bos_token = bos_;
    vars.eos_token = eos_;
    vars.add_generation_prompt = add_generation_prompt;
    return template_->Render(messages, vars);
  }
  std::string out;
  for (const nlohmann::json& m : messages) {
    const std::string role = m["role"].get<std::string>();
    absl::StrAppend(&out, "<|", role, "|>\n", m["content"].get<std::string>(),
                    role == "assistant" ? eos_ : "", "\n");
  }
  if (add_generation_prompt) out += "<|assistant|>\n";
  return out;
}

absl::StatusOr<std::pair<std::string, std::string>>
ChatFormatter::SplitForTraining(const nlohmann::json& messages) const {
  if (!messages.is_array() || messages.empty() ||
      messages.back().value("role", "") != "assistant") {
    return absl::InvalidArgumentError(
        "the last message must be the assistant's reply");
  }
  nlohmann::json head = messages;
  head.erase(head.end() - 1);
  ASSIGN_OR_RETURN(std::string prompt, Render(head, true));
  if (template_ == nullptr) {
    return std::make_pair(prompt,
                          messages.back()["content"].get<std::string>());
  }
  ASSIGN_OR_RETURN(std::string full, Render(messages, false));
  if (full.compare(0, prompt.size(), prompt) != 0) {
    return absl::InvalidArgumentError(
        "the chat template renders the conversation without its last reply "
        "(with the generation prompt) differently from the start of the "
        "whole conversation, so the reply cannot be separated");
  }
  return std::make_pair(prompt, full.substr(prompt.size()));
}

absl::StatusOr<std::string> ChatFormatter::PromptForGeneration(
    const nlohmann::json& messages) const {
  nlohmann::json head = messages;
  if (!head.empty() && head.back().value("role", "") == "assistant") {
    head.erase(head.end() - 1);
  }
  return Render(head, true);
}

absl::StatusOr<LmExample> EncodeLmExample(const Tokenizer& tokenizer,
                                          const ChatFormatter* chat,
                                          LmFormat format, const LmRow& row,
                                          int64_t max_length,
                                          bool completion_only) {
  LmExample ex;
  std::vector<int64_t> prompt, reply;
  bool append_eos = true;
  if (format == LmFormat::kText) {
    reply = tokenizer.Encode(row.text, std::nullopt, true).ids;
  } else if (format == LmFormat::kPromptCompletion) {
    prompt = tokenizer.Encode(row.prompt, std::nullopt, true).ids;
    reply = tokenizer.Encode(row.completion, std::nullopt, false).ids;
  } else {
    if (chat == nullptr) {
      return absl::InvalidArgumentError("chat rows need a chat formatter");
    }
    ASSIGN_OR_RETURN(auto parts, chat->SplitForTraining(row.messages));
    // A template writes its own special tokens, the end of the reply
    // included; the default format relies on the tokenizer's.
    const bool tmpl = chat->uses_template();
    prompt = tokenizer.Encode(parts.first, std::nullopt, !tmpl).ids;
    reply = tokenizer.Encode(parts.second, std::nullopt, false).ids;
    append_eos = !tmpl;
  }
  if (append_eos && tokenizer.eos_id().has_value()) {
    reply.push_back(*tokenizer.eos_id());
  }
  const bool mask_prompt = completion_only && format != LmFormat::kText;
  for (int64_t id : prompt) {
    ex.ids.push_back(id);
    ex.labels.push_back(mask_prompt ? kIgnoreLabel : id);
  }
  for (int64_t id : reply) {
    ex.ids.push_back(id);
    ex.labels.push_back(id);
  }
  if (static_cast<int64_t>(ex.ids.size()) > max_length) {
    ex.ids.resize(max_length);
    ex.labels.resize(max_length);
  }
  return ex;
}

absl::StatusOr<std::vector<int64_t>> EncodeLmPrompt(const Tokenizer& tokenizer,
                                                    const ChatFormatter* chat,
                                                    LmFormat format,
                                                    const LmRow& row,
                                                    int64_t max_length) {
  std::vector<int64_t> ids;
  if (format == LmFormat::kText) {
    ids = tokenizer.Encode(row.text, std::nullopt, true).ids;
  } else if (format == LmFormat::kPromptCompletion) {
    ids = tokenizer.Encode(row.prompt, std::nullopt, true).ids;
  } else {
    if (chat == nullptr) {
      return absl::InvalidArgumentError("chat rows need a chat formatter");
    }
    ASSIGN_OR_RETURN(std::string text, chat->PromptForGeneration(row.messages));
    ids = tokenizer.Encode(text, std::nullopt, !chat->uses_template()).ids;
  }
  if (max_length > 0 && static_cast<int64_t>(ids.size()) > max_length) {
    ids.erase(ids.begin(), ids.end() - max_length);
  }
  return ids;
}

}  // namespace lathe
