#include "worker/tasks/chat_template_data.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace lathe {
namespace {

constexpr size_t kMaxOutput = 16u << 20;
constexpr int kMaxDepth = 200;

// Errors inside the interpreter unwind to Parse/Render, which turn them into
// a status; they never leave this file.
struct TemplateError : std::runtime_error {
  explicit TemplateError(const std::string& m) : std::runtime_error(m) {}
};
[[noreturn]] void Fail(const std::string& m) { throw TemplateError(m); }

// ---------------------------------------------------------------- values

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

Value FromJson(const nlohmann::json& j, int depth = 0) {
  if (depth > kMaxDepth) Fail("message JSON nested too deeply");
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::None();
    case nlohmann::json::value_t::boolean:
      return Value::Bool(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return Value::Int(j.get<int64_t>());
    case nlohmann::json::value_t::number_float:
      return Value::Float(j.get<double>());
    case nlohmann::json::value_t::string:
      return Value::Str(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List l;
      for (const auto& e : j) l.push_back(FromJson(e, depth + 1));
      return Value::MakeList(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) {
        d[it.key()] = FromJson(it.value(), depth + 1);
      }
      return Value::MakeDict(std::move(d));
    }
    default:
      return Value::None();
  }
}

std::string TypeName(const Value& v) {
  switch (v.type) {
    case VType::kUndefined:
      return "undefined";
    case VType::kNone:
      return "none";
    case VType::kBool:
      return "boolean";
    case VType::kInt:
      return "integer";
    case VType::kFloat:
      return "float";
    case VType::kString:
      return "string";
    case VType::kList:
      return "list";
    case VType::kDict:
      return "dict";
    case VType::kNamespace:
      return "namespace";
    case VType::kFunction:
      return "function";
  }
  return "value";
}

std::string FloatRepr(double x) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string Repr(const Value& v);

// Python's str() of a value, as Jinja prints it.
std::string ToStr(const Value& v) {
  switch (v.type) {
    case VType::kUndefined:
      return "";
    case VType::kNone:
      return "None";
    case VType::kBool:
      return v.b ? "True" : "False";
    case VType::kInt:
      return std::to_string(v.i);
    case VType::kFloat:
      return FloatRepr(v.f);
    case VType::kString:
      return v.s;
    default:
      return Repr(v);
  }
}

std::string QuoteRepr(const std::string& s) {
  const bool dq =
      s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out += c;
    }
  }
  out += q;
  return out;
}

std::string Repr(const Value& v) {
  switch (v.type) {
    case VType::kString:
      return QuoteRepr(v.s);
    case VType::kList: {
      std::string out = "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        out += Repr((*v.list)[k]);
      }
      return out + "]";
    }
    case VType::kDict:
    case VType::kNamespace: {
      std::string out = v.type == VType::kDict ? "{" : "<Namespace {";
      bool first = true;
      for (const auto& [k, e] : *v.dict) {
        if (!first) out += ", ";
        first = false;
        out += QuoteRepr(k) + ": " + Repr(e);
      }
      return out + (v.type == VType::kDict ? "}" : "}>");
    }
    case VType::kFunction:
      return "<function " + v.s + ">";
    default:
      return ToStr(v);
  }
}

// JSON as Python's json.dumps(ensure_ascii=False) writes it (", " and ": "
// separators), which transformers' tojson filter uses.
std::string ToJson(const Value& v, int depth = 0) {
  if (depth > kMaxDepth) Fail("tojson: value nested too deeply");
  switch (v.type) {
    case VType::kUndefined:
    case VType::kNone:
      return "null";
    case VType::kBool:
      return v.b ? "true" : "false";
    case VType::kInt:
      return std::to_string(v.i);
    case VType::kFloat:
      return FloatRepr(v.f);
    case VType::kString:
      return nlohmann::json(v.s).dump(-1, ' ', false,
                                      nlohmann::json::error_handler_t::replace);
    case VType::kList: {
      std::string out = "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        out += ToJson((*v.list)[k], depth + 1);
      }
      return out + "]";
    }
    case VType::kDict:
    case VType::kNamespace: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, e] : *v.dict) {
        if (!first) out += ", ";
        first = false;
        out += ToJson(Value::Str(k)) + ": " + ToJson(e, depth + 1);
      }
      return out + "}";
    }
    case VType::kFunction:
      Fail("tojson: a function is not JSON");
  }
  return "null";
}

bool Truthy(const Value& v) {
  switch (v.type) {
    case VType::kUndefined:
    case VType::kNone:
      return false;
    case VType::kBool:
      return v.b;
    case VType::kInt:
      return v.i != 0;
    case VType::kFloat:
      return v.f != 0;
    case VType::kString:
      return !v.s.empty();
    case VType::kList:
      return !v.list->empty();
    case VType::kDict:
      return !v.dict->empty();
    default:
      return true;
  }
}

bool Equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.number() == b.number();
  if (a.type != b.type) return false;
  switch (a.type) {
    case VType::kUndefined:
    case VType::kNone:
      return true;
    case VType::kString:
      return a.s == b.s;
    case VType::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!Equal((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    case VType::kDict:
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [k, e] : *a.dict) {
        auto it = b.dict->find(k);
        if (it == b.dict->end() || !Equal(e, it->second)) return false;
      }
      return true;
    default:
      return a.dict == b.dict && a.s == b.s;
  }
}

// ---------------------------------------------------------------- lexing

enum class TokKind { kName, kString, kInt, kFloat, kOp, kEnd };
struct Token {
  TokKind kind;
  std::string text;
};

