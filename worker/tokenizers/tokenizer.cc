#include "worker/tokenizers/tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/json_file.h"
#include "common/status.h"
#include "worker/tokenizers/components.h"

namespace lathe {
namespace {

using tok::Encoded;
using tok::Json;
using tok::JsonContext;
using tok::ModelToken;
using tok::Piece;
using tok::Span;

// Bounds on input files, so a hostile directory cannot exhaust memory.
constexpr int64_t kMaxFileBytes = int64_t{512} << 20;
constexpr size_t kMaxAddedTokens = 1'000'000;

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

struct Match {
  size_t begin, end;
  int64_t id;
};

bool IsWordChar(int32_t cp) {
  return cp == '_' || (cp < 128 && std::isalnum(cp)) ||
         (cp >= 128 && !tok::IsWhitespaceChar(cp) &&
          !tok::IsPunctuationChar(cp));
}

// Added tokens of one kind (matched on the original text, or on the
// normalized text), found leftmost-longest.
class AddedMatcher {
 public:
  void Add(const AddedToken* t) {
    if (t->content.empty()) return;
    by_first_[static_cast<uint8_t>(t->content[0])].push_back(t);
    any_ = true;
  }
  void Finish() {
    for (auto& v : by_first_) {
      std::stable_sort(v.begin(), v.end(), [](const auto* a, const auto* b) {
        return a->content.size() > b->content.size();
      });
    }
  }
  bool empty() const { return !any_; }

  std::vector<Match> Find(std::string_view text) const {
    std::vector<Match> out;
    if (!any_) return out;
    size_t pos = 0;
    while (pos < text.size()) {
      const AddedToken* hit = nullptr;
      for (const AddedToken* t : by_first_[static_cast<uint8_t>(text[pos])]) {
        if (text.compare(pos, t->content.size(), t->content) != 0) continue;
        if (t->single_word &&
            !SingleWordOk(text, pos, pos + t->content.size())) {
          continue;
        }
        hit = t;
        break;
      }
      if (hit == nullptr) {
        ++pos;
        continue;
      }
      size_t b = pos, e = pos + hit->content.size();
      const size_t floor = out.empty() ? 0 : out.back().end;
      if (hit->lstrip) {
        while (b > floor && IsSpaceByte(text[b - 1])) --b;
      }
      if (hit->rstrip) {
        while (e < text.size() && IsSpaceByte(text[e])) ++e;
      }
      out.push_back({b, e, hit->id});
      pos = e;
    }
    return out;
  }

 private:
  static bool IsSpaceByte(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v';
  }
  static bool SingleWordOk(std::string_view text, size_t b, size_t e) {
    if (b > 0) {
      size_t s = b - 1;
      while (s > 0 && (static_cast<uint8_t>(text[s]) & 0xC0) == 0x80) --s;
      size_t p = s;
      if (IsWordChar(tok::NextCodePoint(text, &p))) return false;
    }
    if (e < text.size()) {
      size_t p = e;
      if (IsWordChar(tok::NextCodePoint(text, &p))) return false;
    }
    return true;
  }

  std::vector<const AddedToken*> by_first_[256];
  bool any_ = false;
};

// The input bytes [b, e) of `text` as a Piece aligned to themselves.
Piece OriginalPiece(std::string_view text, size_t b, size_t e) {
  Piece p;
  p.text.assign(text.substr(b, e - b));
  p.align.resize(e - b);
  size_t pos = b;
  while (pos < e) {
    const size_t start = pos;
    tok::NextCodePoint(text, &pos);
    if (pos > e) pos = e;
    for (size_t i = start; i < pos; ++i) {
      p.align[i - b] = {static_cast<int64_t>(start), static_cast<int64_t>(pos)};
    }
  }
  return p;
}

std::optional<std::string> ConfigToken(const Json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const Json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return std::nullopt;
}

absl::StatusOr<Json> ParseJsonFile(const std::string& path) {
  return ReadJsonFile(path, kMaxFileBytes, "tokenizer file");
}

class HfTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Build(
      const Json& root, const std::string& file, const Json& config,
      std::string dir, std::vector<std::string> sources);

