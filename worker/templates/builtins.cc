#include "worker/templates/builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace lathe {
namespace templates {
namespace {

std::string StripChars(const std::vector<Value>& args) {
  if (args.empty() || args[0].type == VType::kNone) return " \t\n\r\f\v";
  if (args[0].type != VType::kString) Fail("strip characters must be text");
  return args[0].s;
}

Value ToStrValue(const Value& v) { return Value::Str(ToStr(v)); }

}  // namespace

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

Value Slice(const Value& seq, const Value& a, const Value& b, const Value& c) {
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

Value Item(const Value& obj, const Value& key) {
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

Value Attr(const Value& obj, const std::string& name) {
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

Value CallMethod(const Value& self, const std::string& name,
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
              : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
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

Value ApplyFilter(const std::string& n, const Value& v,
                  const std::vector<Value>& args) {
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

bool ApplyTest(const std::string& n, const Value& v) {
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

Value ApplyOperator(const std::string& op, const Value& a, const Value& b) {
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

}  // namespace templates
}  // namespace lathe