std::vector<Token> LexExpression(std::string_view src) {
  std::vector<Token> out;
  size_t p = 0;
  while (p < src.size()) {
    const char c = src[p];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++p;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = p;
      while (
          e < src.size() &&
          (std::isalnum(static_cast<unsigned char>(src[e])) || src[e] == '_')) {
        ++e;
      }
      out.push_back({TokKind::kName, std::string(src.substr(p, e - p))});
      p = e;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = p;
      bool is_float = false;
      while (e < src.size() &&
             (std::isdigit(static_cast<unsigned char>(src[e])) ||
              (src[e] == '.' && !is_float && e + 1 < src.size() &&
               std::isdigit(static_cast<unsigned char>(src[e + 1]))))) {
        if (src[e] == '.') is_float = true;
        ++e;
      }
      out.push_back({is_float ? TokKind::kFloat : TokKind::kInt,
                     std::string(src.substr(p, e - p))});
      p = e;
    } else if (c == '\'' || c == '"') {
      std::string s;
      size_t e = p + 1;
      for (;; ++e) {
        if (e >= src.size()) Fail("unterminated string literal");
        if (src[e] == c) break;
        if (src[e] == '\\' && e + 1 < src.size()) {
          const char n = src[++e];
          switch (n) {
            case 'n':
              s += '\n';
              break;
            case 't':
              s += '\t';
              break;
            case 'r':
              s += '\r';
              break;
            case '\\':
            case '\'':
            case '"':
              s += n;
              break;
            default:
              s += '\\';
              s += n;
          }
        } else {
          s += src[e];
        }
      }
      out.push_back({TokKind::kString, std::move(s)});
      p = e + 1;
    } else {
      static const char* const kOps[] = {
          "//", "==", "!=", "<=", ">=", "**", "+", "-", "*", "/", "%", "~", "<",
          ">",  "(",  ")",  "[",  "]",  "{",  "}", ".", ",", ":", "|", "="};
      bool matched = false;
      for (const char* op : kOps) {
        const size_t n = std::char_traits<char>::length(op);
        if (src.substr(p, n) == op) {
          out.push_back({TokKind::kOp, op});
          p += n;
          matched = true;
          break;
        }
      }
      if (!matched)
        Fail(absl::StrCat("unexpected character '",
                          std::string(src.substr(p, 1)), "'"));
    }
  }
  out.push_back({TokKind::kEnd, ""});
  return out;
}

// ---------------------------------------------------------------- AST

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

ExprP MakeExpr(Expr::Kind k) {
  auto e = std::make_shared<Expr>();
  e->kind = k;
  return e;
}

const std::set<std::string>& KnownFilters() {
  static const auto* s = new std::set<std::string>{
      "length", "count", "trim",  "tojson",    "upper",   "lower",
      "string", "first", "last",  "join",      "reverse", "default",
      "d",      "list",  "items", "capitalize"};
  return *s;
}
const std::set<std::string>& KnownTests() {
  static const auto* s = new std::set<std::string>{
      "defined", "undefined", "none",     "string",   "number",
      "integer", "mapping",   "sequence", "iterable", "boolean",
      "true",    "false",     "even",     "odd"};
  return *s;
}

class ExprParser {
 public:
  explicit ExprParser(std::vector<Token> toks) : t_(std::move(toks)) {}

  ExprP ParseExpr() {
    Guard g(this);
    ExprP e = ParseOr();
    if (PeekName("if")) {
      ++p_;
      auto c = MakeExpr(Expr::kCond);
      c->args.push_back(ParseOr());
      c->args.push_back(e);
      if (PeekName("else")) {
        ++p_;
        c->args.push_back(ParseExpr());
      } else {
        auto u = MakeExpr(Expr::kLiteral);
        c->args.push_back(u);
      }
      return c;
    }
    return e;
  }
  ExprP ParseOr() {
    ExprP e = ParseAnd();
    while (PeekName("or")) {
      ++p_;
      e = Binary("or", e, ParseAnd());
    }
    return e;
  }

  bool PeekName(const char* n) const {
    return t_[p_].kind == TokKind::kName && t_[p_].text == n;
  }
  bool PeekOp(const char* o) const {
    return t_[p_].kind == TokKind::kOp && t_[p_].text == o;
  }
  bool AtEnd() const { return t_[p_].kind == TokKind::kEnd; }
  const Token& Peek() const { return t_[p_]; }
  void Next() { ++p_; }
  void ExpectOp(const char* o) {
    if (!PeekOp(o)) {
      Fail(absl::StrCat("expected '", o, "' but found '", Describe(), "'"));
    }
    ++p_;
  }
  std::string ExpectName() {
    if (t_[p_].kind != TokKind::kName) {
      Fail(absl::StrCat("expected a name but found '", Describe(), "'"));
    }
    return t_[p_++].text;
  }
  std::string Describe() const { return AtEnd() ? "end of tag" : t_[p_].text; }
  void ExpectEnd() {
    if (!AtEnd()) Fail(absl::StrCat("unexpected '", Describe(), "'"));
  }

 private:
  struct Guard {
    explicit Guard(ExprParser* p) : parser(p) {
      if (++parser->depth_ > kMaxDepth) Fail("expression nested too deeply");
    }
    ~Guard() { --parser->depth_; }
    ExprParser* parser;
  };

