// Pre-tokenizers of tokenizer.json: split pieces into words (and, for
// byte-level, map bytes to printable characters).
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/tokenizers/components.h"

namespace lathe {
namespace tok {
namespace {

constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Each character for which `pred` holds is one match.
std::vector<Span> CharMatches(const std::string& text,
                              const std::function<bool(int32_t)>& pred) {
  std::vector<Span> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    if (pred(NextCodePoint(text, &pos))) out.emplace_back(start, pos);
  }
  return out;
}

void SplitAll(std::vector<Piece>* pieces,
              const std::function<std::vector<Span>(const std::string&)>& find,
              SplitBehavior behavior, bool invert) {
  std::vector<Piece> out;
  out.reserve(pieces->size());
  for (const Piece& p : *pieces) {
    SplitPiece(p, find(p.text), behavior, invert, &out);
  }
  *pieces = std::move(out);
}

class BertPreTokenizer : public PreTokenizer {
 public:
  void PreTokenize(std::vector<Piece>* pieces, bool) const override {
    SplitAll(
        pieces,
        [](const std::string& t) { return CharMatches(t, IsWhitespaceChar); },
        SplitBehavior::kRemoved, false);
    SplitAll(
        pieces,
        [](const std::string& t) { return CharMatches(t, IsPunctuationChar); },
        SplitBehavior::kIsolated, false);
  }
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void PreTokenize(std::vector<Piece>* pieces, bool) const override {
    SplitAll(
        pieces,
        [](const std::string& t) { return CharMatches(t, IsWhitespaceChar); },
        SplitBehavior::kRemoved, false);
  }
};

class CharSplitPreTokenizer : public PreTokenizer {
 public:
  CharSplitPreTokenizer(std::function<bool(int32_t)> pred,
                        SplitBehavior behavior)
      : pred_(std::move(pred)), behavior_(behavior) {}
  void PreTokenize(std::vector<Piece>* pieces, bool) const override {
    SplitAll(
        pieces, [this](const std::string& t) { return CharMatches(t, pred_); },
        behavior_, false);
  }

