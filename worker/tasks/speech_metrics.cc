#include "worker/tasks/speech_metrics.h"

#include <algorithm>

namespace lathe {
namespace {

// UTF-8 to code points; a byte that starts no valid sequence stands alone.
std::u32string Decode(const std::string& s) {
  std::u32string out;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80         ? 1
              : (c >> 5) == 6  ? 2
              : (c >> 4) == 14 ? 3
              : (c >> 3) == 30 ? 4
                               : 0;
    char32_t cp = len == 1   ? c
                  : len == 2 ? (c & 0x1f)
                  : len == 3 ? (c & 0x0f)
                             : (c & 0x07);
    bool ok = len > 0 && i + static_cast<size_t>(len) <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      ok = (d >> 6) == 2;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (!ok) {
      out.push_back(c);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<size_t>(len);
  }
  return out;
}

bool IsSpace(char32_t c) {
  return c == U' ' || c == U'\t' || c == U'\n' || c == U'\r' || c == U'\f' ||
         c == U'\v' || c == 0x00a0 || c == 0x3000;
}

std::vector<std::u32string> Words(const std::u32string& text) {
  std::vector<std::u32string> words;
  std::u32string word;
  for (char32_t c : text) {
    if (IsSpace(c)) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

std::u32string Joined(const std::vector<std::u32string>& words) {
  std::u32string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out.push_back(U' ');
    out += words[i];
  }
  return out;
}

template <typename Seq>
int64_t Distance(const Seq& a, const Seq& b) {
  // One row of the dynamic programme at a time.
  std::vector<int64_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int64_t diagonal = row[0];
    row[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t above = row[j];
      row[j] = std::min({above + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

int64_t EditDistance(const std::vector<std::u32string>& a,
                     const std::vector<std::u32string>& b) {
  return Distance(a, b);
}

int64_t EditDistance(const std::u32string& a, const std::u32string& b) {
  return Distance(a, b);
}

void SpeechErrorRates::Add(const std::string& reference,
                           const std::string& hypothesis) {
  const std::vector<std::u32string> ref = Words(Decode(reference));
  const std::vector<std::u32string> hyp = Words(Decode(hypothesis));
  word_errors_ += EditDistance(ref, hyp);
  words_ += static_cast<int64_t>(ref.size());
  const std::u32string ref_chars = Joined(ref);
  char_errors_ += EditDistance(ref_chars, Joined(hyp));
  chars_ += static_cast<int64_t>(ref_chars.size());
}

double SpeechErrorRates::wer() const {
  return words_ == 0
             ? 0.0
             : static_cast<double>(word_errors_) / static_cast<double>(words_);
}

double SpeechErrorRates::cer() const {
  return chars_ == 0
             ? 0.0
             : static_cast<double>(char_errors_) / static_cast<double>(chars_);
}

}  // namespace lathe
