// The template engine: the subset of Jinja that Hugging Face chat templates
// use, rendered as Jinja2 renders it with trim_blocks and lstrip_blocks on
// (how transformers configures it). It knows nothing of chats: the caller
// names the variables a template sees. No LibTorch.
//
// Supported: text, {{ }}, {% %}, {# #} with "-" whitespace control;
// statements if/elif/else, for (with loop.index, index0, first, last,
// length, revindex, revindex0, an "if" filter and else), set NAME = ...,
// set NS.ATTR = ..., generation blocks (rendered as plain text);
// expressions with literals, lists, dicts, attribute and item access,
// slices (including [::-1]), calls, and/or/not, comparisons, in / not in,
// + - * / // % ~, inline if/else; the functions raise_exception and
// namespace; string methods strip/lstrip/rstrip/startswith/endswith/split/
// upper/lower/replace and dict get/items/keys/values; filters length,
// count, trim, tojson, upper, lower, string, first, last, join, reverse,
// default (d), list, items, capitalize; tests defined, undefined, none,
// string, number, integer, mapping, sequence, iterable, boolean, true,
// false, even, odd. Anything else (macros, tuple unpacking, other filters,
// ...) is an error naming the construct: a template is never rendered
// approximately.
//
// Errors are absl::Status, never exceptions: INVALID_ARGUMENT with a message
// naming the problem and no prefix, so that callers add their own context.
// Sources and outputs are capped at 16 MiB, nesting at 200 levels.
#ifndef LATHE_WORKER_TEMPLATES_TEMPLATE_H_
#define LATHE_WORKER_TEMPLATES_TEMPLATE_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lathe {

// A parsed template; immutable, so Render is safe from several threads.
class Template {
 public:
  // INVALID_ARGUMENT for syntax errors and unsupported constructs (an
  // unknown filter or test included, even in a branch that never runs).
  static absl::StatusOr<std::unique_ptr<Template>> Parse(
      std::string_view source);
  ~Template();

  // Renders with each member of `variables` (a JSON object) defined as a
  // variable; every other name is undefined. raise_exception("msg") is
  // INVALID_ARGUMENT "msg"; so are unsupported methods and functions, which
  // are only found when called, and type errors.
  absl::StatusOr<std::string> Render(const nlohmann::json& variables) const;

  struct Impl;

 private:
  explicit Template(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TEMPLATES_TEMPLATE_H_
