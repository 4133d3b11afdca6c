#include "worker/tasks/preference_data.h"

#include <algorithm>
#include <fstream>
#include <utility>

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

// `value` (a string, an array of messages, or an object holding them under
// "messages") as messages; a string becomes one message from `role`.
absl::StatusOr<nlohmann::json> AsMessages(const nlohmann::json& value,
                                          const std::string& column,
                                          const char* role) {
  if (value.is_object()) {
    if (!value.contains("messages")) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", column, "\" is an object without \"messages\""));
    }
    if (value.contains("tools") && !value["tools"].is_null() &&
        !value["tools"].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", column,
                       "\".tools: tool definitions are not supported (Lathe "
                       "renders the messages only)"));
    }
    return AsMessages(value["messages"], column + ".messages", role);
  }
  if (value.is_string()) {
    return nlohmann::json::array({{{"role", role}, {"content", value}}});
  }
  if (!value.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", column, "\" must be a string or an array of messages"));
  }
  if (value.size() > kMaxMessages) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", column, "\" has too many messages"));
  }
  for (size_t k = 0; k < value.size(); ++k) {
    const nlohmann::json& m = value[k];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
        !m.contains("content") || !m["content"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", column, "\" message ", k,
                       " needs string \"role\" and \"content\""));
    }
  }
  return value;
}

absl::StatusOr<PreferenceRow> ParseRow(const nlohmann::json& obj,
                                       const PreferenceColumns& c) {
  for (const std::string* key : {&c.chosen, &c.rejected}) {
    if (!obj.contains(*key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing field \"", *key, "\""));
    }
  }
  const bool has_prompt = obj.contains(c.prompt);
  const nlohmann::json& chosen = obj[c.chosen];
  const nlohmann::json& rejected = obj[c.rejected];
  PreferenceRow row;
  const bool chat =
      chosen.is_array() || rejected.is_array() ||
      (has_prompt && (obj[c.prompt].is_array() || obj[c.prompt].is_object()));
  if (!chat) {
    if (!has_prompt) {
      return absl::InvalidArgumentError(absl::StrCat(
          "missing field \"", c.prompt,
          "\" (text replies need a prompt; chat replies may carry it)"));
    }
    for (const std::string* key : {&c.prompt, &c.chosen, &c.rejected}) {
      if (!obj[*key].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "field \"", *key, "\" must be a string or an array of messages"));
      }
    }
    row.format = LmFormat::kPromptCompletion;
    row.chosen.prompt = row.rejected.prompt = obj[c.prompt].get<std::string>();
    row.chosen.completion = chosen.get<std::string>();
    row.rejected.completion = rejected.get<std::string>();
    return row;
  }
  row.format = LmFormat::kChat;
  nlohmann::json prompt = nlohmann::json::array();
  if (has_prompt) {
    ASSIGN_OR_RETURN(prompt, AsMessages(obj[c.prompt], c.prompt, "user"));
  }
  ASSIGN_OR_RETURN(nlohmann::json good,
                   AsMessages(chosen, c.chosen, "assistant"));
  ASSIGN_OR_RETURN(nlohmann::json bad,
                   AsMessages(rejected, c.rejected, "assistant"));
  if (!has_prompt) {
    // Whole conversations: the same history, then different replies.
    if (good.size() != bad.size() || good.empty() ||
        !std::equal(good.begin(), good.end() - 1, bad.begin())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "without \"", c.prompt, "\", \"", c.chosen, "\" and \"", c.rejected,
          "\" must be conversations that differ only in their last message"));
    }
  }
  for (const auto& [key, reply] :
       {std::pair<const std::string*, nlohmann::json*>{&c.chosen, &good},
        {&c.rejected, &bad}}) {
    if (reply->empty() || (*reply).back()["role"] != "assistant") {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", *key,
                       "\" must end with an assistant message (the reply "
                       "the pair scores)"));
    }
  }
  row.chosen.messages = prompt;
  row.rejected.messages = prompt;
  for (const auto& m : good) row.chosen.messages.push_back(m);
  for (const auto& m : bad) row.rejected.messages.push_back(m);
  return row;
}

}  // namespace

PreferenceColumns PreferenceColumnsFromParams(const TrainParams& params) {
  PreferenceColumns c;
  if (!params.prompt_column.empty()) c.prompt = params.prompt_column;
  if (!params.chosen_column.empty()) c.chosen = params.chosen_column;
  if (!params.rejected_column.empty()) c.rejected = params.rejected_column;
  return c;
}

absl::StatusOr<std::vector<PreferenceRow>> ReadPreferenceRows(
    const std::string& path, const std::string& display_name,
    const PreferenceColumns& columns) {
  const std::string& name = display_name.empty() ? path : display_name;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": cannot be read"));
  }
  std::vector<PreferenceRow> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.size() > kMaxLine) return RowError(name, line_no, "line too long");
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    nlohmann::json obj = nlohmann::json::parse(line, nullptr, false);
    if (obj.is_discarded() || !obj.is_object()) {
      return RowError(name, line_no, "not a JSON object");
    }
    absl::StatusOr<PreferenceRow> row = ParseRow(obj, columns);
    if (!row.ok()) {
      return RowError(name, line_no, std::string(row.status().message()));
    }
    row->line = line_no;
    row->chosen.line = row->rejected.line = line_no;
    out.push_back(*std::move(row));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": no rows (preference tuning reads {\"", columns.prompt,
        "\", \"", columns.chosen, "\", \"", columns.rejected, "\"} rows)"));
  }
  return out;
}

}  // namespace lathe