  static ExprP Binary(const std::string& op, ExprP a, ExprP b) {
    auto e = MakeExpr(Expr::kBinary);
    e->name = op;
    e->args = {std::move(a), std::move(b)};
    return e;
  }
  ExprP ParseAnd() {
    ExprP e = ParseNot();
    while (PeekName("and")) {
      ++p_;
      e = Binary("and", e, ParseNot());
    }
    return e;
  }
  ExprP ParseNot() {
    Guard g(this);
    if (PeekName("not")) {
      ++p_;
      auto e = MakeExpr(Expr::kNot);
      e->args.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }
  ExprP ParseCompare() {
    ExprP e = ParseConcat();
    for (;;) {
      if (t_[p_].kind == TokKind::kOp &&
          (PeekOp("==") || PeekOp("!=") || PeekOp("<") || PeekOp(">") ||
           PeekOp("<=") || PeekOp(">="))) {
        const std::string op = t_[p_++].text;
        e = Binary(op, e, ParseConcat());
      } else if (PeekName("in")) {
        ++p_;
        e = Binary("in", e, ParseConcat());
      } else if (PeekName("not") && t_[p_ + 1].kind == TokKind::kName &&
                 t_[p_ + 1].text == "in") {
        p_ += 2;
        e = Binary("not in", e, ParseConcat());
      } else {
        return e;
      }
    }
  }
  ExprP ParseConcat() {
    ExprP e = ParseAdd();
    while (PeekOp("~")) {
      ++p_;
      e = Binary("~", e, ParseAdd());
    }
    return e;
  }
  ExprP ParseAdd() {
    ExprP e = ParseMul();
    while (PeekOp("+") || PeekOp("-")) {
      const std::string op = t_[p_++].text;
      e = Binary(op, e, ParseMul());
    }
    return e;
  }
  ExprP ParseMul() {
    ExprP e = ParseUnary();
    while (PeekOp("*") || PeekOp("/") || PeekOp("//") || PeekOp("%")) {
      const std::string op = t_[p_++].text;
      e = Binary(op, e, ParseUnary());
    }
    if (PeekOp("**")) Fail("the ** operator is not supported");
    return e;
  }
  ExprP ParseUnary() {
    Guard g(this);
    if (PeekOp("-")) {
      ++p_;
      auto e = MakeExpr(Expr::kNeg);
      e->args.push_back(ParseUnary());
      return e;
    }
    if (PeekOp("+")) {
      ++p_;
      return ParseUnary();
    }
    return ParsePostfix(ParsePrimary());
  }
  void ParseArgs(Expr* e) {
    ExpectOp("(");
    while (!PeekOp(")")) {
      if (t_[p_].kind == TokKind::kName && t_[p_ + 1].kind == TokKind::kOp &&
          t_[p_ + 1].text == "=") {
        std::string k = t_[p_].text;
        p_ += 2;
        e->kwargs.emplace_back(std::move(k), ParseExpr());
      } else {
        if (!e->kwargs.empty()) Fail("positional argument after keyword");
        e->args.push_back(ParseExpr());
      }
      if (!PeekOp(",")) break;
      ++p_;
    }
    ExpectOp(")");
  }
  ExprP ParsePostfix(ExprP e) {
    for (;;) {
      if (PeekOp(".")) {
        ++p_;
        auto a = MakeExpr(Expr::kAttr);
        a->name = ExpectName();
        a->args.push_back(e);
        e = a;
      } else if (PeekOp("[")) {
        ++p_;
        ExprP parts[3];
        int colons = 0;
        if (!PeekOp(":")) parts[0] = ParseExpr();
        while (PeekOp(":") && colons < 2) {
          ++p_;
          ++colons;
          if (!PeekOp(":") && !PeekOp("]")) parts[colons] = ParseExpr();
        }
        ExpectOp("]");
        if (colons == 0) {
          auto a = MakeExpr(Expr::kIndex);
          a->args = {e, parts[0]};
          e = a;
        } else {
          auto a = MakeExpr(Expr::kSlice);
          a->args = {e, parts[0], parts[1], parts[2]};
          e = a;
        }
      } else if (PeekOp("(")) {
        auto c = MakeExpr(Expr::kCall);
        c->args.push_back(e);
        ParseArgs(c.get());
        e = c;
      } else if (PeekOp("|")) {
        ++p_;
        auto f = MakeExpr(Expr::kFilter);
        f->name = ExpectName();
        if (!KnownFilters().count(f->name)) {
          Fail(absl::StrCat("the filter '", f->name, "' is not supported"));
        }
        f->args.push_back(e);
        if (PeekOp("(")) ParseArgs(f.get());
        e = f;
      } else if (PeekName("is")) {
        ++p_;
        auto t = MakeExpr(Expr::kTest);
        if (PeekName("not")) {
          ++p_;
          t->negated = true;
        }
        t->name = ExpectName();
        if (!KnownTests().count(t->name)) {
          Fail(absl::StrCat("the test '", t->name, "' is not supported"));
        }
        t->args.push_back(e);
        if (PeekOp("("))
          Fail(absl::StrCat("arguments to the test '", t->name,
                            "' are not supported"));
        e = t;
      } else {
        return e;
      }
    }
  }
  ExprP ParsePrimary() {
    const Token tok = t_[p_];
    switch (tok.kind) {
      case TokKind::kString: {
        std::string s;
        while (t_[p_].kind == TokKind::kString) s += t_[p_++].text;
        auto e = MakeExpr(Expr::kLiteral);
        e->literal = Value::Str(std::move(s));
        return e;
      }
      case TokKind::kInt: {
        ++p_;
        auto e = MakeExpr(Expr::kLiteral);
        errno = 0;
        const long long v = std::strtoll(tok.text.c_str(), nullptr, 10);
        if (errno == ERANGE) Fail("integer literal out of range");
        e->literal = Value::Int(v);
        return e;
      }
      case TokKind::kFloat: {
        ++p_;
        auto e = MakeExpr(Expr::kLiteral);
        e->literal = Value::Float(std::strtod(tok.text.c_str(), nullptr));
        return e;
      }
      case TokKind::kName: {
        ++p_;
        auto e = MakeExpr(Expr::kLiteral);
        if (tok.text == "true" || tok.text == "True") {
          e->literal = Value::Bool(true);
        } else if (tok.text == "false" || tok.text == "False") {
          e->literal = Value::Bool(false);
        } else if (tok.text == "none" || tok.text == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::kName;
          e->name = tok.text;
        }
        return e;
      }
      case TokKind::kOp:
        if (tok.text == "(") {
          ++p_;
          ExprP e = ParseExpr();
          if (PeekOp(",")) Fail("tuples are not supported");
          ExpectOp(")");
          return e;
        }
        if (tok.text == "[") {
          ++p_;
          auto e = MakeExpr(Expr::kList);
          while (!PeekOp("]")) {
            e->args.push_back(ParseExpr());
            if (!PeekOp(",")) break;
            ++p_;
          }
          ExpectOp("]");
          return e;
        }
        if (tok.text == "{") {
          ++p_;
          auto e = MakeExpr(Expr::kDict);
          while (!PeekOp("}")) {
            e->args.push_back(ParseExpr());
            ExpectOp(":");
            e->args.push_back(ParseExpr());
            if (!PeekOp(",")) break;
            ++p_;
          }
          ExpectOp("}");
          return e;
        }
        break;
      case TokKind::kEnd:
        Fail("expression expected at the end of the tag");
    }
    Fail(absl::StrCat("unexpected '", tok.text, "'"));
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  int depth_ = 0;
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

// ---------------------------------------------------------------- template
// splitting and statement parsing

struct Segment {
  enum Kind { kText, kExpr, kStmt } kind;
  std::string text;
};

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Splits the source into text, {{ }} and {% %} segments, dropping comments
// and applying "-" whitespace control, trim_blocks (one newline after a
// block tag) and lstrip_blocks (spaces before a block tag on its line).
std::vector<Segment> Split(std::string_view src) {
  std::vector<Segment> out;
  size_t p = 0;
  bool strip_next = false;    // "-" on the previous closer.
  bool newline_next = false;  // trim_blocks after a block tag.
  auto add_text = [&](std::string t) {
    if (strip_next) {
      size_t k = 0;
      while (k < t.size() && IsSpace(t[k])) ++k;
      t.erase(0, k);
    } else if (newline_next) {
      if (t.rfind("\r\n", 0) == 0) {
        t.erase(0, 2);
      } else if (!t.empty() && t[0] == '\n') {
        t.erase(0, 1);
      }
    }
    strip_next = newline_next = false;
    out.push_back({Segment::kText, std::move(t)});
  };
  while (p < src.size()) {
    size_t open = src.find('{', p);
    while (open != std::string_view::npos && open + 1 < src.size() &&
           src[open + 1] != '{' && src[open + 1] != '%' &&
           src[open + 1] != '#') {
      open = src.find('{', open + 1);
    }
    if (open == std::string_view::npos || open + 1 >= src.size()) {
      add_text(std::string(src.substr(p)));
      break;
    }
    std::string text(src.substr(p, open - p));
    const char kind = src[open + 1];
    size_t inner = open + 2;
    const bool block = kind == '%' || kind == '#';
    if (inner < src.size() && src[inner] == '-') {
      while (!text.empty() && IsSpace(text.back())) text.pop_back();
      ++inner;
    } else if (inner < src.size() && src[inner] == '+') {
      ++inner;
    } else if (block) {
      // lstrip_blocks: only when the tag starts its line in the source.
      size_t k = text.size();
      while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) --k;
      const bool line_start = k > 0 ? text[k - 1] == '\n' : p == 0;
      if (line_start) text.erase(k);
    }
    add_text(std::move(text));
    const char* closer = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t end = inner;
    size_t close = std::string_view::npos;
    if (kind == '#') {
      close = src.find("#}", inner);
    } else {
      // Skip string literals, which may contain the closer.
      while (end + 1 < src.size()) {
        const char c = src[end];
        if (c == '\'' || c == '"') {
          const size_t q = src.find(c, end + 1);
          if (q == std::string_view::npos) break;
          end = q + 1;
          continue;
        }
        if (src.substr(end, 2) == closer) {
          close = end;
          break;
        }
        ++end;
      }
    }
    if (close == std::string_view::npos) {
      Fail(absl::StrCat("tag opened at byte ", open, " is not closed"));
    }
    size_t content_end = close;
    bool strip_after = false;
    if (content_end > inner && src[content_end - 1] == '-') {
      --content_end;
      strip_after = true;
    } else if (content_end > inner && src[content_end - 1] == '+' &&
               kind != '{') {
      --content_end;
    }
    std::string content(src.substr(inner, content_end - inner));
    if (kind == '{') {
      out.push_back({Segment::kExpr, std::move(content)});
    } else if (kind == '%') {
      out.push_back({Segment::kStmt, std::move(content)});
    }
    p = close + 2;
    strip_next = strip_after;
    newline_next = !strip_after && block;
  }
  return out;
}

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Segment> segs) : segs_(std::move(segs)) {}

