#include "worker/templates/template.h"

#include <map>
#include <utility>

#include "worker/templates/ast.h"
#include "worker/templates/parser.h"
#include "worker/templates/renderer.h"
#include "worker/templates/value.h"

namespace lathe {

struct Template::Impl {
  templates::Body body;
};

Template::Template(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Template::~Template() = default;

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(
    std::string_view source) {
  if (source.size() > templates::kMaxOutput) {
    return absl::InvalidArgumentError("longer than 16 MiB");
  }
  try {
    auto impl = std::make_unique<Impl>();
    impl->body = templates::ParseTemplate(source);
    return std::unique_ptr<Template>(new Template(std::move(impl)));
  } catch (const templates::TemplateError& e) {
    return absl::InvalidArgumentError(e.what());
  }
}

absl::StatusOr<std::string> Template::Render(
    const nlohmann::json& variables) const {
  if (!variables.is_object()) {
    return absl::InvalidArgumentError("the variables must be a JSON object");
  }
  std::string out;
  try {
    std::map<std::string, templates::Value> globals;
    for (auto it = variables.begin(); it != variables.end(); ++it) {
      globals[it.key()] = templates::FromJson(it.value(), it.key());
    }
    templates::RenderBody(impl_->body, std::move(globals), &out);
  } catch (const templates::TemplateError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return out;
}

}  // namespace lathe
