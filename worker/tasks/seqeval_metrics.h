// Entity-level metrics for tag sequences, computed as seqeval's default
// (non-strict, conlleval-like) mode does, plus token accuracy. No LibTorch.
//
// Chunking rules (IOB1/IOB2/IOBES tags "B-TYPE", "I-TYPE", "E-TYPE",
// "S-TYPE", "O"): a tag's first character is its kind and the text after
// the first '-' its type ("B-PER" -> B, PER; a bare "B" has type "_"). An
// entity ends before a tag when the previous tag was E or S, when a B/I is
// followed by B, S or O, or when the type changes; one starts at B or S, at
// I/E after O, E or S, and wherever the type changes. So an I- tag after O
// or after another type begins a new entity, and "B-X B-X" is two entities.
// Sentences are chained with an "O" between them, so no entity spans two
// sentences.
#ifndef LATHE_WORKER_TASKS_SEQEVAL_METRICS_H_
#define LATHE_WORKER_TASKS_SEQEVAL_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lathe {

struct TagEntity {
  std::string type;
  int64_t start = 0;  // Index of the first tag.
  int64_t end = 0;    // Index of the last tag (inclusive).
  bool operator==(const TagEntity& o) const {
    return type == o.type && start == o.start && end == o.end;
  }
};

// The entities of one tag sequence, in order of their start. An empty tag
// counts as "O".
std::vector<TagEntity> ExtractEntities(const std::vector<std::string>& tags);

struct EntityCounts {
  int64_t true_positives = 0;                // Gold entities predicted exactly.
  int64_t predicted = 0;                     // Entities in the predictions.
  int64_t gold = 0;                          // Entities in the gold tags.
  double precision = 0, recall = 0, f1 = 0;  // 0 where undefined.
};

struct SeqevalMetrics {
  // Micro averages over every entity of every type (seqeval's
  // precision_score / recall_score / f1_score defaults).
  double precision = 0;
  double recall = 0;
  double f1 = 0;
  double accuracy = 0;  // Fraction of tags equal to the gold tag.
  EntityCounts overall;
  std::map<std::string, EntityCounts> per_type;  // Types seen on either side.
};

// `gold[i]` and `predicted[i]` are the tags of sentence i. INVALID_ARGUMENT
// when the sentence counts or any sentence's lengths differ. No sentences
// (or no tags) give zeros.
absl::StatusOr<SeqevalMetrics> ComputeSeqevalMetrics(
    const std::vector<std::vector<std::string>>& gold,
    const std::vector<std::vector<std::string>>& predicted);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_SEQEVAL_METRICS_H_