  Body ParseAll() {
    std::string end;
    Body b = ParseBody({}, &end);
    return b;
  }

 private:
  // Parses nodes until a statement whose keyword is in `stops`; returns its
  // keyword in *stop and leaves its parser in stop_parser_.
  Body ParseBody(const std::set<std::string>& stops, std::string* stop) {
    Body body;
    while (i_ < segs_.size()) {
      Segment& s = segs_[i_++];
      if (s.kind == Segment::kText) {
        if (s.text.empty()) continue;
        auto n = std::make_shared<Node>();
        n->kind = Node::kText;
        n->text = std::move(s.text);
        body.push_back(n);
        continue;
      }
      ExprParser ep(LexExpression(s.text));
      if (s.kind == Segment::kExpr) {
        auto n = std::make_shared<Node>();
        n->kind = Node::kOutput;
        n->expr = ep.ParseExpr();
        ep.ExpectEnd();
        body.push_back(n);
        continue;
      }
      if (ep.AtEnd()) Fail("empty statement tag");
      const std::string kw = ep.ExpectName();
      if (stops.count(kw)) {
        *stop = kw;
        stop_parser_ = std::make_unique<ExprParser>(std::move(ep));
        return body;
      }
      if (++depth_ > kMaxDepth) Fail("statements nested too deeply");
      if (kw == "if") {
        body.push_back(ParseIf(&ep));
      } else if (kw == "for") {
        body.push_back(ParseFor(&ep));
      } else if (kw == "set") {
        body.push_back(ParseSet(&ep));
      } else if (kw == "generation") {
        ep.ExpectEnd();
        auto n = std::make_shared<Node>();
        n->kind = Node::kBlock;
        std::string st;
        n->body = ParseBody({"endgeneration"}, &st);
        if (st.empty()) Fail("generation block without endgeneration");
        stop_parser_->ExpectEnd();
        body.push_back(n);
      } else if (kw == "endif" || kw == "endfor" || kw == "else" ||
                 kw == "elif" || kw == "endgeneration") {
        Fail(absl::StrCat("unexpected '", kw, "'"));
      } else {
        Fail(absl::StrCat("the statement '", kw, "' is not supported"));
      }
      --depth_;
    }
    if (!stops.empty()) stop->clear();
    return body;
  }

  NodeP ParseIf(ExprParser* ep) {
    auto n = std::make_shared<Node>();
    n->kind = Node::kIf;
    ExprP cond = ep->ParseExpr();
    ep->ExpectEnd();
    for (;;) {
      std::string stop;
      Body b = ParseBody({"elif", "else", "endif"}, &stop);
      if (stop.empty()) Fail("if without endif");
      n->branches.emplace_back(cond, std::move(b));
      if (stop == "elif") {
        cond = stop_parser_->ParseExpr();
        stop_parser_->ExpectEnd();
        continue;
      }
      stop_parser_->ExpectEnd();
      if (stop == "else") {
        n->else_body = ParseBody({"endif"}, &stop);
        if (stop.empty()) Fail("if without endif");
        stop_parser_->ExpectEnd();
      }
      return n;
    }
  }

