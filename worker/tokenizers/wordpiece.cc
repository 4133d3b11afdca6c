#include "worker/tokenizers/wordpiece.h"

#include <utf8proc.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/status.h"

namespace lathe {
namespace {

constexpr size_t kMaxCharsPerWord = 100;

std::vector<int32_t> DecodeUtf8(std::string_view s) {
  std::vector<int32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) {  // Invalid byte: becomes U+FFFD, which cleaning drops.
      cp = 0xFFFD;
      n = 1;
    }
    out.push_back(cp);
    p += n;
    left -= n;
  }
  return out;
}

void AppendUtf8(int32_t cp, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
  out->append(reinterpret_cast<const char*>(buf), n);
}

bool IsWhitespace(int32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return true;
  return utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS;
}

bool IsControl(int32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  const auto cat = utf8proc_category(cp);
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF;
}

bool IsPunctuation(int32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) ||
      (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
    return true;
  }
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

bool IsCjk(int32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Lowercases, then strips accents (NFD, dropping nonspacing marks).
std::vector<int32_t> LowerAndStripAccents(const std::vector<int32_t>& word) {
  std::vector<int32_t> out;
  for (int32_t cp : word) {
    const int32_t lower = utf8proc_tolower(cp);
    utf8proc_int32_t decomposed[8];
    utf8proc_int32_t last_boundclass = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(
        lower, decomposed, 8,
        static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE), &last_boundclass);
    if (n < 0 || n > 8) {
      out.push_back(lower);
      continue;
    }
    for (utf8proc_ssize_t i = 0; i < n; ++i) {
      if (utf8proc_category(decomposed[i]) == UTF8PROC_CATEGORY_MN) continue;
      out.push_back(decomposed[i]);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>>
WordPieceTokenizer::FromVocabFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<std::string> tokens = absl::StrSplit(text, '\n');
  if (!tokens.empty() && tokens.back().empty()) tokens.pop_back();
  for (std::string& t : tokens) {
    if (!t.empty() && t.back() == '\r') t.pop_back();
  }
  auto tok = FromVocab(std::move(tokens));
  if (!tok.ok()) {
    return absl::Status(tok.status().code(),
                        absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>>
WordPieceTokenizer::FromVocab(std::vector<std::string> tokens) {
  auto tok = std::unique_ptr<WordPieceTokenizer>(new WordPieceTokenizer());
  tok->vocab_ = std::move(tokens);
  for (size_t i = 0; i < tok->vocab_.size(); ++i) {
    // A duplicate maps to its last line, as in Hugging Face's load_vocab.
    tok->ids_[tok->vocab_[i]] = static_cast<int64_t>(i);
  }
  struct Special {
    const char* name;
    int64_t* id;
  };
  for (const Special& s :
       {Special{"[UNK]", &tok->unk_id_}, Special{"[CLS]", &tok->cls_id_},
        Special{"[SEP]", &tok->sep_id_}, Special{"[PAD]", &tok->pad_id_}}) {
    const int64_t id = tok->TokenToId(s.name);
    if (id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary lacks the special token ", s.name));
    }
    *s.id = id;
  }
  return tok;
}

int64_t WordPieceTokenizer::TokenToId(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<std::string> WordPieceTokenizer::BasicTokenize(
    std::string_view text) const {
  // Clean and isolate CJK ideographs, splitting on whitespace as we go.
  std::vector<std::vector<int32_t>> words;
  std::vector<int32_t> current;
  auto flush = [&] {
    if (!current.empty()) words.push_back(std::move(current));
    current.clear();
  };
  for (int32_t cp : DecodeUtf8(text)) {
    if (cp == 0 || cp == 0xFFFD || IsControl(cp)) continue;
    if (IsWhitespace(cp)) {
      flush();
    } else if (IsCjk(cp)) {
      flush();
      current.push_back(cp);
      flush();
    } else {
      current.push_back(cp);
    }
  }
  flush();
  std::vector<std::string> out;
  for (const auto& word : words) {
    std::string piece;
    for (int32_t cp : LowerAndStripAccents(word)) {
      if (IsPunctuation(cp)) {
        if (!piece.empty()) out.push_back(std::move(piece));
        piece.clear();
        std::string p;
        AppendUtf8(cp, &p);
        out.push_back(std::move(p));
      } else if (IsWhitespace(cp)) {
        // Decomposition can yield spaces (e.g. compatibility forms).
        if (!piece.empty()) out.push_back(std::move(piece));
        piece.clear();
      } else {
        AppendUtf8(cp, &piece);
      }
    }
    if (!piece.empty()) out.push_back(std::move(piece));
  }
  return out;
}

void WordPieceTokenizer::WordPiece(const std::string& word,
                                   std::vector<std::string>* out) const {
  const std::vector<int32_t> chars = DecodeUtf8(word);
  if (chars.size() > kMaxCharsPerWord) {
    out->push_back(vocab_[unk_id_]);
    return;
  }
  // Byte offset of each character boundary.
  std::vector<size_t> offsets;
  offsets.reserve(chars.size() + 1);
  size_t pos = 0;
  for (int32_t cp : chars) {
    offsets.push_back(pos);
    std::string tmp;
    AppendUtf8(cp, &tmp);
    pos += tmp.size();
  }
  offsets.push_back(pos);
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < chars.size()) {
    size_t end = chars.size();
    std::string found;
    bool ok = false;
    while (start < end) {
      std::string sub =
          word.substr(offsets[start], offsets[end] - offsets[start]);
      if (start > 0) sub = "##" + sub;
      if (ids_.count(sub)) {
        found = std::move(sub);
        ok = true;
        break;
      }
      --end;
    }
    if (!ok) {
      out->push_back(vocab_[unk_id_]);
      return;
    }
    pieces.push_back(std::move(found));
    start = end;
  }
  for (auto& p : pieces) out->push_back(std::move(p));
}

std::vector<std::string> WordPieceTokenizer::Tokenize(
    std::string_view text) const {
  std::vector<std::string> out;
  for (const std::string& word : BasicTokenize(text)) WordPiece(word, &out);
  return out;
}

std::vector<int64_t> WordPieceTokenizer::TokenizeToIds(
    std::string_view text) const {
  std::vector<int64_t> ids;
  for (const std::string& piece : Tokenize(text)) ids.push_back(ids_.at(piece));
  return ids;
}

Encoding WordPieceTokenizer::Assemble(std::vector<int64_t> a,
                                      std::optional<std::vector<int64_t>> b,
                                      int64_t max_length) const {
  const int64_t specials = b.has_value() ? 3 : 2;
  const int64_t budget = std::max<int64_t>(0, max_length - specials);
  while (static_cast<int64_t>(a.size() + (b ? b->size() : 0)) > budget) {
    if (!b.has_value() || a.size() > b->size()) {
      a.pop_back();
    } else {
      b->pop_back();
    }
  }
  Encoding enc;
  enc.input_ids.push_back(cls_id_);
  enc.input_ids.insert(enc.input_ids.end(), a.begin(), a.end());
  enc.input_ids.push_back(sep_id_);
  enc.token_type_ids.assign(enc.input_ids.size(), 0);
  if (b.has_value()) {
    enc.input_ids.insert(enc.input_ids.end(), b->begin(), b->end());
    enc.input_ids.push_back(sep_id_);
    enc.token_type_ids.resize(enc.input_ids.size(), 1);
  }
  return enc;
}

Encoding WordPieceTokenizer::Encode(std::string_view text,
                                    std::optional<std::string_view> text_pair,
                                    int64_t max_length) const {
  std::optional<std::vector<int64_t>> b;
  if (text_pair.has_value()) b = TokenizeToIds(*text_pair);
  return Assemble(TokenizeToIds(text), std::move(b), max_length);
}

}  // namespace lathe
