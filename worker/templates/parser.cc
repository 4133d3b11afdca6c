#include "worker/templates/parser.h"

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/templates/builtins.h"
#include "worker/templates/lexer.h"
#include "worker/templates/value.h"

namespace lathe {
namespace templates {
namespace {

ExprP MakeExpr(Expr::Kind k) {
  auto e = std::make_shared<Expr>();
  e->kind = k;
  return e;
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

}  // namespace

Body ParseTemplate(std::string_view source) {
  TemplateParser parser(Split(source));
  return parser.ParseAll();
}

}  // namespace templates
}  // namespace lathe
