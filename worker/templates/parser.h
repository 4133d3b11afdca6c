// Internal to the template engine (template.h is its API): the parser,
// from source text to the statement tree of ast.h. Errors (syntax, and
// constructs the engine does not implement, named) are thrown as
// TemplateError.
#ifndef LATHE_WORKER_TEMPLATES_PARSER_H_
#define LATHE_WORKER_TEMPLATES_PARSER_H_

#include <string_view>

#include "worker/templates/ast.h"

namespace lathe {
namespace templates {

Body ParseTemplate(std::string_view source);

}  // namespace templates
}  // namespace lathe

#endif  // LATHE_WORKER_TEMPLATES_PARSER_H_
