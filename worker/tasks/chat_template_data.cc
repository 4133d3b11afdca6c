#include "worker/tasks/chat_template_data.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace lathe {
namespace {

// The engine's messages carry no context; a job's log should say where
// the error comes from.
absl::Status InChatTemplate(const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("chat template: ", status.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Parse(
    std::string_view source) {
  auto engine = Template::Parse(source);
  if (!engine.ok()) return InChatTemplate(engine.status());
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(*std::move(engine)));
}

absl::StatusOr<std::string> ChatTemplate::Render(
    const nlohmann::json& messages, const ChatTemplateVariables& vars) const {
  const nlohmann::json variables = {
      {"messages", messages},
      {"bos_token", vars.bos_token},
      {"eos_token", vars.eos_token},
      {"add_generation_prompt", vars.add_generation_prompt}};
  auto out = template_->Render(variables);
  if (!out.ok()) return InChatTemplate(out.status());
  return out;
}

}  // namespace lathe
