// Models of tokenizer.json: WordPiece, BPE and Unigram.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/tokenizers/components.h"

namespace lathe {
namespace tok {
namespace {

// Bounds on what a file may declare, so a hostile file cannot ask for
// unbounded memory.
constexpr int64_t kMaxVocab = 4'000'000;
// Words longer than this are not cached (real data repeats short words).
constexpr size_t kMaxCachedWordBytes = 128;
constexpr size_t kMaxCacheEntries = 200'000;

// Token strings by id, and ids by token string.
struct Vocab {
  absl::flat_hash_map<std::string, int64_t> ids;
  std::vector<std::string> tokens;  // "" for unused ids

  std::optional<int64_t> Find(std::string_view t) const {
    auto it = ids.find(absl::string_view(t.data(), t.size()));
    if (it == ids.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> Token(int64_t id) const {
    if (id < 0 || id >= static_cast<int64_t>(tokens.size()))
      return std::nullopt;
    if (tokens[static_cast<size_t>(id)].empty()) return std::nullopt;
    return tokens[static_cast<size_t>(id)];
  }
  absl::Status Add(const std::string& token, int64_t id,
                   const JsonContext& ctx) {
    if (id < 0 || id >= kMaxVocab) {
      return ctx.Error(
          absl::StrCat("id ", id, " out of range [0, ", kMaxVocab, ")"));
    }
    if (!ids.emplace(token, id).second) {
      return ctx.Error(absl::StrCat("duplicate token \"", token, "\""));
    }
    if (static_cast<size_t>(id) >= tokens.size()) {
      tokens.resize(static_cast<size_t>(id) + 1);
    }
    tokens[static_cast<size_t>(id)] = token;
    return absl::OkStatus();
  }
};

absl::Status ReadVocabObject(const Json& obj, const JsonContext& ctx,
                             Vocab* vocab) {
  const JsonContext vctx = ctx.Child("vocab");
  auto it = obj.find("vocab");
  if (it == obj.end() || !it->is_object()) {
    return vctx.Error("missing (an object of token -> id is required)");
  }
  vocab->ids.reserve(it->size());
  for (auto& [token, id] : it->items()) {
    if (!id.is_number_integer()) {
      return vctx.Child(token).Error("id must be an integer");
    }
    RETURN_IF_ERROR(vocab->Add(token, id.get<int64_t>(), vctx.Child(token)));
  }
  return absl::OkStatus();
}

// Per-word results, bounded; shared between threads.
class WordCache {
 public:
  bool Get(std::string_view word, std::vector<ModelToken>* out) const {
    if (word.size() > kMaxCachedWordBytes) return false;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(absl::string_view(word.data(), word.size()));
    if (it == map_.end()) return false;
    out->insert(out->end(), it->second.begin(), it->second.end());
    return true;
  }
  void Put(std::string_view word, const ModelToken* b, const ModelToken* e) {
    if (word.size() > kMaxCachedWordBytes) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMaxCacheEntries) return;
    map_.emplace(std::string(word), std::vector<ModelToken>(b, e));
  }

 private:
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::vector<ModelToken>> map_;
};

class WordPieceModel : public Model {
 public:
  Vocab vocab;
  int64_t unk = 0;
  std::string prefix = "##";
  size_t max_chars = 100;

