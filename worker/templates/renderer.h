// Internal to the template engine (template.h is its API): executing a
// parsed template. Each call has its own scopes and output, and only reads
// the tree, so renderings of one template may run at once.
#ifndef LATHE_WORKER_TEMPLATES_RENDERER_H_
#define LATHE_WORKER_TEMPLATES_RENDERER_H_

#include <map>
#include <string>

#include "worker/templates/ast.h"
#include "worker/templates/value.h"

namespace lathe {
namespace templates {

// Runs `body` with `globals` defined, appending to *out (at most kMaxOutput
// bytes). Throws TemplateError.
void RenderBody(const Body& body, std::map<std::string, Value> globals,
                std::string* out);

}  // namespace templates
}  // namespace lathe

#endif  // LATHE_WORKER_TEMPLATES_RENDERER_H_