  TokenizedText Encode(std::string_view text,
                       std::optional<std::string_view> pair,
                       bool add_special_tokens) const override {
    Encoded a = EncodeOne(text, 0, 0);
    std::optional<Encoded> b;
    if (pair) b = EncodeOne(*pair, 1, 1);
    return Finish(std::move(a), std::move(b), add_special_tokens, text, pair);
  }

  TokenizedText EncodeTruncated(std::string_view text,
                                std::optional<std::string_view> pair,
                                int64_t max_length) const override {
    Encoded a = EncodeOne(text, 0, 0);
    std::optional<Encoded> b;
    if (pair) b = EncodeOne(*pair, 1, 1);
    const int64_t specials =
        post_ ? static_cast<int64_t>(post_->AddedTokens(pair.has_value())) : 0;
    const int64_t budget = std::max<int64_t>(0, max_length - specials);
    auto total = [&] {
      return static_cast<int64_t>(a.size() + (b ? b->size() : 0));
    };
    if (!b) {
      while (total() > budget) Shrink(&a);
    } else if (total() > budget) {
      // Hugging Face's longest-first rule: the shorter sequence keeps its
      // length when the longer can absorb the cut; otherwise both get half
      // the budget and the originally longer one the odd token.
      const bool a_longer = a.size() > b->size();
      const int64_t shorter =
          static_cast<int64_t>(a_longer ? b->size() : a.size());
      int64_t keep_short = shorter;
      int64_t keep_long =
          shorter > budget ? shorter : std::max(shorter, budget - shorter);
      if (keep_short + keep_long > budget) {
        keep_short = budget / 2;
        keep_long = keep_short + budget % 2;
      }
      const int64_t keep_a = a_longer ? keep_long : keep_short;
      const int64_t keep_b = a_longer ? keep_short : keep_long;
      while (static_cast<int64_t>(a.size()) > keep_a) Shrink(&a);
      while (static_cast<int64_t>(b->size()) > keep_b) Shrink(&*b);
    }
    return Finish(std::move(a), std::move(b), true, text, pair);
  }

