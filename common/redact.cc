#include "common/redact.h"

#include <cctype>

namespace lathe {
namespace {

bool IsHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

bool IsSchemeChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' ||
         c == '.';
}

}  // namespace

std::string RedactSecrets(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    // "scheme://userinfo@": userinfo runs to '@' before any '/', space or
    // the end of the authority.
    if (text.compare(i, 3, "://") == 0 && i > 0 && IsSchemeChar(text[i - 1])) {
      const size_t start = i + 3;
      size_t j = start;
      while (j < text.size() && text[j] != '@' && text[j] != '/' &&
             text[j] != '?' && text[j] != '#' &&
             !std::isspace(static_cast<unsigned char>(text[j])) &&
             text[j] != '"') {
        ++j;
      }
      if (j < text.size() && text[j] == '@' && j > start) {
        out.append("://***@");
        i = j + 1;
        continue;
      }
    }
    // "lt_" + 12 hex + "_" + hex secret.
    if (text.compare(i, 3, "lt_") == 0 && i + 16 <= text.size()) {
      bool id = true;
      for (size_t k = i + 3; k < i + 15; ++k) id = id && IsHexDigit(text[k]);
      if (id && text[i + 15] == '_') {
        size_t j = i + 16;
        while (j < text.size() && IsHexDigit(text[j])) ++j;
        if (j > i + 16) {
          out.append(text.substr(i, 16));
          out.append("***");
          i = j;
          continue;
        }
      }
    }
    out.push_back(text[i]);
    ++i;
  }
  return out;
}

}  // namespace lathe
