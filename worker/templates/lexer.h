// Internal to the template engine (template.h is its API): cutting a
// template's source into text and tags, with Jinja's whitespace rules, and
// a tag's expression into tokens. Errors are thrown as TemplateError.
#ifndef LATHE_WORKER_TEMPLATES_LEXER_H_
#define LATHE_WORKER_TEMPLATES_LEXER_H_

#include <string>
#include <string_view>
#include <vector>

namespace lathe {
namespace templates {

enum class TokKind { kName, kString, kInt, kFloat, kOp, kEnd };
struct Token {
  TokKind kind;
  std::string text;
};

// The tokens of one tag's content, ending with a kEnd token.
std::vector<Token> LexExpression(std::string_view src);

struct Segment {
  enum Kind { kText, kExpr, kStmt } kind;
  std::string text;  // Text, or a tag's content without its delimiters.
};

// Splits the source into text, {{ }} and {% %} segments, dropping comments
// and applying "-" whitespace control, trim_blocks (one newline after a
// block tag) and lstrip_blocks (spaces before a block tag on its line).
std::vector<Segment> Split(std::string_view src);

}  // namespace templates
}  // namespace lathe

#endif  // LATHE_WORKER_TEMPLATES_LEXER_H_