  std::string Decode(const std::vector<int64_t>& ids,
                     bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids) {
      auto it = added_by_id_.find(id);
      if (it != added_by_id_.end()) {
        if (skip_special_tokens && it->second->special) continue;
        tokens.push_back(it->second->content);
        continue;
      }
      if (auto t = model_->IdToToken(id)) tokens.push_back(std::move(*t));
    }
    if (decoder_ == nullptr) return absl::StrJoin(tokens, " ");
    decoder_->DecodeChain(&tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int64_t> TokenToId(std::string_view token) const override {
    auto it =
        added_by_content_.find(absl::string_view(token.data(), token.size()));
    if (it != added_by_content_.end()) return it->second->id;
    return model_->TokenToId(token);
  }
  std::optional<std::string> IdToToken(int64_t id) const override {
    auto it = added_by_id_.find(id);
    if (it != added_by_id_.end()) return it->second->content;
    return model_->IdToToken(id);
  }
  std::optional<int64_t> pad_id() const override { return pad_; }
  std::optional<int64_t> bos_id() const override { return bos_; }
  std::optional<int64_t> eos_id() const override { return eos_; }
  std::optional<int64_t> unk_id() const override { return unk_; }
  std::optional<int64_t> cls_id() const override { return cls_; }
  std::optional<int64_t> sep_id() const override { return sep_; }
  std::optional<int64_t> mask_id() const override { return mask_; }
  std::optional<std::string> chat_template() const override {
    return chat_template_;
  }
  const std::vector<std::string>& source_files() const override {
    return sources_;
  }
  absl::Status CopyFilesTo(const std::string& dir) const override {
    for (const std::string& f : sources_) {
      ASSIGN_OR_RETURN(std::string data, ReadFile(dir_ + "/" + f));
      RETURN_IF_ERROR(WriteFileAtomic(dir + "/" + f, data));
    }
    return absl::OkStatus();
  }

 private:
  static void Shrink(Encoded* e) {
    e->ids.pop_back();
    e->type_ids.pop_back();
    e->offsets.pop_back();
    e->sequence_ids.pop_back();
    e->special_mask.pop_back();
  }

  TokenizedText Finish(Encoded a, std::optional<Encoded> b, bool add_special,
                       std::string_view text,
                       std::optional<std::string_view> pair) const {
    Encoded e;
    if (post_ != nullptr) {
      std::vector<std::string_view> texts = {text};
      if (pair) texts.push_back(*pair);
      e = post_->Process(std::move(a), std::move(b), add_special, texts);
    } else {
      e = std::move(a);
      if (b) e.Append(*b);
    }
    TokenizedText out;
    out.ids = std::move(e.ids);
    out.type_ids = std::move(e.type_ids);
    out.offsets = std::move(e.offsets);
    out.sequence_ids = std::move(e.sequence_ids);
    out.special_mask = std::move(e.special_mask);
    return out;
  }

  void AddAdded(const Match& m, Span offsets, int64_t type_id, int64_t seq,
                Encoded* out) const {
    auto it = added_by_id_.find(m.id);
    const bool special = it != added_by_id_.end() && it->second->special;
    out->Add(m.id, type_id, offsets, seq, special);
  }

  // Normalizes, pre-tokenizes and tokenizes the text between added tokens.
  void EncodeText(std::string_view text, size_t b, size_t e, int64_t type_id,
                  int64_t seq, Encoded* out) const {
    Piece p = OriginalPiece(text, b, e);
    if (normalizer_ != nullptr) p = normalizer_->Normalize(std::move(p));
    std::vector<Match> matches = normalized_added_.Find(p.text);
    size_t last = 0;
    bool first = b == 0;
    auto run = [&](size_t nb, size_t ne) {
      if (ne <= nb) return;
      std::vector<Piece> pieces;
      pieces.push_back(p.Sub(nb, ne));
      if (pre_ != nullptr) pre_->PreTokenize(&pieces, first && nb == 0);
      std::vector<ModelToken> toks;
      for (const Piece& piece : pieces) {
        toks.clear();
        model_->Tokenize(piece.text, &toks);
        for (const ModelToken& t : toks) {
          out->Add(t.id, type_id, piece.OriginalSpan(t.begin, t.end), seq,
                   false);
        }
      }
    };
    for (const Match& m : matches) {
      run(last, m.begin);
      AddAdded(m, p.OriginalSpan(m.begin, m.end), type_id, seq, out);
      last = m.end;
    }
    run(last, p.text.size());
  }

  Encoded EncodeOne(std::string_view text, int64_t type_id, int64_t seq) const {
    Encoded out;
    size_t last = 0;
    for (const Match& m : raw_added_.Find(text)) {
      EncodeText(text, last, m.begin, type_id, seq, &out);
      AddAdded(m, {static_cast<int64_t>(m.begin), static_cast<int64_t>(m.end)},
               type_id, seq, &out);
      last = m.end;
    }
    EncodeText(text, last, text.size(), type_id, seq, &out);
    return out;
  }

  std::unique_ptr<tok::Normalizer> normalizer_;
  std::unique_ptr<tok::PreTokenizer> pre_;
  std::unique_ptr<tok::Model> model_;
  std::unique_ptr<tok::PostProcessor> post_;
  std::unique_ptr<tok::Decoder> decoder_;
  std::vector<std::unique_ptr<AddedToken>> added_;
  absl::flat_hash_map<int64_t, const AddedToken*> added_by_id_;
  absl::flat_hash_map<std::string, const AddedToken*> added_by_content_;
  AddedMatcher raw_added_;
  AddedMatcher normalized_added_;
  int64_t vocab_size_ = 0;
  std::optional<int64_t> pad_, bos_, eos_, unk_, cls_, sep_, mask_;
  std::optional<std::string> chat_template_;
  std::string dir_;
  std::vector<std::string> sources_;
};

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Build(
    const Json& root, const std::string& file, const Json& config,
    std::string dir, std::vector<std::string> sources) {
  const JsonContext ctx{file, ""};
  if (!root.is_object()) return ctx.Error("must be a JSON object");
  auto t = std::unique_ptr<HfTokenizer>(new HfTokenizer());
  t->dir_ = std::move(dir);
  t->sources_ = std::move(sources);
  auto component = [&](const char* key) -> const Json* {
    auto it = root.find(key);
    if (it == root.end() || it->is_null()) return nullptr;
    return &*it;
  };
  if (const Json* j = component("normalizer")) {
    ASSIGN_OR_RETURN(t->normalizer_,
                     tok::MakeNormalizer(*j, ctx.Child("normalizer")));
  }
  if (const Json* j = component("pre_tokenizer")) {
    ASSIGN_OR_RETURN(t->pre_,
                     tok::MakePreTokenizer(*j, ctx.Child("pre_tokenizer")));
  }
  const Json* model = component("model");
  if (model == nullptr) return ctx.Child("model").Error("missing");
  ASSIGN_OR_RETURN(t->model_, tok::MakeModel(*model, ctx.Child("model")));
  if (const Json* j = component("post_processor")) {
    ASSIGN_OR_RETURN(t->post_,
                     tok::MakePostProcessor(*j, ctx.Child("post_processor")));
  }
  if (const Json* j = component("decoder")) {
    ASSIGN_OR_RETURN(t->decoder_, tok::MakeDecoder(*j, ctx.Child("decoder")));
  }
  t->vocab_size_ = t->model_->size();
  if (const Json* j = component("added_tokens")) {
    const JsonContext actx = ctx.Child("added_tokens");
    if (!j->is_array()) return actx.Error("must be an array");
    if (j->size() > kMaxAddedTokens) return actx.Error("too many tokens");
    for (size_t i = 0; i < j->size(); ++i) {
      const Json& a = (*j)[i];
      const JsonContext c = actx.Index(i);
      auto tokp = std::make_unique<AddedToken>();
      ASSIGN_OR_RETURN(tokp->id, tok::GetInt(a, c, "id", std::nullopt));
      if (tokp->id < 0 || tokp->id >= 4'000'000) {
        return c.Child("id").Error("out of range");
      }
      ASSIGN_OR_RETURN(tokp->content,
                       tok::GetString(a, c, "content", std::nullopt));
      if (tokp->content.empty()) return c.Child("content").Error("empty");
      ASSIGN_OR_RETURN(tokp->single_word,
                       tok::GetBool(a, c, "single_word", false));
      ASSIGN_OR_RETURN(tokp->lstrip, tok::GetBool(a, c, "lstrip", false));
      ASSIGN_OR_RETURN(tokp->rstrip, tok::GetBool(a, c, "rstrip", false));
      ASSIGN_OR_RETURN(tokp->special, tok::GetBool(a, c, "special", false));
      ASSIGN_OR_RETURN(tokp->normalized,
                       tok::GetBool(a, c, "normalized", !tokp->special));
      if (auto existing = t->model_->IdToToken(tokp->id);
          existing && *existing != tokp->content) {
        return c.Error(absl::StrCat("id ", tokp->id, " is \"", *existing,
                                    "\" in the model, not \"", tokp->content,
                                    "\""));
      }
      t->vocab_size_ = std::max(t->vocab_size_, tokp->id + 1);
      t->added_by_id_[tokp->id] = tokp.get();
      t->added_by_content_[tokp->content] = tokp.get();
      t->added_.push_back(std::move(tokp));
    }
    for (const auto& a : t->added_) {
      // A normalized token is matched after normalization; special tokens
      // are never normalized.
      (a->normalized && !a->special && t->normalizer_ ? t->normalized_added_
                                                      : t->raw_added_)
          .Add(a.get());
    }
    t->raw_added_.Finish();
    t->normalized_added_.Finish();
  }

  // Special tokens: tokenizer_config.json first, then well-known names.
  auto lookup =
      [&](const char* key,
          std::initializer_list<const char*> names) -> std::optional<int64_t> {
    if (config.is_object() && config.contains(key)) {
      auto s = ConfigToken(config, key);
      return s ? t->TokenToId(*s) : std::nullopt;
    }
    for (const char* n : names) {
      if (auto id = t->TokenToId(n)) return id;
    }
    return std::nullopt;
  };
  t->pad_ = lookup("pad_token", {"[PAD]", "<pad>"});
  t->bos_ = lookup("bos_token", {"<s>"});
  t->eos_ = lookup("eos_token", {"</s>"});
  t->unk_ = lookup("unk_token", {"[UNK]", "<unk>"});
  if (!t->unk_) t->unk_ = t->model_->unk_id();
  t->cls_ = lookup("cls_token", {"[CLS]"});
  t->sep_ = lookup("sep_token", {"[SEP]"});
  t->mask_ = lookup("mask_token", {"[MASK]"});
  if (config.is_object() && config.contains("chat_template")) {
    const Json& ct = config["chat_template"];
    if (ct.is_string()) {
      t->chat_template_ = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const Json& e : ct) {
        if (e.is_object() && e.value("name", "") == "default" &&
            e.contains("template") && e["template"].is_string()) {
          t->chat_template_ = e["template"].get<std::string>();
        }
      }
    }
  }
  return t;
}

bool Exists(const std::string& path) { return PathExists(path); }

absl::StatusOr<Json> ReadConfig(const std::string& dir,
                                std::vector<std::string>* sources) {
  const std::string path = dir + "/tokenizer_config.json";
  if (!Exists(path)) return Json::object();
  sources->push_back("tokenizer_config.json");
  ASSIGN_OR_RETURN(Json config, ParseJsonFile(path));
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": must be a JSON object"));
  }
  return config;
}

