// Post-processors (special tokens around the sequences) and decoders (token
// strings back to text) of tokenizer.json.
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status.h"
#include "worker/tokenizers/components.h"

namespace lathe {
namespace tok {
namespace {

// One element of a template: a special token's ids, or sequence A / B.
struct TemplateItem {
  bool is_sequence = false;
  int sequence = 0;  // 0 for A, 1 for B
  std::vector<int64_t> ids;
  int64_t type_id = 0;
};

// Template post-processing; BERT and RoBERTa processors are templates too.
class TemplateProcessor : public PostProcessor {
 public:
  std::vector<TemplateItem> single, pair;
  bool trim_offsets = false;

  size_t AddedTokens(bool is_pair) const override {
    size_t n = 0;
    for (const auto& t : is_pair ? pair : single) {
      if (!t.is_sequence) n += t.ids.size();
    }
    return n;
  }

  Encoded Process(Encoded a, std::optional<Encoded> b, bool add_special,
                  const std::vector<std::string_view>& texts) const override {
    if (trim_offsets) {
      Trim(&a, texts.empty() ? std::string_view() : texts[0]);
      if (b) Trim(&*b, texts.size() > 1 ? texts[1] : std::string_view());
    }
    if (!add_special) {
      Encoded out = std::move(a);
      if (b) out.Append(*b);
      return out;
    }
    Encoded out;
    for (const TemplateItem& t : b ? pair : single) {
      if (!t.is_sequence) {
        for (int64_t id : t.ids) out.Add(id, t.type_id, {0, 0}, -1, true);
        continue;
      }
      Encoded* src = t.sequence == 0 ? &a : (b ? &*b : nullptr);
      if (src == nullptr) continue;
      const size_t start = out.size();
      out.Append(*src);
      for (size_t i = start; i < out.size(); ++i) out.type_ids[i] = t.type_id;
    }
    return out;
  }

 private:
  static void Trim(Encoded* e, std::string_view text) {
    for (size_t i = 0; i < e->size(); ++i) {
      if (!e->special_mask[i]) e->offsets[i] = TrimOffsets(text, e->offsets[i]);
    }
  }
};

// Byte-level: no special tokens, only offset trimming.
class ByteLevelProcessor : public TemplateProcessor {
 public:
  ByteLevelProcessor() {
    single.push_back({true, 0, {}, 0});
    pair.push_back({true, 0, {}, 0});
    pair.push_back({true, 1, {}, 1});
  }
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> s)
      : steps_(std::move(s)) {}
  size_t AddedTokens(bool pair) const override {
    size_t n = 0;
    for (const auto& s : steps_) n += s->AddedTokens(pair);
    return n;
  }
  Encoded Process(Encoded a, std::optional<Encoded> b, bool add_special,
                  const std::vector<std::string_view>& texts) const override {
    // Only the first step sees the pair; later steps see the combined
    // sequence (as the reference library chains them).
    Encoded cur = std::move(a);
    std::optional<Encoded> second = std::move(b);
    for (const auto& s : steps_) {
      cur = s->Process(std::move(cur), std::move(second), add_special, texts);
      second.reset();
    }
    return cur;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

absl::StatusOr<std::pair<std::string, int64_t>> TokenAndId(
    const Json& obj, const JsonContext& ctx, const char* key) {
  const JsonContext c = ctx.Child(key);
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array() || it->size() != 2 ||
      !(*it)[0].is_string() || !(*it)[1].is_number_integer()) {
    return c.Error("must be [token, id]");
  }
  return std::make_pair((*it)[0].get<std::string>(), (*it)[1].get<int64_t>());
}

absl::StatusOr<std::vector<TemplateItem>> ReadTemplate(
    const Json& obj, const JsonContext& ctx, const char* key,
    const Json& specials, const JsonContext& sctx) {
  const JsonContext c = ctx.Child(key);
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array()) {
    return c.Error("missing (an array is required)");
  }
  std::vector<TemplateItem> out;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& e = (*it)[i];
    const JsonContext ec = c.Index(i);
    TemplateItem item;
    if (e.contains("Sequence") && e["Sequence"].is_object()) {
      const Json& s = e["Sequence"];
      ASSIGN_OR_RETURN(std::string id,
                       GetString(s, ec.Child("Sequence"), "id", std::nullopt));
      if (id != "A" && id != "B") {
        return ec.Child("Sequence.id").Error("must be \"A\" or \"B\"");
      }
      item.is_sequence = true;
      item.sequence = id == "A" ? 0 : 1;
      ASSIGN_OR_RETURN(item.type_id,
                       GetInt(s, ec.Child("Sequence"), "type_id", 0));
    } else if (e.contains("SpecialToken") && e["SpecialToken"].is_object()) {
      const Json& s = e["SpecialToken"];
      ASSIGN_OR_RETURN(std::string id, GetString(s, ec.Child("SpecialToken"),
                                                 "id", std::nullopt));
      ASSIGN_OR_RETURN(item.type_id,
                       GetInt(s, ec.Child("SpecialToken"), "type_id", 0));
      if (!specials.is_object() || !specials.contains(id)) {
        return ec.Error(absl::StrCat("special token \"", id,
                                     "\" is not in special_tokens"));
      }
      const Json& sp = specials[id];
      const JsonContext spc = sctx.Child(id);
      if (!sp.is_object() || !sp.contains("ids") || !sp["ids"].is_array()) {
        return spc.Error("must have an \"ids\" array");
      }
      for (const Json& v : sp["ids"]) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0) {
          return spc.Child("ids").Error("ids must be non-negative integers");
        }
        item.ids.push_back(v.get<int64_t>());
      }
    } else {
      return ec.Error("must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    out.push_back(std::move(item));
  }
  return out;
}

// ---- Decoders ----

class FnDecoder : public Decoder {
 public:
  explicit FnDecoder(std::function<void(std::vector<std::string>*)> fn)
      : fn_(std::move(fn)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    fn_(tokens);
  }

