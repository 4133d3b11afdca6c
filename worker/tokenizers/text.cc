// UTF-8 helpers, character classes, JSON access, Piece and Regex.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/tokenizers/components.h"

namespace lathe {
namespace tok {

int32_t NextCodePoint(std::string_view s, size_t* pos) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data() + *pos);
  const auto left = static_cast<utf8proc_ssize_t>(s.size() - *pos);
  utf8proc_int32_t cp = 0;
  utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
  if (n <= 0) {
    *pos += 1;
    return 0xFFFD;
  }
  *pos += static_cast<size_t>(n);
  return cp;
}

void AppendUtf8(int32_t cp, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

bool IsWhitespaceChar(int32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool IsBertWhitespace(int32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return true;
  return utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS;
}

bool IsBertControl(int32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  const auto cat = utf8proc_category(cp);
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
         cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CO;
}

bool IsPunctuationChar(int32_t cp) {
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

bool IsCjkChar(int32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

bool IsDigitChar(int32_t cp) {
  const auto cat = utf8proc_category(cp);
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL ||
         cat == UTF8PROC_CATEGORY_NO;
}

absl::Status JsonError(const std::string& file, const std::string& path,
                       std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      file, ": ", path.empty() ? "(root)" : path, ": ", std::string(what)));
}

JsonContext JsonContext::Child(std::string_view key) const {
  return {file, path.empty() ? std::string(key)
                             : absl::StrCat(path, ".", std::string(key))};
}
JsonContext JsonContext::Index(size_t i) const {
  return {file, absl::StrCat(path, "[", i, "]")};
}
absl::Status JsonContext::Error(std::string_view what) const {
  return JsonError(file, path, what);
}

namespace {
const Json* Field(const Json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}
}  // namespace

absl::StatusOr<std::string> GetString(const Json& obj, const JsonContext& ctx,
                                      const char* key,
                                      std::optional<std::string> def) {
  const Json* f = Field(obj, key);
  if (f == nullptr) {
    if (def) return *def;
    return ctx.Child(key).Error("missing (a string is required)");
  }
  if (!f->is_string()) return ctx.Child(key).Error("must be a string");
  return f->get<std::string>();
}

absl::StatusOr<bool> GetBool(const Json& obj, const JsonContext& ctx,
                             const char* key, std::optional<bool> def) {
  const Json* f = Field(obj, key);
  if (f == nullptr) {
    if (def) return *def;
    return ctx.Child(key).Error("missing (a boolean is required)");
  }
  if (!f->is_boolean()) return ctx.Child(key).Error("must be a boolean");
  return f->get<bool>();
}

absl::StatusOr<int64_t> GetInt(const Json& obj, const JsonContext& ctx,
                               const char* key, std::optional<int64_t> def) {
  const Json* f = Field(obj, key);
  if (f == nullptr) {
    if (def) return *def;
    return ctx.Child(key).Error("missing (an integer is required)");
  }
  if (!f->is_number_integer())
    return ctx.Child(key).Error("must be an integer");
  return f->get<int64_t>();
}

absl::StatusOr<std::string> GetType(const Json& obj, const JsonContext& ctx) {
  if (!obj.is_object()) return ctx.Error("must be an object");
  return GetString(obj, ctx, "type", std::nullopt);
}

Piece Piece::Sub(size_t begin, size_t end) const {
  Piece p;
  p.text = text.substr(begin, end - begin);
  p.align.assign(align.begin() + static_cast<std::ptrdiff_t>(begin),
                 align.begin() + static_cast<std::ptrdiff_t>(end));
  return p;
}

Span Piece::OriginalSpan(size_t begin, size_t end) const {
  if (begin >= end || end > align.size()) {
    if (begin < align.size()) return {align[begin].first, align[begin].first};
    if (!align.empty()) return {align.back().second, align.back().second};
    return {0, 0};
  }
  return {align[begin].first, align[end - 1].second};
}

void PieceBuilder::Append(int32_t cp, Span original) {
  AppendUtf8(cp, &piece_.text);
  piece_.align.resize(piece_.text.size(), original);
}

void PieceBuilder::AppendBytes(std::string_view bytes, Span original) {
  piece_.text.append(bytes);
  piece_.align.resize(piece_.text.size(), original);
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(
    const std::string& pattern, const JsonContext& ctx) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_offset,
      nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return ctx.Error(absl::StrCat("bad regular expression at offset ",
                                  err_offset, ": ",
                                  reinterpret_cast<const char*>(buf)));
  }
  // JIT is an optimization only: matching falls back to the interpreter.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  auto re = std::unique_ptr<Regex>(new Regex());
  re->code_ = code;
  return re;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<Span> Regex::FindAll(std::string_view text) const {
  std::vector<Span> out;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), start, 0, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_JIT, md,
                       nullptr);
    }
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(static_cast<int64_t>(b), static_cast<int64_t>(e));
      start = e;
    } else {
      // An empty match: step over one character.
      size_t next = b;
      if (next >= text.size()) break;
      NextCodePoint(text, &next);
      start = next;
    }
  }
  pcre2_match_data_free(md);
  return out;
}

