// Chat templates: a tokenizer_config.json "chat_template" string applied to
// a conversation as transformers' apply_chat_template applies it, on the
// template engine of worker/templates (see template.h for the Jinja subset
// it implements). No LibTorch.
#ifndef LATHE_WORKER_TASKS_CHAT_TEMPLATE_DATA_H_
#define LATHE_WORKER_TASKS_CHAT_TEMPLATE_DATA_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/templates/template.h"

namespace lathe {

struct ChatTemplateVariables {
  std::string bos_token;
  std::string eos_token;
  bool add_generation_prompt = false;
};

// A parsed template; immutable, Render is safe from several threads.
class ChatTemplate {
 public:
  // INVALID_ARGUMENT "chat template: ..." for syntax errors and unsupported
  // constructs (naming them).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Parse(
      std::string_view source);

  // Renders with `messages` (a JSON array of objects such as {"role":
  // "user", "content": "..."}), bos_token, eos_token and
  // add_generation_prompt defined; every other variable is undefined.
  // raise_exception("msg") is INVALID_ARGUMENT "chat template: msg". Output
  // is capped at 16 MiB.
  absl::StatusOr<std::string> Render(const nlohmann::json& messages,
                                     const ChatTemplateVariables& vars) const;

 private:
  explicit ChatTemplate(std::unique_ptr<Template> engine)
      : template_(std::move(engine)) {}
  std::unique_ptr<Template> template_;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_CHAT_TEMPLATE_DATA_H_