// vocab.txt as the tokenizer.json BERT (uncased by default) would have.
absl::StatusOr<Json> BertJsonFromVocab(const std::string& path,
                                       const Json& config) {
  ASSIGN_OR_RETURN(int64_t size, FileSize(path));
  if (size > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": too large"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  Json vocab = Json::object();
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string& t = lines[i];
    if (!t.empty() && t.back() == '\r') t.pop_back();
    if (t.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": line ", i + 1, ": empty token"));
    }
    if (vocab.contains(t)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": line ", i + 1, ": duplicate token \"", t, "\""));
    }
    vocab[t] = static_cast<int64_t>(i);
  }
  for (const char* need : {"[UNK]", "[CLS]", "[SEP]"}) {
    if (!vocab.contains(need)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": the vocab has no ", need, " token"));
    }
  }
  bool lower = true;
  if (config.contains("do_lower_case") &&
      config["do_lower_case"].is_boolean()) {
    lower = config["do_lower_case"].get<bool>();
  }
  Json added = Json::array();
  for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    if (!vocab.contains(s)) continue;
    added.push_back({{"id", vocab[s]},
                     {"content", s},
                     {"special", true},
                     {"normalized", false}});
  }
  auto special = [&](const char* s, int type_id) {
    return Json{{"SpecialToken", {{"id", s}, {"type_id", type_id}}}};
  };
  auto seq = [](const char* s, int type_id) {
    return Json{{"Sequence", {{"id", s}, {"type_id", type_id}}}};
  };
  Json root = {
      {"added_tokens", added},
      {"normalizer",
       {{"type", "BertNormalizer"},
        {"clean_text", true},
        {"handle_chinese_chars", true},
        {"strip_accents", nullptr},
        {"lowercase", lower}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"model",
       {{"type", "WordPiece"},
        {"unk_token", "[UNK]"},
        {"continuing_subword_prefix", "##"},
        {"max_input_chars_per_word", 100},
        {"vocab", vocab}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)}},
        {"pair",
         {special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1),
          special("[SEP]", 1)}},
        {"special_tokens",
         {{"[CLS]",
           {{"id", "[CLS]"}, {"ids", {vocab["[CLS]"]}}, {"tokens", {"[CLS]"}}}},
          {"[SEP]",
           {{"id", "[SEP]"},
            {"ids", {vocab["[SEP]"]}},
            {"tokens", {"[SEP]"}}}}}}}},
      {"decoder",
       {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}}};
  return root;
}

