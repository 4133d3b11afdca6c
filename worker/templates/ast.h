// Internal to the template engine (template.h is its API): the parsed
// form of a template, a tree of statements (Node) over expressions (Expr).
// Immutable once parsed, so several renderings may read it at once.
#ifndef LATHE_WORKER_TEMPLATES_AST_H_
#define LATHE_WORKER_TEMPLATES_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "worker/templates/value.h"

namespace lathe {
namespace templates {

struct Expr;
using ExprP = std::shared_ptr<Expr>;
struct Expr {
  enum Kind {
    kLiteral,
    kName,
    kAttr,
    kIndex,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kNot,
    kNeg,
    kBinary,
    kCond,
    kList,
    kDict
  } kind;
  Value literal;
  std::string name;  // Name, attribute, operator, filter or test.
  bool negated = false;
  std::vector<ExprP> args;  // Operands; null entries are absent slice parts.
  std::vector<std::pair<std::string, ExprP>> kwargs;
};

struct Node;
using NodeP = std::shared_ptr<Node>;
using Body = std::vector<NodeP>;
struct Node {
  enum Kind { kText, kOutput, kIf, kFor, kSet, kBlock } kind;
  std::string text;
  ExprP expr;  // Output, set value, for iterable.
  std::vector<std::pair<ExprP, Body>> branches;  // if / elif
  Body body;                                     // for, generation block
  Body else_body;                                // if, for
  std::string var;                               // for, set target
  std::string attr;                              // set NS.ATTR
  ExprP filter;                                  // for ... if COND
};

}  // namespace templates
}  // namespace lathe

#endif  // LATHE_WORKER_TEMPLATES_AST_H_
