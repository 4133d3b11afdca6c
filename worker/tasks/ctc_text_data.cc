#include "worker/tasks/ctc_text_data.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace lathe {
namespace {

// The UTF-8 characters of `s` (a stray byte is a character of its own).
std::vector<std::string> Characters(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80         ? 1
               : (c >> 5) == 6  ? 2
               : (c >> 4) == 14 ? 3
               : (c >> 3) == 30 ? 4
                                : 1;
    if (i + n > s.size()) n = 1;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) n = 1;
    }
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

bool IsSpace(const std::string& ch) {
  return ch.size() == 1 && (ch[0] == ' ' || ch[0] == '\t' || ch[0] == '\n' ||
                            ch[0] == '\r' || ch[0] == '\f' || ch[0] == '\v');
}

std::string Folded(const std::string& ch, bool upper) {
  if (ch.size() != 1) return ch;
  const char c = ch[0];
  if (upper && c >= 'a' && c <= 'z') return std::string(1, c - 'a' + 'A');
  if (!upper && c >= 'A' && c <= 'Z') return std::string(1, c - 'A' + 'a');
  return ch;
}

}  // namespace

CtcAlphabet CtcAlphabet::FromTranscripts(
    const std::vector<std::string>& texts) {
  std::set<std::string> seen;
  for (const std::string& t : texts) {
    for (const std::string& ch : Characters(t)) {
      if (!IsSpace(ch) && ch != kWordDelimiter) seen.insert(Folded(ch, false));
    }
  }
  CtcAlphabet a;
  a.tokens_ = {kPad, kBos, kEos, kUnk, kWordDelimiter};
  // std::set orders UTF-8 bytewise, which is code point order.
  a.tokens_.insert(a.tokens_.end(), seen.begin(), seen.end());
  return a;
}

absl::StatusOr<CtcAlphabet> CtcAlphabet::FromTokens(
    std::vector<std::string> tokens) {
  CtcAlphabet a;
  a.tokens_ = std::move(tokens);
  auto find = [&](const char* token) -> int64_t {
    auto it = std::find(a.tokens_.begin(), a.tokens_.end(), token);
    return it == a.tokens_.end() ? -1 : it - a.tokens_.begin();
  };
  a.blank_ = find(kPad);
  a.delimiter_ = find(kWordDelimiter);
  if (a.blank_ < 0 || a.delimiter_ < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model's vocab.json needs the tokens \"", kPad,
                     "\" (the blank) "
                     "and \"",
                     kWordDelimiter, "\" (between words)"));
  }
  bool lower = false, upper = false;
  for (const std::string& t : a.tokens_) {
    if (t.size() != 1) continue;
    lower = lower || (t[0] >= 'a' && t[0] <= 'z');
    upper = upper || (t[0] >= 'A' && t[0] <= 'Z');
  }
  a.upper_ = upper && !lower;
  return a;
}

std::string CtcAlphabet::Normalize(const std::string& text,
                                   int64_t* dropped) const {
  std::set<std::string> known;
  for (const std::string& t : tokens_) known.insert(t);
  std::string out;
  bool space = false;
  for (const std::string& raw : Characters(text)) {
    if (IsSpace(raw) || raw == kWordDelimiter) {
      space = !out.empty();
      continue;
    }
    const std::string ch = Folded(raw, upper_);
    if (!known.count(ch)) {
      if (dropped != nullptr) ++*dropped;
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += ch;
  }
  return out;
}

std::vector<int64_t> CtcAlphabet::Encode(const std::string& text,
                                         int64_t* dropped) const {
  std::map<std::string, int64_t> id;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    id.emplace(tokens_[i], static_cast<int64_t>(i));
  }
  std::vector<int64_t> out;
  for (const std::string& ch : Characters(Normalize(text, dropped))) {
    out.push_back(ch == " " ? delimiter_ : id.at(ch));
  }
  return out;
}

std::string CtcAlphabet::Decode(const std::vector<int64_t>& frame_ids) const {
  std::string out;
  bool space = false;
  int64_t previous = -1;
  for (int64_t id : frame_ids) {
    if (id == previous) continue;
    previous = id;
    if (id == blank_ || id < 0 || id >= size()) continue;
    if (id == delimiter_) {
      space = !out.empty();
      continue;
    }
    const std::string& t = tokens_[static_cast<size_t>(id)];
    if (t == kBos || t == kEos || t == kUnk) continue;
    if (space) out += ' ';
    space = false;
    out += t;
  }
  return out;
}

}  // namespace lathe