  void Tokenize(std::string_view word,
                std::vector<ModelToken>* out) const override {
    size_t chars = 0;
    for (char c : word) chars += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    const size_t start_size = out->size();
    auto unk_all = [&] {
      out->resize(start_size);
      out->push_back({unk, 0, static_cast<uint32_t>(word.size())});
    };
    if (chars > max_chars) return unk_all();
    std::string buf;
    size_t start = 0;
    while (start < word.size()) {
      size_t end = word.size();
      std::optional<int64_t> found;
      while (end > start) {
        std::optional<int64_t> id;
        if (start == 0) {
          id = vocab.Find(word.substr(0, end));
        } else {
          buf.assign(prefix);
          buf.append(word.substr(start, end - start));
          id = vocab.Find(buf);
        }
        if (id) {
          found = id;
          break;
        }
        // Step back one whole character.
        --end;
        while (end > start &&
               (static_cast<uint8_t>(word[end]) & 0xC0) == 0x80) {
          --end;
        }
      }
      if (!found) return unk_all();
      out->push_back(
          {*found, static_cast<uint32_t>(start), static_cast<uint32_t>(end)});
      start = end;
    }
  }
  std::optional<int64_t> TokenToId(std::string_view t) const override {
    return vocab.Find(t);
  }
  std::optional<std::string> IdToToken(int64_t id) const override {
    return vocab.Token(id);
  }
  int64_t size() const override {
    return static_cast<int64_t>(vocab.tokens.size());
  }
  std::optional<int64_t> unk_id() const override { return unk; }
};

class BpeModel : public Model {
 public:
  Vocab vocab;
  // (left id << 32 | right id) -> (rank, merged id)
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int64_t>> merges;
  std::optional<int64_t> unk;
  std::string prefix;
  std::string suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  int64_t byte_ids[256];

  void Tokenize(std::string_view word,
                std::vector<ModelToken>* out) const override {
    if (word.empty()) return;
    if (cache_.Get(word, out)) return;
    const size_t start_size = out->size();
    TokenizeUncached(word, out);
    cache_.Put(word, out->data() + start_size, out->data() + out->size());
  }

  std::optional<int64_t> TokenToId(std::string_view t) const override {
    return vocab.Find(t);
  }
  std::optional<std::string> IdToToken(int64_t id) const override {
    return vocab.Token(id);
  }
  int64_t size() const override {
    return static_cast<int64_t>(vocab.tokens.size());
  }
  std::optional<int64_t> unk_id() const override { return unk; }

 private:
  struct Symbol {
    int64_t id;
    uint32_t begin, end;
    int32_t prev, next;
    bool alive;
  };

  void TokenizeUncached(std::string_view word,
                        std::vector<ModelToken>* out) const {
    if (ignore_merges) {
      if (auto id = vocab.Find(word)) {
        out->push_back({*id, 0, static_cast<uint32_t>(word.size())});
        return;
      }
    }
    std::vector<Symbol> syms;
    syms.reserve(word.size());
    std::string buf;
    size_t pos = 0;
    bool last_unk = false;
    while (pos < word.size()) {
      const size_t b = pos;
      NextCodePoint(word, &pos);
      std::optional<int64_t> id;
      if (prefix.empty() && suffix.empty()) {
        id = vocab.Find(word.substr(b, pos - b));
      } else {
        buf.clear();
        if (b > 0) buf += prefix;
        buf.append(word.substr(b, pos - b));
        if (pos == word.size()) buf += suffix;
        id = vocab.Find(buf);
      }
      auto add = [&](int64_t i, size_t sb, size_t se) {
        syms.push_back({i, static_cast<uint32_t>(sb), static_cast<uint32_t>(se),
                        0, 0, true});
      };
      if (id) {
        add(*id, b, pos);
        last_unk = false;
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (size_t i = b; i < pos; ++i) {
          all = all && byte_ids[static_cast<uint8_t>(word[i])] >= 0;
        }
        if (all) {
          for (size_t i = b; i < pos; ++i) {
            add(byte_ids[static_cast<uint8_t>(word[i])], b, pos);
          }
          last_unk = false;
          continue;
        }
      }
      if (!unk) continue;  // no unknown token: the character is dropped
      if (fuse_unk && last_unk) {
        syms.back().end = static_cast<uint32_t>(pos);
      } else {
        add(*unk, b, pos);
      }
      last_unk = true;
    }
    const int32_t n = static_cast<int32_t>(syms.size());
    for (int32_t i = 0; i < n; ++i) {
      syms[static_cast<size_t>(i)].prev = i - 1;
      syms[static_cast<size_t>(i)].next = i + 1 < n ? i + 1 : -1;
    }
    // (rank, left index, right index, merged id); smallest rank first, then
    // leftmost.
    using Entry = std::tuple<int32_t, int32_t, int32_t, int64_t, int64_t>;
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    auto push = [&](int32_t l) {
      if (l < 0) return;
      const int32_t r = syms[static_cast<size_t>(l)].next;
      if (r < 0) return;
      const uint64_t key =
          (static_cast<uint64_t>(syms[static_cast<size_t>(l)].id) << 32) |
          static_cast<uint64_t>(syms[static_cast<size_t>(r)].id);
      auto it = merges.find(key);
      if (it == merges.end()) return;
      heap.emplace(it->second.first, l, r, it->second.second,
                   syms[static_cast<size_t>(r)].id);
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      auto [rank, l, r, merged, right_id] = heap.top();
      heap.pop();
      Symbol& left = syms[static_cast<size_t>(l)];
      if (!left.alive || left.next != r) continue;
      Symbol& right = syms[static_cast<size_t>(r)];
      if (!right.alive || right.id != right_id) continue;
      // The left symbol may have changed since this entry was pushed.
      const uint64_t key = (static_cast<uint64_t>(left.id) << 32) |
                           static_cast<uint64_t>(right.id);
      auto it = merges.find(key);
      if (it == merges.end() || it->second.first != rank) continue;
      left.id = merged;
      left.end = right.end;
      left.next = right.next;
      right.alive = false;
      if (right.next >= 0) syms[static_cast<size_t>(right.next)].prev = l;
      push(left.prev);
      push(l);
    }
    for (const Symbol& s : syms) {
      if (s.alive) out->push_back({s.id, s.begin, s.end});
    }
  }