 private:
  std::function<void(std::vector<std::string>*)> fn_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> s)
      : steps_(std::move(s)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& s : steps_) s->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

std::string Cleanup(std::string s) {
  return absl::StrReplaceAll(s, {{" .", "."},
                                 {" ?", "?"},
                                 {" !", "!"},
                                 {" ,", ","},
                                 {" ' ", "'"},
                                 {" n't", "n't"},
                                 {" 'm", "'m"},
                                 {" 's", "'s"},
                                 {" 've", "'ve"},
                                 {" 're", "'re"}});
}

// "<0x41>" -> 0x41; -1 otherwise.
int ParseByteToken(const std::string& t) {
  if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' ||
      t[5] != '>') {
    return -1;
  }
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return -1;
  return hi * 16 + lo;
}

// Whether `s` is valid UTF-8.
bool ValidUtf8(const std::string& s) {
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t before = pos;
    const int32_t cp = NextCodePoint(s, &pos);
    if (cp == 0xFFFD &&
        !(pos - before == 3 && s.compare(before, 3, "\xEF\xBF\xBD") == 0)) {
      return false;
    }
  }
  return true;
}

// Invalid UTF-8 sequences become U+FFFD, one per bad byte.
std::string Lossy(const std::string& s) {
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t before = pos;
    const int32_t cp = NextCodePoint(s, &pos);
    if (cp == 0xFFFD && pos - before == 1) {
      out += "\xEF\xBF\xBD";
    } else {
      out.append(s, before, pos - before);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(
    const Json& obj, const JsonContext& ctx) {
  ASSIGN_OR_RETURN(std::string type, GetType(obj, ctx));
  if (type == "TemplateProcessing") {
    auto p = std::make_unique<TemplateProcessor>();
    const Json specials =
        obj.contains("special_tokens") ? obj["special_tokens"] : Json::object();
    const JsonContext sctx = ctx.Child("special_tokens");
    ASSIGN_OR_RETURN(p->single,
                     ReadTemplate(obj, ctx, "single", specials, sctx));
    ASSIGN_OR_RETURN(p->pair, ReadTemplate(obj, ctx, "pair", specials, sctx));
    return std::unique_ptr<PostProcessor>(std::move(p));
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    ASSIGN_OR_RETURN(auto sep, TokenAndId(obj, ctx, "sep"));
    ASSIGN_OR_RETURN(auto cls, TokenAndId(obj, ctx, "cls"));
    auto p = std::make_unique<TemplateProcessor>();
    auto special = [](int64_t id, int64_t type_id) {
      return TemplateItem{false, 0, {id}, type_id};
    };
    const bool bert = type == "BertProcessing";
    const int64_t b_type = bert ? 1 : 0;
    p->single = {
        special(cls.second, 0), {true, 0, {}, 0}, special(sep.second, 0)};
    p->pair = {
        special(cls.second, 0), {true, 0, {}, 0}, special(sep.second, 0)};
    if (!bert) p->pair.push_back(special(sep.second, 0));
    p->pair.push_back({true, 1, {}, b_type});
    p->pair.push_back(special(sep.second, b_type));
    if (!bert) {
      ASSIGN_OR_RETURN(p->trim_offsets,
                       GetBool(obj, ctx, "trim_offsets", true));
    }
    return std::unique_ptr<PostProcessor>(std::move(p));
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelProcessor>();
    ASSIGN_OR_RETURN(p->trim_offsets, GetBool(obj, ctx, "trim_offsets", true));
    return std::unique_ptr<PostProcessor>(std::move(p));
  }
  if (type == "Sequence") {
    const JsonContext sctx = ctx.Child("processors");
    auto it = obj.find("processors");
    if (it == obj.end() || !it->is_array()) {
      return sctx.Error("missing (an array is required)");
    }
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(auto p, MakePostProcessor((*it)[i], sctx.Index(i)));
      steps.push_back(std::move(p));
    }
    return std::unique_ptr<PostProcessor>(
        std::make_unique<SequenceProcessor>(std::move(steps)));
  }
  return ctx.Child("type").Error(
      absl::StrCat("unsupported post-processor \"", type, "\""));
}

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& obj,
                                                     const JsonContext& ctx) {
  using Tokens = std::vector<std::string>;
  ASSIGN_OR_RETURN(std::string type, GetType(obj, ctx));
  if (type == "WordPiece") {
    ASSIGN_OR_RETURN(std::string prefix, GetString(obj, ctx, "prefix", "##"));
    ASSIGN_OR_RETURN(bool cleanup, GetBool(obj, ctx, "cleanup", true));
    return std::unique_ptr<Decoder>(
        std::make_unique<FnDecoder>([prefix, cleanup](Tokens* t) {
          for (size_t i = 0; i < t->size(); ++i) {
            std::string& s = (*t)[i];
            if (i > 0) {
              if (!prefix.empty() && s.compare(0, prefix.size(), prefix) == 0) {
                s.erase(0, prefix.size());
              } else {
                s.insert(0, " ");
              }
            }
            if (cleanup) s = Cleanup(std::move(s));
          }
        }));
  }
  if (type == "ByteLevel") {
    return std::unique_ptr<Decoder>(std::make_unique<FnDecoder>([](Tokens* t) {
      std::string bytes;
      for (const std::string& s : *t) {
        size_t pos = 0;
        while (pos < s.size()) {
          const size_t before = pos;
          const int b = ByteFromUnicode(NextCodePoint(s, &pos));
          if (b >= 0) {
            bytes.push_back(static_cast<char>(b));
          } else {
            bytes.append(s, before, pos - before);
          }
        }
      }
      *t = {Lossy(bytes)};
    }));
  }
  if (type == "Metaspace") {
    ASSIGN_OR_RETURN(std::string rep,
                     GetString(obj, ctx, "replacement", "\xE2\x96\x81"));
    ASSIGN_OR_RETURN(bool add_prefix,
                     GetBool(obj, ctx, "add_prefix_space", true));
    ASSIGN_OR_RETURN(
        std::string scheme,
        GetString(obj, ctx, "prepend_scheme", add_prefix ? "always" : "never"));
    const bool strip_first = scheme != "never";
    return std::unique_ptr<Decoder>(
        std::make_unique<FnDecoder>([rep, strip_first](Tokens* t) {
          for (size_t i = 0; i < t->size(); ++i) {
            std::string s = absl::StrReplaceAll((*t)[i], {{rep, " "}});
            if (i == 0 && strip_first && !s.empty() && s[0] == ' ')
              s.erase(0, 1);
            (*t)[i] = std::move(s);
          }
        }));
  }
  if (type == "ByteFallback") {
    return std::unique_ptr<Decoder>(std::make_unique<FnDecoder>([](Tokens* t) {
      Tokens out;
      std::string run;
      auto flush = [&] {
        if (run.empty()) return;
        if (ValidUtf8(run)) {
          out.push_back(run);
        } else {
          for (size_t i = 0; i < run.size(); ++i) out.push_back("\xEF\xBF\xBD");
        }
        run.clear();
      };
      for (std::string& s : *t) {
        const int b = ParseByteToken(s);
        if (b >= 0) {
          run.push_back(static_cast<char>(b));
        } else {
          flush();
          out.push_back(std::move(s));
        }
      }
      flush();
      *t = std::move(out);
    }));
  }
  if (type == "Fuse") {
    return std::unique_ptr<Decoder>(std::make_unique<FnDecoder>([](Tokens* t) {
      std::string all;
      for (const std::string& s : *t) all += s;
      *t = {all};
    }));
  }
  if (type == "Strip") {
    ASSIGN_OR_RETURN(std::string content,
                     GetString(obj, ctx, "content", std::nullopt));
    ASSIGN_OR_RETURN(int64_t start, GetInt(obj, ctx, "start", 0));
    ASSIGN_OR_RETURN(int64_t stop, GetInt(obj, ctx, "stop", 0));
    if (content.empty() || start < 0 || stop < 0) {
      return ctx.Error("Strip needs content and non-negative start/stop");
    }
    return std::unique_ptr<Decoder>(
        std::make_unique<FnDecoder>([content, start, stop](Tokens* t) {
          for (std::string& s : *t) {
            for (int64_t i = 0; i < start; ++i) {
              if (s.compare(0, content.size(), content) != 0) break;
              s.erase(0, content.size());
            }
            for (int64_t i = 0; i < stop; ++i) {
              if (s.size() < content.size() ||
                  s.compare(s.size() - content.size(), content.size(),
                            content) != 0) {
                break;
              }
              s.erase(s.size() - content.size());
            }
          }
        }));
  }
  if (type == "Replace") {
    std::string literal;
    std::unique_ptr<Regex> re;
    RETURN_IF_ERROR(ReadPattern(obj, ctx, &literal, &re));
    if (re != nullptr) {
      return ctx.Child("pattern").Error(
          "a Replace decoder with a regex is not supported");
    }
    ASSIGN_OR_RETURN(std::string content,
                     GetString(obj, ctx, "content", std::nullopt));
    return std::unique_ptr<Decoder>(
        std::make_unique<FnDecoder>([literal, content](Tokens* t) {
          if (literal.empty()) return;
          for (std::string& s : *t) {
            s = absl::StrReplaceAll(s, {{literal, content}});
          }
        }));
  }
  if (type == "BPEDecoder") {
    ASSIGN_OR_RETURN(std::string suffix, GetString(obj, ctx, "suffix", "</w>"));
    return std::unique_ptr<Decoder>(std::make_unique<FnDecoder>([suffix](
                                                                    Tokens* t) {
      for (size_t i = 0; i < t->size(); ++i) {
        std::string& s = (*t)[i];
        if (suffix.empty()) continue;
        s = absl::StrReplaceAll(s, {{suffix, i + 1 == t->size() ? "" : " "}});
      }
    }));
  }
  if (type == "Sequence") {
    const JsonContext sctx = ctx.Child("decoders");
    auto it = obj.find("decoders");
    if (it == obj.end() || !it->is_array()) {
      return sctx.Error("missing (an array is required)");
    }
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(auto d, MakeDecoder((*it)[i], sctx.Index(i)));
      steps.push_back(std::move(d));
    }
    return std::unique_ptr<Decoder>(
        std::make_unique<SequenceDecoder>(std::move(steps)));
  }
  return ctx.Child("type").Error(
      absl::StrCat("unsupported decoder \"", type, "\""));
}

}  // namespace tok
}  // namespace lathe
