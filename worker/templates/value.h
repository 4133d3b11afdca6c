// Internal to the template engine (template.h is its API): the values a
// template computes with, Python's views of them (str, repr, json.dumps,
// truth, equality) and the error that unwinds to Template::Parse and
// Template::Render, which turn it into a status.
#ifndef LATHE_WORKER_TEMPLATES_VALUE_H_
#define LATHE_WORKER_TEMPLATES_VALUE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace lathe {
namespace templates {

// Caps on a template's size, output and intermediate text, and on nesting
// (of JSON values, expressions, statements and evaluation), so that no input
// exhausts memory or the stack.
inline constexpr size_t kMaxOutput = 16u << 20;
inline constexpr int kMaxDepth = 200;

// Thrown anywhere inside the engine; never leaves it.
struct TemplateError : std::runtime_error {
  explicit TemplateError(const std::string& m) : std::runtime_error(m) {}
};
[[noreturn]] void Fail(const std::string& m);

struct Value;
using List = std::vector<Value>;
using Dict = std::map<std::string, Value>;

enum class VType {
  kUndefined,
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kList,
  kDict,
  kNamespace,
  kFunction
};

struct Value {
  VType type = VType::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // String; the name of an undefined or a function.
  std::shared_ptr<List> list;  // List; a bound method's receiver in [0].
  std::shared_ptr<Dict> dict;  // Dict and namespace (shared, mutable).

  static Value Undefined(std::string name) {
    Value v;
    v.s = std::move(name);
    return v;
  }
  static Value None() {
    Value v;
    v.type = VType::kNone;
    return v;
  }
  static Value Bool(bool x) {
    Value v;
    v.type = VType::kBool;
    v.b = x;
    return v;
  }
  static Value Int(int64_t x) {
    Value v;
    v.type = VType::kInt;
    v.i = x;
    return v;
  }
  static Value Float(double x) {
    Value v;
    v.type = VType::kFloat;
    v.f = x;
    return v;
  }
  static Value Str(std::string x) {
    Value v;
    v.type = VType::kString;
    v.s = std::move(x);
    return v;
  }
  static Value MakeList(List l) {
    Value v;
    v.type = VType::kList;
    v.list = std::make_shared<List>(std::move(l));
    return v;
  }
  static Value MakeDict(Dict d) {
    Value v;
    v.type = VType::kDict;
    v.dict = std::make_shared<Dict>(std::move(d));
    return v;
  }
  static Value Function(std::string name) {
    Value v;
    v.type = VType::kFunction;
    v.s = std::move(name);
    return v;
  }
  bool is_number() const {
    return type == VType::kInt || type == VType::kFloat || type == VType::kBool;
  }
  double number() const {
    return type == VType::kFloat  ? f
           : type == VType::kBool ? (b ? 1 : 0)
                                  : static_cast<double>(i);
  }
};

// The space characters of whitespace control and str.split().
inline bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// `j` as a value; `name` (the variable it becomes) names it in the error
// when it is nested too deeply.
Value FromJson(const nlohmann::json& j, const std::string& name, int depth = 0);
// "undefined", "none", "boolean", "integer", "float", "string", ...
std::string TypeName(const Value& v);
// Python's str() of a value, as Jinja prints it.
std::string ToStr(const Value& v);
// Python's repr().
std::string Repr(const Value& v);
// JSON as Python's json.dumps(ensure_ascii=False) writes it (", " and ": "
// separators), which transformers' tojson filter uses.
std::string ToJson(const Value& v, int depth = 0);
bool Truthy(const Value& v);
bool Equal(const Value& a, const Value& b);
// An integer (or boolean) operand; `what` names it in the error otherwise.
int64_t AsInt(const Value& v, const char* what);

}  // namespace templates
}  // namespace lathe

#endif  // LATHE_WORKER_TEMPLATES_VALUE_H_