  NodeP ParseFor(ExprParser* ep) {
    auto n = std::make_shared<Node>();
    n->kind = Node::kFor;
    n->var = ep->ExpectName();
    if (ep->PeekOp(",")) {
      Fail("unpacking several loop variables is not supported");
    }
    if (!ep->PeekName("in")) Fail("expected 'in' in for");
    ep->Next();
    n->expr = ep->ParseOr();
    if (ep->PeekName("if")) {
      ep->Next();
      n->filter = ep->ParseOr();
    }
    if (ep->PeekName("recursive")) Fail("recursive loops are not supported");
    ep->ExpectEnd();
    std::string stop;
    n->body = ParseBody({"else", "endfor"}, &stop);
    if (stop.empty()) Fail("for without endfor");
    stop_parser_->ExpectEnd();
    if (stop == "else") {
      n->else_body = ParseBody({"endfor"}, &stop);
      if (stop.empty()) Fail("for without endfor");
      stop_parser_->ExpectEnd();
    }
    return n;
  }

  NodeP ParseSet(ExprParser* ep) {
    auto n = std::make_shared<Node>();
    n->kind = Node::kSet;
    n->var = ep->ExpectName();
    if (ep->PeekOp(".")) {
      ep->Next();
      n->attr = ep->ExpectName();
    }
    if (ep->PeekOp(",")) Fail("unpacking in set is not supported");
    if (ep->AtEnd()) Fail("block set (set ... endset) is not supported");
    ep->ExpectOp("=");
    n->expr = ep->ParseExpr();
    ep->ExpectEnd();
    return n;
  }

  std::vector<Segment> segs_;
  size_t i_ = 0;
  int depth_ = 0;
  std::unique_ptr<ExprParser> stop_parser_;
};

// ---------------------------------------------------------------- rendering

class Renderer {
 public:
  explicit Renderer(std::string* out) : out_(out) { scopes_.emplace_back(); }

  void Define(const std::string& name, Value v) {
    scopes_.front()[name] = std::move(v);
  }

  void Run(const Body& body) {
    for (const NodeP& n : body) Exec(*n);
  }

 private:
  void Emit(const std::string& s) {
    if (out_->size() + s.size() > kMaxOutput) Fail("output exceeds 16 MiB");
    *out_ += s;
  }