 private:
  std::function<bool(int32_t)> pred_;
  SplitBehavior behavior_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::string literal, std::unique_ptr<Regex> re,
                    SplitBehavior behavior, bool invert)
      : literal_(std::move(literal)),
        re_(std::move(re)),
        behavior_(behavior),
        invert_(invert) {}
  void PreTokenize(std::vector<Piece>* pieces, bool) const override {
    SplitAll(
        pieces,
        [this](const std::string& t) {
          if (re_ != nullptr) return re_->FindAll(t);
          std::vector<Span> m;
          if (literal_.empty()) return m;
          size_t pos = 0;
          while ((pos = t.find(literal_, pos)) != std::string::npos) {
            m.emplace_back(pos, pos + literal_.size());
            pos += literal_.size();
          }
          return m;
        },
        behavior_, invert_);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> re_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}
  void PreTokenize(std::vector<Piece>* pieces, bool) const override {
    if (add_prefix_space_) {
      for (Piece& p : *pieces) {
        if (!p.text.empty() && p.text[0] == ' ') continue;
        const Span first = p.align.empty()
                               ? Span{0, 0}
                               : Span{p.align[0].first, p.align[0].first};
        p.text.insert(p.text.begin(), ' ');
        p.align.insert(p.align.begin(), first);
      }
    }
    if (re_ != nullptr) {
      SplitAll(
          pieces, [this](const std::string& t) { return re_->FindAll(t); },
          SplitBehavior::kIsolated, false);
    }
    const auto& table = ByteToUnicode();
    for (Piece& p : *pieces) {
      PieceBuilder b;
      for (size_t i = 0; i < p.text.size(); ++i) {
        b.Append(table[static_cast<uint8_t>(p.text[i])], p.align[i]);
      }
      p = b.Finish();
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)),
        prepend_(prepend),
        split_(split) {}
  void PreTokenize(std::vector<Piece>* pieces, bool first) const override {
    for (size_t i = 0; i < pieces->size(); ++i) {
      Piece& p = (*pieces)[i];
      Piece out;
      const bool prepend = prepend_ == Prepend::kAlways ||
                           (prepend_ == Prepend::kFirst && first && i == 0);
      if (prepend &&
          p.text.compare(0, replacement_.size(), replacement_) != 0) {
        const Span at = p.align.empty()
                            ? Span{0, 0}
                            : Span{p.align[0].first, p.align[0].first};
        // A leading space becomes the marker itself, not a second one.
        if (p.text.empty() || p.text[0] != ' ') {
          out.text = replacement_;
          out.align.assign(replacement_.size(), at);
        }
      }
      for (size_t j = 0; j < p.text.size(); ++j) {
        if (p.text[j] == ' ') {
          out.text += replacement_;
          out.align.resize(out.text.size(), p.align[j]);
        } else {
          out.text += p.text[j];
          out.align.push_back(p.align[j]);
        }
      }
      p = std::move(out);
    }
    if (split_) {
      const std::string rep = replacement_;
      SplitAll(
          pieces,
          [rep](const std::string& t) {
            std::vector<Span> m;
            size_t pos = 0;
            while ((pos = t.find(rep, pos)) != std::string::npos) {
              m.emplace_back(pos, pos + rep.size());
              pos += rep.size();
            }
            return m;
          },
          SplitBehavior::kMergedWithNext, false);
    }
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> s)
      : steps_(std::move(s)) {}
  void PreTokenize(std::vector<Piece>* pieces, bool first) const override {
    for (const auto& s : steps_) s->PreTokenize(pieces, first);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(
    const Json& obj, const JsonContext& ctx) {
  ASSIGN_OR_RETURN(std::string type, GetType(obj, ctx));
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "WhitespaceSplit") {
    return std::make_unique<WhitespaceSplitPreTokenizer>();
  }
  if (type == "Whitespace") {
    ASSIGN_OR_RETURN(auto re, Regex::Compile(R"(\w+|[^\w\s]+)", ctx));
    return std::make_unique<SplitPreTokenizer>("", std::move(re),
                                               SplitBehavior::kRemoved, true);
  }
  if (type == "Punctuation") {
    ASSIGN_OR_RETURN(SplitBehavior b, ParseBehavior(obj, ctx));
    return std::make_unique<CharSplitPreTokenizer>(IsPunctuationChar, b);
  }
  if (type == "Digits") {
    ASSIGN_OR_RETURN(bool individual,
                     GetBool(obj, ctx, "individual_digits", false));
    return std::make_unique<CharSplitPreTokenizer>(
        IsDigitChar,
        individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous);
  }
  if (type == "CharDelimiterSplit") {
    ASSIGN_OR_RETURN(std::string d,
                     GetString(obj, ctx, "delimiter", std::nullopt));
    size_t pos = 0;
    const int32_t cp = d.empty() ? -1 : NextCodePoint(d, &pos);
    if (cp < 0 || pos != d.size()) {
      return ctx.Child("delimiter").Error("must be one character");
    }
    return std::make_unique<CharSplitPreTokenizer>(
        [cp](int32_t c) { return c == cp; }, SplitBehavior::kRemoved);
  }
  if (type == "Split") {
    std::string literal;
    std::unique_ptr<Regex> re;
    RETURN_IF_ERROR(ReadPattern(obj, ctx, &literal, &re));
    ASSIGN_OR_RETURN(SplitBehavior b, ParseBehavior(obj, ctx));
    ASSIGN_OR_RETURN(bool invert, GetBool(obj, ctx, "invert", false));
    return std::make_unique<SplitPreTokenizer>(std::move(literal),
                                               std::move(re), b, invert);
  }
  if (type == "ByteLevel") {
    ASSIGN_OR_RETURN(bool prefix, GetBool(obj, ctx, "add_prefix_space", true));
    ASSIGN_OR_RETURN(bool use_regex, GetBool(obj, ctx, "use_regex", true));
    std::unique_ptr<Regex> re;
    if (use_regex) {
      ASSIGN_OR_RETURN(re, Regex::Compile(kGpt2Pattern, ctx));
    }
    return std::make_unique<ByteLevelPreTokenizer>(prefix, std::move(re));
  }
  if (type == "Metaspace") {
    ASSIGN_OR_RETURN(std::string rep,
                     GetString(obj, ctx, "replacement", "\xE2\x96\x81"));
    if (rep.empty()) return ctx.Child("replacement").Error("must not be empty");
    ASSIGN_OR_RETURN(bool add_prefix,
                     GetBool(obj, ctx, "add_prefix_space", true));
    ASSIGN_OR_RETURN(
        std::string scheme,
        GetString(obj, ctx, "prepend_scheme", add_prefix ? "always" : "never"));
    ASSIGN_OR_RETURN(bool split, GetBool(obj, ctx, "split", true));
    MetaspacePreTokenizer::Prepend prepend;
    if (scheme == "always") {
      prepend = MetaspacePreTokenizer::Prepend::kAlways;
    } else if (scheme == "first") {
      prepend = MetaspacePreTokenizer::Prepend::kFirst;
    } else if (scheme == "never") {
      prepend = MetaspacePreTokenizer::Prepend::kNever;
    } else {
      return ctx.Child("prepend_scheme")
          .Error(absl::StrCat("unknown prepend scheme \"", scheme, "\""));
    }
    return std::make_unique<MetaspacePreTokenizer>(std::move(rep), prepend,
                                                   split);
  }
  if (type == "Sequence") {
    const JsonContext sctx = ctx.Child("pretokenizers");
    auto it = obj.find("pretokenizers");
    if (it == obj.end() || !it->is_array()) {
      return sctx.Error("missing (an array is required)");
    }
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(auto p, MakePreTokenizer((*it)[i], sctx.Index(i)));
      steps.push_back(std::move(p));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return ctx.Child("type").Error(
      absl::StrCat("unsupported pre-tokenizer \"", type, "\""));
}

}  // namespace tok
}  // namespace lathe
