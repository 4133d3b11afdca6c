// Feeds: a chat template (the Jinja subset of a tokenizer_config.json's
// "chat_template"), optionally followed by a NUL and a JSON object of
// variables, to Template::Parse and Render (worker/templates/template.h);
// without variables it renders a three-message chat as the training data
// does. Checks: no crash or sanitizer report (no exception escapes, nesting
// stays bounded); errors are INVALID_ARGUMENT; output stays under the 16 MiB
// cap; rendering the same template twice gives the same text.
#include <cstdint>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_util.h"
#include "worker/templates/template.h"

namespace {

const nlohmann::json& ChatVariables() {
  static const nlohmann::json* vars = new nlohmann::json(nlohmann::json::parse(
      R"({"messages": [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Hi <b>there</b>"},
                       {"role": "assistant", "content": "Hello."}],
          "bos_token": "<s>", "eos_token": "</s>",
          "add_generation_prompt": true})"));
  return *vars;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string_view> parts =
      lathe::fuzz::SplitAtNul(data, size, 2);
  nlohmann::json vars = ChatVariables();
  if (parts.size() > 1) {
    vars = nlohmann::json::parse(parts[1], nullptr, /*allow_exceptions=*/false);
    if (!vars.is_object()) return 0;
  }
  auto parsed = lathe::Template::Parse(parts[0]);
  if (!parsed.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(parsed.status()));
    return 0;
  }
  const absl::StatusOr<std::string> out = (*parsed)->Render(vars);
  if (!out.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(out.status()));
  } else {
    FUZZ_CHECK(out->size() <= (size_t{16} << 20));
  }
  const absl::StatusOr<std::string> again = (*parsed)->Render(vars);
  FUZZ_CHECK(again.status() == out.status());
  if (out.ok()) FUZZ_CHECK(*again == *out);
  return 0;
}
