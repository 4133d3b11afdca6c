// Normalizers of tokenizer.json: each rewrites a Piece and keeps its
// alignment to the original input.
#include <utf8proc.h>

#include <cstdlib>
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/tokenizers/components.h"

namespace lathe {
namespace tok {
namespace {

// Rewrites a piece character by character: `fn` appends zero or more
// characters for each input character, all aligned to that character.
Piece MapChars(const Piece& in,
               const std::function<void(int32_t, std::vector<int32_t>*)>& fn) {
  PieceBuilder b;
  std::vector<int32_t> repl;
  size_t pos = 0;
  while (pos < in.text.size()) {
    const size_t start = pos;
    const int32_t cp = NextCodePoint(in.text, &pos);
    repl.clear();
    fn(cp, &repl);
    const Span orig = in.OriginalSpan(start, pos);
    for (int32_t r : repl) b.Append(r, orig);
  }
  return b.Finish();
}

enum class Form { kNfc, kNfd, kNfkc, kNfkd };

utf8proc_option_t FormOptions(Form f) {
  int o = UTF8PROC_STABLE;
  switch (f) {
    case Form::kNfc:
      o |= UTF8PROC_COMPOSE;
      break;
    case Form::kNfd:
      o |= UTF8PROC_DECOMPOSE;
      break;
    case Form::kNfkc:
      o |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case Form::kNfkd:
      o |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
  }
  return static_cast<utf8proc_option_t>(o);
}

std::string MapString(std::string_view s, Form f) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
      static_cast<utf8proc_ssize_t>(s.size()), &out, FormOptions(f));
  if (n < 0 || out == nullptr) return std::string(s);
  std::string r(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

bool IsHangulJamoFollower(int32_t cp) {
  return (cp >= 0x1160 && cp <= 0x11FF) || (cp >= 0xD7B0 && cp <= 0xD7FF);
}

// Unicode normalization. Characters are grouped into runs that start at a
// starter (combining class 0); a run that normalization changes maps all
// its output characters to the whole run's original range.
Piece NormalizeForm(const Piece& in, Form f) {
  bool ascii = true;
  for (char c : in.text) {
    if (static_cast<uint8_t>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return in;
  const std::string whole = MapString(in.text, f);
  if (whole == in.text) return in;
  PieceBuilder b;
  size_t pos = 0;
  while (pos < in.text.size()) {
    const size_t start = pos;
    NextCodePoint(in.text, &pos);
    while (pos < in.text.size()) {
      size_t next = pos;
      const int32_t cp = NextCodePoint(in.text, &next);
      const auto* prop = utf8proc_get_property(cp);
      if (prop->combining_class == 0 && !IsHangulJamoFollower(cp)) break;
      pos = next;
    }
    const std::string_view run(in.text.data() + start, pos - start);
    const std::string mapped = MapString(run, f);
    if (mapped == run) {
      for (size_t i = start; i < pos; ++i) {
        b.AppendBytes(std::string_view(in.text.data() + i, 1), in.align[i]);
      }
    } else {
      b.AppendBytes(mapped, in.OriginalSpan(start, pos));
    }
  }
  return b.Finish();
}

class FormNormalizer : public Normalizer {
 public:
  explicit FormNormalizer(Form f) : form_(f) {}
  Piece Normalize(Piece in) const override { return NormalizeForm(in, form_); }

 private:
  Form form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  Piece Normalize(Piece in) const override {
    bool ascii_lower = true;
    for (char c : in.text) {
      if (static_cast<uint8_t>(c) >= 0x80 || (c >= 'A' && c <= 'Z')) {
        ascii_lower = false;
        break;
      }
    }
    if (ascii_lower) return in;
    return MapChars(in, [](int32_t cp, std::vector<int32_t>* out) {
      // U+0130 lowercases to two characters (i + combining dot above).
      if (cp == 0x130) {
        out->push_back('i');
        out->push_back(0x307);
        return;
      }
      out->push_back(utf8proc_tolower(cp));
    });
  }
};

Piece StripMarks(const Piece& in) {
  return MapChars(in, [](int32_t cp, std::vector<int32_t>* out) {
    if (utf8proc_category(cp) != UTF8PROC_CATEGORY_MN) out->push_back(cp);
  });
}

class StripAccentsNormalizer : public Normalizer {
 public:
  Piece Normalize(Piece in) const override { return StripMarks(in); }
};

class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean, bool chinese, bool strip, bool lower)
      : clean_(clean), chinese_(chinese), strip_(strip), lower_(lower) {}
  Piece Normalize(Piece in) const override {
    Piece p = MapChars(in, [this](int32_t cp, std::vector<int32_t>* out) {
      if (clean_) {
        if (cp == 0 || cp == 0xFFFD || IsBertControl(cp)) return;
        if (IsBertWhitespace(cp)) cp = ' ';
      }
      if (chinese_ && IsCjkChar(cp)) {
        out->push_back(' ');
        out->push_back(cp);
        out->push_back(' ');
        return;
      }
      out->push_back(cp);
    });
    if (strip_) p = StripMarks(NormalizeForm(p, Form::kNfd));
    if (lower_) p = LowercaseNormalizer().Normalize(std::move(p));
    return p;
  }

 private:
  bool clean_, chinese_, strip_, lower_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  Piece Normalize(Piece in) const override {
    size_t b = 0, e = in.text.size();
    if (left_) {
      while (b < e) {
        size_t p = b;
        if (!IsWhitespaceChar(NextCodePoint(in.text, &p))) break;
        b = p;
      }
    }
    if (right_) {
      while (e > b) {
        size_t s = e - 1;
        while (s > b && (static_cast<uint8_t>(in.text[s]) & 0xC0) == 0x80) --s;
        size_t p = s;
        if (!IsWhitespaceChar(NextCodePoint(in.text, &p))) break;
        e = s;
      }
    }
    return in.Sub(b, e);
  }

 private:
  bool left_, right_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string s) : prefix_(std::move(s)) {}
  Piece Normalize(Piece in) const override {
    if (in.text.empty()) return in;
    PieceBuilder b;
    // The added text points at the first original character.
    size_t first_end = 0;
    NextCodePoint(in.text, &first_end);
    b.AppendBytes(prefix_, in.OriginalSpan(0, first_end));
    Piece out = b.Finish();
    out.text += in.text;
    out.align.insert(out.align.end(), in.align.begin(), in.align.end());
    return out;
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string literal, std::unique_ptr<Regex> re,
                    std::string content)
      : literal_(std::move(literal)),
        re_(std::move(re)),
        content_(std::move(content)) {}

  Piece Normalize(Piece in) const override {
    std::vector<Span> matches;
    if (re_ != nullptr) {
      matches = re_->FindAll(in.text);
    } else if (!literal_.empty()) {
      size_t pos = 0;
      while ((pos = in.text.find(literal_, pos)) != std::string::npos) {
        matches.emplace_back(pos, pos + literal_.size());
        pos += literal_.size();
      }
    }
    if (matches.empty()) return in;
    Piece out;
    out.text.reserve(in.text.size());
    size_t last = 0;
    for (const Span& m : matches) {
      const auto b = static_cast<size_t>(m.first);
      const auto e = static_cast<size_t>(m.second);
      out.text.append(in.text, last, b - last);
      out.align.insert(out.align.end(),
                       in.align.begin() + static_cast<std::ptrdiff_t>(last),
                       in.align.begin() + static_cast<std::ptrdiff_t>(b));
      out.text += content_;
      out.align.resize(out.text.size(), in.OriginalSpan(b, e));
      last = e;
    }
    out.text.append(in.text, last, std::string::npos);
    out.align.insert(out.align.end(),
                     in.align.begin() + static_cast<std::ptrdiff_t>(last),
                     in.align.end());
    return out;
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> s)
      : steps_(std::move(s)) {}
  Piece Normalize(Piece in) const override {
    for (const auto& s : steps_) in = s->Normalize(std::move(in));
    return in;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

// Reads a {"String": s} or {"Regex": r} pattern; `literal` or `re` is set.
absl::Status ReadPattern(const Json& obj, const JsonContext& ctx,
                         std::string* literal, std::unique_ptr<Regex>* re) {
  const JsonContext pctx = ctx.Child("pattern");
  auto it = obj.find("pattern");
  if (it == obj.end() || !it->is_object()) {
    return pctx.Error("missing (an object with \"String\" or \"Regex\")");
  }
  if (it->contains("String") && (*it)["String"].is_string()) {
    *literal = (*it)["String"].get<std::string>();
    return absl::OkStatus();
  }
  if (it->contains("Regex") && (*it)["Regex"].is_string()) {
    ASSIGN_OR_RETURN(*re, Regex::Compile((*it)["Regex"].get<std::string>(),
                                         pctx.Child("Regex")));
    return absl::OkStatus();
  }
  return pctx.Error("must hold a \"String\" or a \"Regex\" string");
}

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(
    const Json& obj, const JsonContext& ctx) {
  ASSIGN_OR_RETURN(std::string type, GetType(obj, ctx));
  if (type == "NFC") return std::make_unique<FormNormalizer>(Form::kNfc);
  if (type == "NFD") return std::make_unique<FormNormalizer>(Form::kNfd);
  if (type == "NFKC") return std::make_unique<FormNormalizer>(Form::kNfkc);
  if (type == "NFKD") return std::make_unique<FormNormalizer>(Form::kNfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "BertNormalizer") {
    ASSIGN_OR_RETURN(bool clean, GetBool(obj, ctx, "clean_text", true));
    ASSIGN_OR_RETURN(bool chinese,
                     GetBool(obj, ctx, "handle_chinese_chars", true));
    ASSIGN_OR_RETURN(bool lower, GetBool(obj, ctx, "lowercase", true));
    ASSIGN_OR_RETURN(bool strip, GetBool(obj, ctx, "strip_accents", lower));
    return std::make_unique<BertNormalizer>(clean, chinese, strip, lower);
  }
  if (type == "Strip") {
    ASSIGN_OR_RETURN(bool left, GetBool(obj, ctx, "strip_left", true));
    ASSIGN_OR_RETURN(bool right, GetBool(obj, ctx, "strip_right", true));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(std::string p,
                     GetString(obj, ctx, "prepend", std::nullopt));
    return std::make_unique<PrependNormalizer>(std::move(p));
  }
  if (type == "Replace") {
    std::string literal;
    std::unique_ptr<Regex> re;
    RETURN_IF_ERROR(ReadPattern(obj, ctx, &literal, &re));
    ASSIGN_OR_RETURN(std::string content,
                     GetString(obj, ctx, "content", std::nullopt));
    return std::make_unique<ReplaceNormalizer>(
        std::move(literal), std::move(re), std::move(content));
  }
  if (type == "Sequence") {
    const JsonContext sctx = ctx.Child("normalizers");
    auto it = obj.find("normalizers");
    if (it == obj.end() || !it->is_array()) {
      return sctx.Error("missing (an array is required)");
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(auto n, MakeNormalizer((*it)[i], sctx.Index(i)));
      steps.push_back(std::move(n));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return ctx.Child("type").Error(
      absl::StrCat("unsupported normalizer \"", type, "\""));
}

}  // namespace tok
}  // namespace lathe
