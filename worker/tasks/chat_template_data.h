// Chat templates: the subset of Jinja that Hugging Face tokenizer_config.json
// "chat_template" strings use, rendered as transformers' apply_chat_template
// renders them (trim_blocks and lstrip_blocks on). No LibTorch.
//
// Supported: text, {{ }}, {% %}, {# #} with "-" whitespace control;
// statements if/elif/else, for (with loop.index, index0, first, last,
// length, revindex, revindex0, an "if" filter and else), set NAME = ...,
// set NS.ATTR = ..., generation blocks (rendered as plain text);
// expressions with literals, lists, dicts, attribute and item access,
// slices (including [::-1]), calls, and/or/not, comparisons, in / not in,
// + - * / // % ~, inline if/else; the functions raise_exception and
// namespace; string methods strip/lstrip/rstrip/startswith/endswith/split/
// upper/lower/replace and dict get; filters length, count, trim, tojson,
// upper, lower, string, first, last, join, reverse, default, list, items,
// capitalize; tests defined, undefined, none, string, number, integer,
// mapping, sequence, iterable, boolean, true, false, even, odd.
// Anything else (macros, tuple unpacking, other filters, ...) is an
// INVALID_ARGUMENT error naming the construct: a template is never rendered
// approximately.
#ifndef LATHE_WORKER_TASKS_CHAT_TEMPLATE_DATA_H_
#define LATHE_WORKER_TASKS_CHAT_TEMPLATE_DATA_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

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
  ~ChatTemplate();

  // Renders with `messages` (a JSON array of objects such as {"role":
  // "user", "content": "..."}), bos_token, eos_token and
  // add_generation_prompt defined; every other variable is undefined.
  // raise_exception("msg") is INVALID_ARGUMENT "chat template: msg". Output
  // is capped at 16 MiB.
  absl::StatusOr<std::string> Render(const nlohmann::json& messages,
                                     const ChatTemplateVariables& vars) const;

  struct Impl;

 private:
  explicit ChatTemplate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_CHAT_TEMPLATE_DATA_H_
