#include "worker/tasks/seqeval_metrics.h"

#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"

namespace lathe {
namespace {

struct Tag {
  char kind = 'O';
  std::string type = "_";
};

Tag ParseTag(const std::string& s) {
  Tag t;
  if (s.empty()) return t;
  t.kind = s[0];
  // The type follows the first '-' after the kind; "B" alone and "O" have
  // the placeholder type "_".
  const std::string rest = s.substr(1);
  const size_t dash = rest.find('-');
  const std::string type =
      dash == std::string::npos ? rest : rest.substr(dash + 1);
  t.type = type.empty() ? "_" : type;
  return t;
}

bool EndOfChunk(const Tag& prev, const Tag& cur) {
  const char p = prev.kind, c = cur.kind;
  if (p == 'E' || p == 'S') return true;
  if ((p == 'B' || p == 'I') && (c == 'B' || c == 'S' || c == 'O')) {
    return true;
  }
  return p != 'O' && p != '.' && prev.type != cur.type;
}

bool StartOfChunk(const Tag& prev, const Tag& cur) {
  const char p = prev.kind, c = cur.kind;
  if (c == 'B' || c == 'S') return true;
  if ((p == 'E' || p == 'S' || p == 'O') && (c == 'E' || c == 'I')) {
    return true;
  }
  return c != 'O' && c != '.' && prev.type != cur.type;
}

// Walks one flat tag sequence (sentences joined by "O"), emitting an entity
// whenever one closes. State carries across sentences exactly as over the
// joined sequence, so even malformed tags chunk as they would there.
class Chunker {
 public:
  explicit Chunker(std::vector<TagEntity>* out) : out_(out) {
    prev_.type = "";  // Nothing before the first tag has a type.
  }
  void Feed(const Tag& cur) {
    if (EndOfChunk(prev_, cur)) {
      out_->push_back(TagEntity{prev_.type, begin_, index_ - 1});
    }
    if (StartOfChunk(prev_, cur)) begin_ = index_;
    prev_ = cur;
    ++index_;
  }

 private:
  std::vector<TagEntity>* out_;
  Tag prev_;
  int64_t begin_ = 0;
  int64_t index_ = 0;
};

double Ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

void Finish(EntityCounts* c) {
  c->precision = Ratio(c->true_positives, c->predicted);
  c->recall = Ratio(c->true_positives, c->gold);
  c->f1 = c->precision + c->recall > 0
              ? 2 * c->precision * c->recall / (c->precision + c->recall)
              : 0.0;
}

}  // namespace

std::vector<TagEntity> ExtractEntities(const std::vector<std::string>& tags) {
  std::vector<TagEntity> out;
  Chunker chunker(&out);
  for (const std::string& t : tags) chunker.Feed(ParseTag(t));
  chunker.Feed(Tag{});  // A final "O" closes a trailing entity.
  return out;
}

absl::StatusOr<SeqevalMetrics> ComputeSeqevalMetrics(
    const std::vector<std::vector<std::string>>& gold,
    const std::vector<std::vector<std::string>>& predicted) {
  if (gold.size() != predicted.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("seqeval: ", gold.size(), " gold sentences but ",
                     predicted.size(), " predicted"));
  }
  SeqevalMetrics m;
  std::vector<TagEntity> gold_entities, pred_entities;
  Chunker gold_chunker(&gold_entities), pred_chunker(&pred_entities);
  int64_t tags = 0, same = 0;
  for (size_t s = 0; s < gold.size(); ++s) {
    if (gold[s].size() != predicted[s].size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("seqeval: sentence ", s, " has ", gold[s].size(),
                       " gold tags but ", predicted[s].size(), " predicted"));
    }
    for (size_t i = 0; i < gold[s].size(); ++i) {
      gold_chunker.Feed(ParseTag(gold[s][i]));
      pred_chunker.Feed(ParseTag(predicted[s][i]));
      if (gold[s][i] == predicted[s][i]) ++same;
    }
    // Each sentence is followed by an "O", which keeps entities apart.
    gold_chunker.Feed(Tag{});
    pred_chunker.Feed(Tag{});
    tags += static_cast<int64_t>(gold[s].size());
  }
  gold_chunker.Feed(Tag{});
  pred_chunker.Feed(Tag{});
  m.accuracy = Ratio(same, tags);

  using Key = std::tuple<std::string, int64_t, int64_t>;
  std::set<Key> gold_set, pred_set;
  for (const TagEntity& e : gold_entities) {
    gold_set.emplace(e.type, e.start, e.end);
  }
  for (const TagEntity& e : pred_entities) {
    pred_set.emplace(e.type, e.start, e.end);
  }
  for (const Key& k : gold_set) {
    EntityCounts& c = m.per_type[std::get<0>(k)];
    ++c.gold;
    if (pred_set.count(k)) ++c.true_positives;
  }
  for (const Key& k : pred_set) ++m.per_type[std::get<0>(k)].predicted;
  for (auto& [type, c] : m.per_type) {
    Finish(&c);
    m.overall.true_positives += c.true_positives;
    m.overall.predicted += c.predicted;
    m.overall.gold += c.gold;
  }
  Finish(&m.overall);
  m.precision = m.overall.precision;
  m.recall = m.overall.recall;
  m.f1 = m.overall.f1;
  return m;
}

}  // namespace lathe