  void Exec(const Node& n) {
    switch (n.kind) {
      case Node::kText:
        Emit(n.text);
        return;
      case Node::kOutput:
        Emit(ToStr(Eval(*n.expr)));
        return;
      case Node::kBlock:
        Run(n.body);
        return;
      case Node::kIf:
        for (const auto& [cond, body] : n.branches) {
          if (Truthy(Eval(*cond))) {
            Run(body);
            return;
          }
        }
        Run(n.else_body);
        return;
      case Node::kSet: {
        Value v = Eval(*n.expr);
        if (n.attr.empty()) {
          scopes_.back()[n.var] = std::move(v);
          return;
        }
        Value target = Lookup(n.var);
        if (target.type != VType::kNamespace) {
          Fail(absl::StrCat("cannot set '", n.var, ".", n.attr, "': '", n.var,
                            "' is not a namespace"));
        }
        (*target.dict)[n.attr] = std::move(v);
        return;
      }
      case Node::kFor: {
        Value seq = Eval(*n.expr);
        List items;
        if (seq.type == VType::kList) {
          items = *seq.list;
        } else if (seq.type == VType::kDict) {
          for (const auto& kv : *seq.dict)
            items.push_back(Value::Str(kv.first));
        } else {
          Fail(absl::StrCat("cannot loop over a ", TypeName(seq)));
        }
        scopes_.emplace_back();
        if (n.filter) {
          List kept;
          for (Value& v : items) {
            scopes_.back()[n.var] = v;
            if (Truthy(Eval(*n.filter))) kept.push_back(std::move(v));
          }
          items = std::move(kept);
        }
        const int64_t len = static_cast<int64_t>(items.size());
        for (int64_t k = 0; k < len; ++k) {
          Dict loop;
          loop["index0"] = Value::Int(k);
          loop["index"] = Value::Int(k + 1);
          loop["revindex0"] = Value::Int(len - 1 - k);
          loop["revindex"] = Value::Int(len - k);
          loop["first"] = Value::Bool(k == 0);
          loop["last"] = Value::Bool(k == len - 1);
          loop["length"] = Value::Int(len);
          scopes_.back()["loop"] = Value::MakeDict(std::move(loop));
          scopes_.back()[n.var] = items[k];
          Run(n.body);
        }
        scopes_.pop_back();
        if (len == 0) Run(n.else_body);
        return;
      }
    }
  }

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    if (name == "raise_exception" || name == "namespace") {
      return Value::Function(name);
    }
    return Value::Undefined(name);
  }

  static int64_t AsInt(const Value& v, const char* what) {
    if (v.type == VType::kInt) return v.i;
    if (v.type == VType::kBool) return v.b ? 1 : 0;
    Fail(absl::StrCat(what, " must be an integer, not ", TypeName(v)));
  }

  static Value Slice(const Value& seq, const Value& a, const Value& b,
                     const Value& c) {
    int64_t n;
    if (seq.type == VType::kList) {
      n = static_cast<int64_t>(seq.list->size());
    } else if (seq.type == VType::kString) {
      n = static_cast<int64_t>(seq.s.size());
    } else {
      Fail(absl::StrCat("cannot slice a ", TypeName(seq)));
    }
    const bool has_a = a.type != VType::kUndefined && a.type != VType::kNone;
    const bool has_b = b.type != VType::kUndefined && b.type != VType::kNone;
    const bool has_c = c.type != VType::kUndefined && c.type != VType::kNone;
    const int64_t step = has_c ? AsInt(c, "slice step") : 1;
    if (step == 0) Fail("slice step cannot be zero");
    int64_t start, stop;
    if (step > 0) {
      start = has_a ? AsInt(a, "slice start") : 0;
      stop = has_b ? AsInt(b, "slice stop") : n;
      if (start < 0) start = std::max<int64_t>(0, start + n);
      if (stop < 0) stop = std::max<int64_t>(0, stop + n);
      start = std::min(start, n);
      stop = std::min(stop, n);
    } else {
      start = has_a ? AsInt(a, "slice start") : n - 1;
      stop = has_b ? AsInt(b, "slice stop") : -1;
      if (has_a && start < 0) start = std::max<int64_t>(-1, start + n);
      if (has_b && stop < 0) stop = std::max<int64_t>(-1, stop + n);
      start = std::min(start, n - 1);
      stop = std::min(stop, n - 1);
    }
    List l;
    std::string s;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      if (seq.type == VType::kList) {
        l.push_back((*seq.list)[k]);
      } else {
        s += seq.s[k];
      }
    }
    return seq.type == VType::kList ? Value::MakeList(std::move(l))
                                    : Value::Str(std::move(s));
  }

  static Value Item(const Value& obj, const Value& key) {
    if (obj.type == VType::kUndefined) {
      Fail(absl::StrCat("'", obj.s, "' is undefined"));
    }
    if (obj.type == VType::kDict || obj.type == VType::kNamespace) {
      if (key.type != VType::kString) return Value::Undefined("item");
      auto it = obj.dict->find(key.s);
      return it == obj.dict->end() ? Value::Undefined(key.s) : it->second;
    }
    if (obj.type == VType::kList || obj.type == VType::kString) {
      int64_t k = AsInt(key, "index");
      const int64_t n = obj.type == VType::kList
                            ? static_cast<int64_t>(obj.list->size())
                            : static_cast<int64_t>(obj.s.size());
      if (k < 0) k += n;
      if (k < 0 || k >= n) return Value::Undefined("index");
      return obj.type == VType::kList ? (*obj.list)[k]
                                      : Value::Str(obj.s.substr(k, 1));
    }
    Fail(absl::StrCat("cannot index a ", TypeName(obj)));
  }

  static Value Attr(const Value& obj, const std::string& name) {
    if (obj.type == VType::kUndefined) {
      Fail(absl::StrCat("'", obj.s, "' is undefined (reading '", name, "')"));
    }
    if (obj.type == VType::kDict || obj.type == VType::kNamespace) {
      auto it = obj.dict->find(name);
      if (it != obj.dict->end()) return it->second;
      if (obj.type == VType::kDict && (name == "get" || name == "items" ||
                                       name == "keys" || name == "values")) {
        Value m = Value::Function(name);
        m.list = std::make_shared<List>(List{obj});
        return m;
      }
      return Value::Undefined(name);
    }
    if (obj.type == VType::kString) {
      Value m = Value::Function(name);
      m.list = std::make_shared<List>(List{obj});
      return m;
    }
    return Value::Undefined(name);
  }

  static std::string StripChars(const std::vector<Value>& args) {
    if (args.empty() || args[0].type == VType::kNone) return " \t\n\r\f\v";
    if (args[0].type != VType::kString) Fail("strip characters must be text");
    return args[0].s;
  }

  static Value CallMethod(const Value& self, const std::string& name,
                          const std::vector<Value>& args) {
    if (self.type == VType::kDict) {
      if (name == "get") {
        if (args.empty()) Fail("get() needs a key");
        Value v = Item(self, args[0]);
        if (v.type == VType::kUndefined) {
          return args.size() > 1 ? args[1] : Value::None();
        }
        return v;
      }
      List l;
      for (const auto& [k, v] : *self.dict) {
        if (name == "items") {
          l.push_back(Value::MakeList({Value::Str(k), v}));
        } else if (name == "keys") {
          l.push_back(Value::Str(k));
        } else {
          l.push_back(v);
        }
      }
      return Value::MakeList(std::move(l));
    }
    const std::string& s = self.s;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const std::string chars = StripChars(args);
      size_t b = 0, e = s.size();
      if (name != "rstrip") {
        while (b < e && chars.find(s[b]) != std::string::npos) ++b;
      }
      if (name != "lstrip") {
        while (e > b && chars.find(s[e - 1]) != std::string::npos) --e;
      }
      return Value::Str(s.substr(b, e - b));
    }
    if (name == "startswith" || name == "endswith") {
      if (args.size() != 1 || args[0].type != VType::kString) {
        Fail(absl::StrCat(name, "() needs one text argument"));
      }
      const std::string& x = args[0].s;
      const bool r = x.size() <= s.size() &&
                     (name == "startswith"
                          ? s.compare(0, x.size(), x) == 0
                          : s.compare(s.size() - x.size(), x.size(), x) == 0);
      return Value::Bool(r);
    }
    if (name == "upper" || name == "lower") {
      std::string r = s;
      for (char& c : r) {
        c = name == "upper"
                ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                : static_cast<char>(
                      std::tolower(static_cast<unsigned char>(c)));
      }
      return Value::Str(r);
    }
    if (name == "split") {
      List parts;
      if (args.empty() || args[0].type == VType::kNone) {
        size_t k = 0;
        while (k < s.size()) {
          while (k < s.size() && IsSpace(s[k])) ++k;
          size_t e = k;
          while (e < s.size() && !IsSpace(s[e])) ++e;
          if (e > k) parts.push_back(Value::Str(s.substr(k, e - k)));
          k = e;
        }
      } else {
        if (args[0].type != VType::kString || args[0].s.empty()) {
          Fail("split() needs a non-empty separator");
        }
        const std::string& sep = args[0].s;
        size_t k = 0;
        for (;;) {
          const size_t f = s.find(sep, k);
          if (f == std::string::npos) break;
          parts.push_back(Value::Str(s.substr(k, f - k)));
          k = f + sep.size();
        }
        parts.push_back(Value::Str(s.substr(k)));
      }
      return Value::MakeList(std::move(parts));
    }
    if (name == "replace") {
      if (args.size() != 2 || args[0].type != VType::kString ||
          args[1].type != VType::kString || args[0].s.empty()) {
        Fail("replace() needs two text arguments");
      }
      std::string r;
      size_t k = 0;
      for (;;) {
        const size_t f = s.find(args[0].s, k);
        if (f == std::string::npos) break;
        r += s.substr(k, f - k) + args[1].s;
        if (r.size() > kMaxOutput) Fail("replace() result too long");
        k = f + args[0].s.size();
      }
      return Value::Str(r + s.substr(k));
    }
    Fail(absl::StrCat("the string method '", name, "' is not supported"));
  }

  Value Call(const Expr& e) {
    const Expr& callee = *e.args[0];
    Value f = Eval(callee);
    std::vector<Value> args;
    for (size_t k = 1; k < e.args.size(); ++k) args.push_back(Eval(*e.args[k]));
    if (f.type == VType::kUndefined) {
      Fail(absl::StrCat("the function '", f.s, "' is not supported"));
    }
    if (f.type != VType::kFunction) {
      Fail(absl::StrCat("a ", TypeName(f), " cannot be called"));
    }
    if (f.list) return CallMethod((*f.list)[0], f.s, args);
    if (f.s == "raise_exception") {
      Fail(args.empty() ? std::string("raise_exception") : ToStr(args[0]));
    }
    // namespace(...)
    Value ns;
    ns.type = VType::kNamespace;
    ns.dict = std::make_shared<Dict>();
    if (!args.empty()) {
      if (args[0].type != VType::kDict) Fail("namespace() takes a dict");
      *ns.dict = *args[0].dict;
    }
    for (const auto& [k, v] : e.kwargs) (*ns.dict)[k] = Eval(*v);
    return ns;
  }

  Value Filter(const Expr& e) {
    Value v = Eval(*e.args[0]);
    std::vector<Value> args;
    for (size_t k = 1; k < e.args.size(); ++k) args.push_back(Eval(*e.args[k]));
    const std::string& n = e.name;
    if (n == "default" || n == "d") {
      return v.type == VType::kUndefined
                 ? (args.empty() ? Value::Str("") : args[0])
                 : v;
    }
    if (n == "tojson") return Value::Str(ToJson(v));
    if (n == "string") return Value::Str(ToStr(v));
    if (n == "length" || n == "count") {
      if (v.type == VType::kList) return Value::Int(v.list->size());
      if (v.type == VType::kDict) return Value::Int(v.dict->size());
      if (v.type == VType::kString) return Value::Int(v.s.size());
      Fail(absl::StrCat("length of a ", TypeName(v)));
    }
    if (n == "trim") return CallMethod(ToStrValue(v), "strip", args);
    if (n == "upper" || n == "lower") return CallMethod(ToStrValue(v), n, {});
    if (n == "capitalize") {
      std::string s = ToStr(v);
      for (size_t k = 0; k < s.size(); ++k) {
        s[k] = static_cast<char>(
            k == 0 ? std::toupper(static_cast<unsigned char>(s[k]))
                   : std::tolower(static_cast<unsigned char>(s[k])));
      }
      return Value::Str(s);
    }
    if (n == "first" || n == "last") {
      if (v.type == VType::kList) {
        if (v.list->empty()) return Value::Undefined(n);
        return n == "first" ? v.list->front() : v.list->back();
      }
      if (v.type == VType::kString) {
        if (v.s.empty()) return Value::Undefined(n);
        return Value::Str(n == "first" ? v.s.substr(0, 1)
                                       : v.s.substr(v.s.size() - 1));
      }
      Fail(absl::StrCat(n, " of a ", TypeName(v)));
    }
    if (n == "reverse") {
      return Slice(v, Value(), Value(), Value::Int(-1));
    }
    if (n == "list") {
      if (v.type == VType::kList) return v;
      if (v.type == VType::kDict) return CallMethod(v, "keys", {});
      Fail(absl::StrCat("list of a ", TypeName(v)));
    }
    if (n == "items") {
      if (v.type != VType::kDict) Fail("items of a non-dict");
      return CallMethod(v, "items", {});
    }
    if (n == "join") {
      if (v.type != VType::kList) Fail("join of a non-list");
      const std::string sep = args.empty() ? "" : ToStr(args[0]);
      std::string r;
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) r += sep;
        r += ToStr((*v.list)[k]);
        if (r.size() > kMaxOutput) Fail("join result too long");
      }
      return Value::Str(r);
    }
    Fail(absl::StrCat("the filter '", n, "' is not supported"));
  }

  static Value ToStrValue(const Value& v) { return Value::Str(ToStr(v)); }

  bool Test(const Expr& e) {
    const Value v = Eval(*e.args[0]);
    const std::string& n = e.name;
    if (n == "defined") return v.type != VType::kUndefined;
    if (n == "undefined") return v.type == VType::kUndefined;
    if (n == "none") return v.type == VType::kNone;
    if (n == "string") return v.type == VType::kString;
    if (n == "number") {
      return v.type == VType::kInt || v.type == VType::kFloat;
    }
    if (n == "integer") return v.type == VType::kInt;
    if (n == "boolean") return v.type == VType::kBool;
    if (n == "true") return v.type == VType::kBool && v.b;
    if (n == "false") return v.type == VType::kBool && !v.b;
    if (n == "mapping") return v.type == VType::kDict;
    if (n == "sequence" || n == "iterable") {
      return v.type == VType::kList || v.type == VType::kString ||
             v.type == VType::kDict;
    }
    if (n == "even" || n == "odd") {
      const int64_t x = AsInt(v, n.c_str());
      return (x % 2 == 0) == (n == "even");
    }
    Fail(absl::StrCat("the test '", n, "' is not supported"));
  }

  Value Binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = Eval(*e.args[0]);
      return Truthy(a) ? Eval(*e.args[1]) : a;
    }
    if (op == "or") {
      Value a = Eval(*e.args[0]);
      return Truthy(a) ? a : Eval(*e.args[1]);
    }
    const Value a = Eval(*e.args[0]);
    const Value b = Eval(*e.args[1]);
    if (op == "==") return Value::Bool(Equal(a, b));
    if (op == "!=") return Value::Bool(!Equal(a, b));
    if (op == "~") {
      std::string r = ToStr(a) + ToStr(b);
      if (r.size() > kMaxOutput) Fail("text too long");
      return Value::Str(std::move(r));
    }
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.type == VType::kString) {
        if (a.type != VType::kString)
          Fail("'in <string>' needs text on the left");
        found = b.s.find(a.s) != std::string::npos;
      } else if (b.type == VType::kList) {
        for (const Value& x : *b.list) found = found || Equal(a, x);
      } else if (b.type == VType::kDict) {
        found = a.type == VType::kString && b.dict->count(a.s) > 0;
      } else {
        Fail(absl::StrCat("'in' on a ", TypeName(b)));
      }
      return Value::Bool(op == "in" ? found : !found);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp;
      if (a.is_number() && b.is_number()) {
        cmp = a.number() < b.number() ? -1 : a.number() > b.number() ? 1 : 0;
      } else if (a.type == VType::kString && b.type == VType::kString) {
        cmp = a.s.compare(b.s);
      } else {
        Fail(absl::StrCat("cannot compare a ", TypeName(a), " with a ",
                          TypeName(b)));
      }
      const bool r = op == "<"    ? cmp < 0
                     : op == ">"  ? cmp > 0
                     : op == "<=" ? cmp <= 0
                                  : cmp >= 0;
      return Value::Bool(r);
    }
    if (op == "+") {
      if (a.type == VType::kString && b.type == VType::kString) {
        if (a.s.size() + b.s.size() > kMaxOutput) Fail("text too long");
        return Value::Str(a.s + b.s);
      }
      if (a.type == VType::kList && b.type == VType::kList) {
        List l = *a.list;
        l.insert(l.end(), b.list->begin(), b.list->end());
        return Value::MakeList(std::move(l));
      }
    }
    if (a.is_number() && b.is_number()) {
      const bool ints = a.type != VType::kFloat && b.type != VType::kFloat;
      if (op == "/") {
        if (b.number() == 0) Fail("division by zero");
        return Value::Float(a.number() / b.number());
      }
      if (ints) {
        const int64_t x = AsInt(a, "operand"), y = AsInt(b, "operand");
        if (op == "+") return Value::Int(x + y);
        if (op == "-") return Value::Int(x - y);
        if (op == "*") return Value::Int(x * y);
        if (y == 0) Fail("division by zero");
        // Python floors integer division and modulo.
        int64_t q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
        if (op == "//") return Value::Int(q);
        if (op == "%") return Value::Int(x - q * y);
      } else {
        const double x = a.number(), y = b.number();
        if (op == "+") return Value::Float(x + y);
        if (op == "-") return Value::Float(x - y);
        if (op == "*") return Value::Float(x * y);
        if (y == 0) Fail("division by zero");
        if (op == "//") return Value::Float(std::floor(x / y));
        if (op == "%") return Value::Float(x - std::floor(x / y) * y);
      }
    }
    if (op == "*" && a.type == VType::kString && b.type == VType::kInt) {
      if (b.i < 0) return Value::Str("");
      if (a.s.size() * static_cast<uint64_t>(b.i) > kMaxOutput) {
        Fail("text too long");
      }
      std::string r;
      for (int64_t k = 0; k < b.i; ++k) r += a.s;
      return Value::Str(r);
    }
    Fail(absl::StrCat("unsupported operand types for ", op, ": ", TypeName(a),
                      " and ", TypeName(b)));
  }

  Value Eval(const Expr& e) {
    if (++depth_ > kMaxDepth) Fail("evaluation nested too deeply");
    Value r = EvalInner(e);
    --depth_;
    return r;
  }

  Value EvalInner(const Expr& e) {
    switch (e.kind) {
      case Expr::kLiteral:
        return e.literal;
      case Expr::kName:
        return Lookup(e.name);
      case Expr::kAttr:
        return Attr(Eval(*e.args[0]), e.name);
      case Expr::kIndex:
        return Item(Eval(*e.args[0]), Eval(*e.args[1]));
      case Expr::kSlice: {
        auto part = [&](size_t k) {
          return e.args[k] ? Eval(*e.args[k]) : Value();
        };
        return Slice(Eval(*e.args[0]), part(1), part(2), part(3));
      }
      case Expr::kCall:
        return Call(e);
      case Expr::kFilter:
        return Filter(e);
      case Expr::kTest:
        return Value::Bool(Test(e) != e.negated);
      case Expr::kNot:
        return Value::Bool(!Truthy(Eval(*e.args[0])));
      case Expr::kNeg: {
        Value v = Eval(*e.args[0]);
        if (v.type == VType::kInt) return Value::Int(-v.i);
        if (v.type == VType::kFloat) return Value::Float(-v.f);
        Fail(absl::StrCat("cannot negate a ", TypeName(v)));
      }
      case Expr::kBinary:
        return Binary(e);
      case Expr::kCond:
        return Truthy(Eval(*e.args[0])) ? Eval(*e.args[1]) : Eval(*e.args[2]);
      case Expr::kList: {
        List l;
        for (const ExprP& x : e.args) l.push_back(Eval(*x));
        return Value::MakeList(std::move(l));
      }
      case Expr::kDict: {
        Dict d;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = Eval(*e.args[k]);
          if (key.type != VType::kString) Fail("dict keys must be text");
          d[key.s] = Eval(*e.args[k + 1]);
        }
        return Value::MakeDict(std::move(d));
      }
    }
    Fail("bad expression");
  }

  std::string* out_;
  std::vector<std::map<std::string, Value>> scopes_;
  int depth_ = 0;
};

}  // namespace

struct ChatTemplate::Impl {
  Body body;
};

ChatTemplate::ChatTemplate(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Parse(
    std::string_view source) {
  if (source.size() > kMaxOutput) {
    return absl::InvalidArgumentError("chat template: longer than 16 MiB");
  }
  try {
    auto impl = std::make_unique<Impl>();
    TemplateParser parser(Split(source));
    impl->body = parser.ParseAll();
    return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(impl)));
  } catch (const TemplateError& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: ", e.what()));
  }
}

absl::StatusOr<std::string> ChatTemplate::Render(
    const nlohmann::json& messages, const ChatTemplateVariables& vars) const {
  std::string out;
  try {
    Renderer r(&out);
    r.Define("messages", FromJson(messages));
    r.Define("bos_token", Value::Str(vars.bos_token));
    r.Define("eos_token", Value::Str(vars.eos_token));
    r.Define("add_generation_prompt", Value::Bool(vars.add_generation_prompt));
    r.Run(impl_->body);
  } catch (const TemplateError& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: ", e.what()));
  }
  return out;
}

}  // namespace lathe
