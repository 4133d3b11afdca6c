#include "worker/templates/lexer.h"

#include <cctype>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/templates/value.h"

namespace lathe {
namespace templates {

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

}  // namespace templates
}  // namespace lathe