// vocab.json + merges.txt as GPT-2's tokenizer.json would have them.
absl::StatusOr<Json> Gpt2JsonFromFiles(const std::string& vocab_path,
                                       const std::string& merges_path,
                                       const Json& config) {
  ASSIGN_OR_RETURN(Json vocab, ParseJsonFile(vocab_path));
  if (!vocab.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_path, ": must be an object of token -> id"));
  }
  ASSIGN_OR_RETURN(int64_t size, FileSize(merges_path));
  if (size > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(merges_path, ": too large"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(merges_path));
  Json merges = Json::array();
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(std::string(line));
  }
  bool prefix = false;
  if (config.contains("add_prefix_space") &&
      config["add_prefix_space"].is_boolean()) {
    prefix = config["add_prefix_space"].get<bool>();
  }
  Json added = Json::array();
  std::vector<std::string> names = {"<|endoftext|>"};
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    if (auto s = ConfigToken(config, key)) names.push_back(*s);
  }
  for (const std::string& n : names) {
    bool dup = false;
    for (const Json& a : added) dup = dup || a["content"] == n;
    if (dup || !vocab.contains(n) || !vocab[n].is_number_integer()) continue;
    added.push_back({{"id", vocab[n]},
                     {"content", n},
                     {"special", true},
                     {"normalized", false}});
  }
  Json level = {{"type", "ByteLevel"},
                {"add_prefix_space", prefix},
                {"trim_offsets", true},
                {"use_regex", true}};
  return Json{
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", level},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
      {"post_processor", level},
      {"decoder", level}};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(
    const std::string& dir) {
  std::vector<std::string> sources;
  const std::string json_path = dir + "/tokenizer.json";
  if (Exists(json_path)) {
    sources.push_back("tokenizer.json");
    ASSIGN_OR_RETURN(Json config, ReadConfig(dir, &sources));
    ASSIGN_OR_RETURN(Json root, ParseJsonFile(json_path));
    ASSIGN_OR_RETURN(auto t, HfTokenizer::Build(root, json_path, config, dir,
                                                std::move(sources)));
    return std::unique_ptr<Tokenizer>(std::move(t));
  }
  const std::string vocab_txt = dir + "/vocab.txt";
  if (Exists(vocab_txt)) {
    sources.push_back("vocab.txt");
    ASSIGN_OR_RETURN(Json config, ReadConfig(dir, &sources));
    ASSIGN_OR_RETURN(Json root, BertJsonFromVocab(vocab_txt, config));
    ASSIGN_OR_RETURN(auto t, HfTokenizer::Build(root, vocab_txt, config, dir,
                                                std::move(sources)));
    return std::unique_ptr<Tokenizer>(std::move(t));
  }
  const std::string vocab_json = dir + "/vocab.json";
  const std::string merges = dir + "/merges.txt";
  if (Exists(vocab_json) && Exists(merges)) {
    sources = {"vocab.json", "merges.txt"};
    ASSIGN_OR_RETURN(Json config, ReadConfig(dir, &sources));
    ASSIGN_OR_RETURN(Json root, Gpt2JsonFromFiles(vocab_json, merges, config));
    ASSIGN_OR_RETURN(
        auto t, HfTokenizer::Build(root, vocab_json + " + merges.txt", config,
                                   dir, std::move(sources)));
    return std::unique_ptr<Tokenizer>(std::move(t));
  }
  return absl::NotFoundError(absl::StrCat(
      dir, ": no tokenizer.json, vocab.txt, or vocab.json + merges.txt"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromTokenizerJson(
    const std::string& path) {
  if (!Exists(path))
    return absl::NotFoundError(absl::StrCat(path, ": missing"));
  ASSIGN_OR_RETURN(Json root, ParseJsonFile(path));
  std::string dir = ".";
  std::string name = path;
  const size_t slash = path.rfind('/');
  if (slash != std::string::npos) {
    dir = path.substr(0, slash);
    name = path.substr(slash + 1);
  }
  ASSIGN_OR_RETURN(auto t,
                   HfTokenizer::Build(root, path, Json::object(), dir, {name}));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

std::vector<std::pair<int64_t, int64_t>> ByteToCharOffsets(
    std::string_view text,
    const std::vector<std::pair<int64_t, int64_t>>& byte_offsets) {
  // chars[i]: code points that start before byte i.
  std::vector<int64_t> chars(text.size() + 1, 0);
  int64_t n = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    chars[i] = n;
    if ((static_cast<uint8_t>(text[i]) & 0xC0) != 0x80) ++n;
  }
  chars[text.size()] = n;
  auto conv = [&](int64_t b) -> int64_t {
    if (b <= 0) return 0;
    if (b >= static_cast<int64_t>(text.size())) return n;
    // Inside a code point: round down to its start.
    int64_t c = chars[static_cast<size_t>(b)];
    if ((static_cast<uint8_t>(text[static_cast<size_t>(b)]) & 0xC0) == 0x80) {
      return c - 1;
    }
    return c;
  };
  std::vector<std::pair<int64_t, int64_t>> out;
  out.reserve(byte_offsets.size());
  for (const auto& [b, e] : byte_offsets) out.emplace_back(conv(b), conv(e));
  return out;
}

}  // namespace lathe
