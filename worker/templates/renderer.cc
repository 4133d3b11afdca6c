#include "worker/templates/renderer.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/templates/builtins.h"

namespace lathe {
namespace templates {
namespace {

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
    return ApplyFilter(e.name, v, args);
  }

  bool Test(const Expr& e) { return ApplyTest(e.name, Eval(*e.args[0])); }

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
    return ApplyOperator(op, a, b);
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

void RenderBody(const Body& body, std::map<std::string, Value> globals,
                std::string* out) {
  Renderer r(out);
  for (auto& [name, value] : globals) r.Define(name, std::move(value));
  r.Run(body);
}

}  // namespace templates
}  // namespace lathe