  mutable WordCache cache_;
};

class UnigramModel : public Model {
 public:
  Vocab vocab;
  std::vector<double> scores;
  std::optional<int64_t> unk;
  bool byte_fallback = false;
  size_t max_piece_bytes = 1;
  double unk_score = 0;
  int64_t byte_ids[256];

  void Tokenize(std::string_view word,
                std::vector<ModelToken>* out) const override {
    if (word.empty()) return;
    if (cache_.Get(word, out)) return;
    const size_t start_size = out->size();
    Viterbi(word, out);
    cache_.Put(word, out->data() + start_size, out->data() + out->size());
  }
  std::optional<int64_t> TokenToId(std::string_view t) const override {
    return vocab.Find(t);
  }
  std::optional<std::string> IdToToken(int64_t id) const override {
    return vocab.Token(id);
  }
  int64_t size() const override {
    return static_cast<int64_t>(vocab.tokens.size());
  }
  std::optional<int64_t> unk_id() const override { return unk; }

 private:
  void Viterbi(std::string_view word, std::vector<ModelToken>* out) const {
    const size_t n = word.size();
    const double kNone = -std::numeric_limits<double>::infinity();
    std::vector<double> best(n + 1, kNone);
    std::vector<size_t> from(n + 1, 0);
    std::vector<int64_t> via(n + 1, -1);  // -1: unknown
    best[0] = 0;
    size_t pos = 0;
    while (pos < n) {
      size_t char_end = pos;
      NextCodePoint(word, &char_end);
      if (best[pos] != kNone) {
        bool single = false;
        size_t end = char_end;
        while (end <= n && end - pos <= max_piece_bytes) {
          if (auto id = vocab.Find(word.substr(pos, end - pos))) {
            const double s = best[pos] + scores[static_cast<size_t>(*id)];
            if (s > best[end]) {
              best[end] = s;
              from[end] = pos;
              via[end] = *id;
            }
            single = single || end == char_end;
          }
          if (end == n) break;
          NextCodePoint(word, &end);
        }
        if (!single) {
          const double s = best[pos] + unk_score;
          if (s > best[char_end]) {
            best[char_end] = s;
            from[char_end] = pos;
            via[char_end] = -1;
          }
        }
      }
      pos = char_end;
    }
    std::vector<ModelToken> rev;
    for (size_t e = n; e > 0;) {
      const size_t b = from[e];
      rev.push_back(
          {via[e], static_cast<uint32_t>(b), static_cast<uint32_t>(e)});
      e = b;
    }
    std::reverse(rev.begin(), rev.end());
    for (size_t i = 0; i < rev.size(); ++i) {
      ModelToken t = rev[i];
      if (t.id >= 0) {
        out->push_back(t);
        continue;
      }
      // Consecutive unknowns become one.
      while (i + 1 < rev.size() && rev[i + 1].id < 0) t.end = rev[++i].end;
      if (byte_fallback) {
        bool all = true;
        for (uint32_t k = t.begin; k < t.end; ++k) {
          all = all && byte_ids[static_cast<uint8_t>(word[k])] >= 0;
        }
        if (all) {
          for (uint32_t k = t.begin; k < t.end; ++k) {
            out->push_back(
                {byte_ids[static_cast<uint8_t>(word[k])], t.begin, t.end});
          }
          continue;
        }
      }
      if (unk) out->push_back({*unk, t.begin, t.end});
    }
  }