absl::StatusOr<SplitBehavior> ParseBehavior(const Json& obj,
                                            const JsonContext& ctx) {
  auto name = GetString(obj, ctx, "behavior", std::string("Isolated"));
  if (!name.ok()) return name.status();
  if (*name == "Removed") return SplitBehavior::kRemoved;
  if (*name == "Isolated") return SplitBehavior::kIsolated;
  if (*name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (*name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (*name == "Contiguous") return SplitBehavior::kContiguous;
  return ctx.Child("behavior")
      .Error(absl::StrCat("unknown split behavior \"", *name, "\""));
}

void SplitPiece(const Piece& piece, const std::vector<Span>& matches,
                SplitBehavior behavior, bool invert, std::vector<Piece>* out) {
  // (begin, end, is_delimiter) covering the whole piece.
  struct Part {
    size_t b, e;
    bool delim;
  };
  std::vector<Part> parts;
  size_t last = 0;
  for (const Span& m : matches) {
    const auto b = static_cast<size_t>(m.first);
    const auto e = static_cast<size_t>(m.second);
    if (b > last) parts.push_back({last, b, invert});
    parts.push_back({b, e, !invert});
    last = e;
  }
  if (last < piece.text.size())
    parts.push_back({last, piece.text.size(), invert});

  std::vector<Span> ranges;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Part& p : parts) {
        if (!p.delim) ranges.emplace_back(p.b, p.e);
      }
      break;
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) ranges.emplace_back(p.b, p.e);
      break;
    case SplitBehavior::kContiguous: {
      bool prev_was_delim = false;
      for (const Part& p : parts) {
        if (p.delim && prev_was_delim && !ranges.empty()) {
          ranges.back().second = static_cast<int64_t>(p.e);
        } else {
          ranges.emplace_back(p.b, p.e);
        }
        prev_was_delim = p.delim;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_was_delim = true;  // nothing to merge into at the start
      for (const Part& p : parts) {
        if (p.delim && !prev_was_delim && !ranges.empty()) {
          ranges.back().second = static_cast<int64_t>(p.e);
        } else {
          ranges.emplace_back(p.b, p.e);
        }
        prev_was_delim = p.delim;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool pending = false;
      for (const Part& p : parts) {
        if (pending) {
          ranges.back().second = static_cast<int64_t>(p.e);
          pending = p.delim;
          continue;
        }
        ranges.emplace_back(p.b, p.e);
        pending = p.delim;
      }
      break;
    }
  }
  for (const Span& r : ranges) {
    if (r.second > r.first) {
      out->push_back(piece.Sub(static_cast<size_t>(r.first),
                               static_cast<size_t>(r.second)));
    }
  }
}

const std::vector<int32_t>& ByteToUnicode() {
  static const std::vector<int32_t>* table = [] {
    auto* t = new std::vector<int32_t>(256, 0);
    int32_t n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      (*t)[static_cast<size_t>(b)] = printable ? b : 256 + n++;
    }
    return t;
  }();
  return *table;
}

int ByteFromUnicode(int32_t cp) {
  static const absl::flat_hash_map<int32_t, int>* inverse = [] {
    auto* m = new absl::flat_hash_map<int32_t, int>();
    const auto& t = ByteToUnicode();
    for (int b = 0; b < 256; ++b) (*m)[t[static_cast<size_t>(b)]] = b;
    return m;
  }();
  auto it = inverse->find(cp);
  return it == inverse->end() ? -1 : it->second;
}

Span TrimOffsets(std::string_view text, Span span) {
  auto b = static_cast<size_t>(std::max<int64_t>(0, span.first));
  auto e = static_cast<size_t>(
      std::min<int64_t>(static_cast<int64_t>(text.size()), span.second));
  while (b < e) {
    size_t p = b;
    if (!IsWhitespaceChar(NextCodePoint(text, &p))) break;
    b = p;
  }
  while (e > b) {
    size_t start = e - 1;
    while (start > b && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) {
      --start;
    }
    size_t p = start;
    if (!IsWhitespaceChar(NextCodePoint(text, &p))) break;
    e = start;
  }
  // All whitespace: an empty span where the whitespace ends.
  if (b >= e) return {static_cast<int64_t>(b), static_cast<int64_t>(b)};
  return {static_cast<int64_t>(b), static_cast<int64_t>(e)};
}

void Encoded::Add(int64_t id, int64_t type_id, Span offset, int64_t seq,
                  bool special) {
  ids.push_back(id);
  type_ids.push_back(type_id);
  offsets.push_back(offset);
  sequence_ids.push_back(seq);
  special_mask.push_back(special ? 1 : 0);
}

void Encoded::Append(const Encoded& o) {
  ids.insert(ids.end(), o.ids.begin(), o.ids.end());
  type_ids.insert(type_ids.end(), o.type_ids.begin(), o.type_ids.end());
  offsets.insert(offsets.end(), o.offsets.begin(), o.offsets.end());
  sequence_ids.insert(sequence_ids.end(), o.sequence_ids.begin(),
                      o.sequence_ids.end());
  special_mask.insert(special_mask.end(), o.special_mask.begin(),
                      o.special_mask.end());
}

}  // namespace tok
}  // namespace lathe
