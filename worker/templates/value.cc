#include "worker/templates/value.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace lathe {
namespace templates {

void Fail(const std::string& m) { throw TemplateError(m); }

Value FromJson(const nlohmann::json& j, const std::string& name, int depth) {
  if (depth > kMaxDepth) {
    Fail(absl::StrCat("the value of '", name, "' is nested too deeply"));
  }
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
      for (const auto& e : j) l.push_back(FromJson(e, name, depth + 1));
      return Value::MakeList(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) {
        d[it.key()] = FromJson(it.value(), name, depth + 1);
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

namespace {

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

}  // namespace

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

std::string ToJson(const Value& v, int depth) {
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

int64_t AsInt(const Value& v, const char* what) {
  if (v.type == VType::kInt) return v.i;
  if (v.type == VType::kBool) return v.b ? 1 : 0;
  Fail(absl::StrCat(what, " must be an integer, not ", TypeName(v)));
}

}  // namespace templates
}  // namespace lathe