  mutable WordCache cache_;
};

void FillByteIds(const Vocab& vocab, int64_t* byte_ids) {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_ids[b] = vocab.Find(name).value_or(-1);
  }
}

absl::StatusOr<std::unique_ptr<Model>> MakeBpe(const Json& obj,
                                               const JsonContext& ctx) {
  auto m = std::make_unique<BpeModel>();
  RETURN_IF_ERROR(ReadVocabObject(obj, ctx, &m->vocab));
  ASSIGN_OR_RETURN(m->prefix,
                   GetString(obj, ctx, "continuing_subword_prefix", ""));
  ASSIGN_OR_RETURN(m->suffix, GetString(obj, ctx, "end_of_word_suffix", ""));
  ASSIGN_OR_RETURN(m->fuse_unk, GetBool(obj, ctx, "fuse_unk", false));
  ASSIGN_OR_RETURN(m->byte_fallback, GetBool(obj, ctx, "byte_fallback", false));
  ASSIGN_OR_RETURN(m->ignore_merges, GetBool(obj, ctx, "ignore_merges", false));
  if (obj.contains("dropout") && obj["dropout"].is_number() &&
      obj["dropout"].get<double>() != 0.0) {
    return ctx.Child("dropout").Error(
        "BPE dropout is not supported (encoding must be deterministic)");
  }
  ASSIGN_OR_RETURN(std::string unk, GetString(obj, ctx, "unk_token", ""));
  if (!unk.empty()) {
    m->unk = m->vocab.Find(unk);
    if (!m->unk) {
      return ctx.Child("unk_token")
          .Error(absl::StrCat("\"", unk, "\" is not in the vocab"));
    }
  }
  FillByteIds(m->vocab, m->byte_ids);
  const JsonContext mctx = ctx.Child("merges");
  auto it = obj.find("merges");
  if (it == obj.end() || !it->is_array()) {
    return mctx.Error("missing (an array is required)");
  }
  m->merges.reserve(it->size());
  int32_t rank = 0;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& e = (*it)[i];
    const JsonContext ectx = mctx.Index(i);
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return ectx.Error(absl::StrCat(
            "merge \"", s, "\" must be two tokens split by a space"));
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() &&
               e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return ectx.Error("a merge must be \"a b\" or [\"a\", \"b\"]");
    }
    auto ia = m->vocab.Find(a);
    auto ib = m->vocab.Find(b);
    if (!ia || !ib) {
      return ectx.Error(
          absl::StrCat("merge refers to unknown token \"", ia ? b : a, "\""));
    }
    std::string merged = a;
    if (!m->prefix.empty() && b.compare(0, m->prefix.size(), m->prefix) == 0) {
      merged += b.substr(m->prefix.size());
    } else {
      merged += b;
    }
    auto im = m->vocab.Find(merged);
    if (!im) {
      return ectx.Error(
          absl::StrCat("merged token \"", merged, "\" is not in the vocab"));
    }
    const uint64_t key =
        (static_cast<uint64_t>(*ia) << 32) | static_cast<uint64_t>(*ib);
    m->merges.emplace(key, std::make_pair(rank++, *im));
  }
  return std::unique_ptr<Model>(std::move(m));
}

absl::StatusOr<std::unique_ptr<Model>> MakeWordPiece(const Json& obj,
                                                     const JsonContext& ctx) {
  auto m = std::make_unique<WordPieceModel>();
  RETURN_IF_ERROR(ReadVocabObject(obj, ctx, &m->vocab));
  ASSIGN_OR_RETURN(std::string unk, GetString(obj, ctx, "unk_token", "[UNK]"));
  auto id = m->vocab.Find(unk);
  if (!id) {
    return ctx.Child("unk_token")
        .Error(absl::StrCat("\"", unk, "\" is not in the vocab"));
  }
  m->unk = *id;
  ASSIGN_OR_RETURN(m->prefix,
                   GetString(obj, ctx, "continuing_subword_prefix", "##"));
  ASSIGN_OR_RETURN(int64_t max_chars,
                   GetInt(obj, ctx, "max_input_chars_per_word", 100));
  if (max_chars < 1 || max_chars > 1'000'000) {
    return ctx.Child("max_input_chars_per_word").Error("out of range");
  }
  m->max_chars = static_cast<size_t>(max_chars);
  return std::unique_ptr<Model>(std::move(m));
}

absl::StatusOr<std::unique_ptr<Model>> MakeUnigram(const Json& obj,
                                                   const JsonContext& ctx) {
  auto m = std::make_unique<UnigramModel>();
  const JsonContext vctx = ctx.Child("vocab");
  auto it = obj.find("vocab");
  if (it == obj.end() || !it->is_array()) {
    return vctx.Error("missing (an array of [piece, score] is required)");
  }
  if (static_cast<int64_t>(it->size()) > kMaxVocab) {
    return vctx.Error("too many entries");
  }
  double min_score = 0;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& e = (*it)[i];
    if (!e.is_array() || e.size() != 2 || !e[0].is_string() ||
        !e[1].is_number()) {
      return vctx.Index(i).Error("must be [piece, score]");
    }
    const std::string piece = e[0].get<std::string>();
    RETURN_IF_ERROR(
        m->vocab.Add(piece, static_cast<int64_t>(i), vctx.Index(i)));
    const double s = e[1].get<double>();
    m->scores.push_back(s);
    min_score = std::min(min_score, s);
    m->max_piece_bytes = std::max(m->max_piece_bytes, piece.size());
  }
  // An unknown character costs more than any known piece.
  m->unk_score = min_score - 10.0;
  ASSIGN_OR_RETURN(int64_t unk, GetInt(obj, ctx, "unk_id", -1));
  if (unk >= static_cast<int64_t>(it->size())) {
    return ctx.Child("unk_id").Error("out of range of the vocab");
  }
  if (unk >= 0) m->unk = unk;
  ASSIGN_OR_RETURN(m->byte_fallback, GetBool(obj, ctx, "byte_fallback", false));
  FillByteIds(m->vocab, m->byte_ids);
  return std::unique_ptr<Model>(std::move(m));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> MakeModel(const Json& obj,
                                                 const JsonContext& ctx) {
  if (!obj.is_object()) return ctx.Error("must be an object");
  std::string type;
  if (obj.contains("type")) {
    ASSIGN_OR_RETURN(type, GetType(obj, ctx));
  } else if (obj.contains("merges")) {
    type = "BPE";  // older files leave the type out
  } else if (obj.contains("vocab") && obj["vocab"].is_array()) {
    type = "Unigram";
  } else {
    type = "WordPiece";
  }
  if (type == "BPE") return MakeBpe(obj, ctx);
  if (type == "WordPiece") return MakeWordPiece(obj, ctx);
  if (type == "Unigram") return MakeUnigram(obj, ctx);
  return ctx.Child("type").Error(
      absl::StrCat("unsupported model \"", type, "\""));
}

}  // namespace tok
}  // namespace lathe
