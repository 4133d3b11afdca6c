// Extractive question-answering data: SQuAD v1.1 / v2.0 JSON files and JSONL
// rows of question, context and answers. No LibTorch.
#ifndef LATHE_WORKER_TASKS_SQUAD_DATA_H_
#define LATHE_WORKER_TASKS_SQUAD_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizers/tokenizer.h"

namespace lathe {

struct QaAnswer {
  std::string text;
  int64_t start = 0;       // Code points into the context.
  int64_t byte_start = 0;  // The same position in bytes of the UTF-8 context.
  int64_t byte_end = 0;    // byte_start + text.size().
};

struct QaExample {
  std::string id;  // The question's "id", else "LINE" or "LINE:INDEX".
  std::string question;
  std::string context;
  // Empty for an unanswerable (v2) question or for prediction input.
  std::vector<QaAnswer> answers;
  bool is_impossible = false;
  int64_t line = 0;  // 1-based line of the row (JSONL) or of the file (JSON).
};

struct QaColumns {
  std::string question = "question";
  std::string context = "context";
  std::string answers = "answers";
};

// Reads `path` as SQuAD JSON ({"data": [{"paragraphs": [{"context": ...,
// "qas": [{"id", "question", "answers": [{"text", "answer_start"}],
// "is_impossible"}]}]}]}, v1.1 or v2.0) when the whole file is one object
// with "data", else as JSONL, one row per line: {"question", "context",
// "answers": {"text": [...], "answer_start": [...]}} or "answers" as a list
// of {"text", "answer_start"}; an optional "id"; an empty answer list (or
// "is_impossible": true) marks an unanswerable question. answer_start counts
// code points; the context must hold the answer text there. With
// `require_answers`, a row without an "answers" field is an error (an empty
// list is not). Errors are INVALID_ARGUMENT starting with "NAME:LINE: " and
// name the question id; files over kMaxSpanDataBytes
// (token_classification_data.h) and files without questions are refused.
absl::StatusOr<std::vector<QaExample>> ReadQaExamples(
    const std::string& path, const std::string& display_name,
    const QaColumns& columns, bool require_answers);

// One model input built from an example: the question and a window of the
// context, laid out as the tokenizer lays out a pair (for BERT: [CLS]
// question [SEP] context-window [SEP]).
struct QaFeature {
  int64_t example = 0;  // Index of the example in the list given.
  // Offsets of context tokens are bytes into the example's context; the
  // question's into the question; specials (0, 0).
  TokenizedText encoding;
  int64_t context_begin = 0;  // Token range [begin, end) of the context.
  int64_t context_end = 0;
  // Token positions of the first answer (inclusive), or 0 and 0 (the first
  // token, [CLS] for BERT) when the window does not hold the whole answer
  // or the question has none.
  int64_t start_position = 0;
  int64_t end_position = 0;
};

struct QaWindowing {
  std::vector<QaFeature> features;
  // The overlap used: doc_stride, or half the context room when doc_stride
  // leaves no room to advance.
  int64_t stride = 0;
  // Questions cut to leave the context half of max_length.
  int64_t truncated_questions = 0;
};

// Features of `examples`: the pair (question, context) encoded with special
// tokens; a context longer than max_length allows is cut into windows that
// overlap by `doc_stride` tokens (the question is never split; a question
// longer than half of max_length loses its last tokens). INVALID_ARGUMENT
// when max_length cannot hold the special tokens and one context token.
absl::StatusOr<QaWindowing> BuildQaFeatures(
    const Tokenizer& tokenizer, const std::vector<QaExample>& examples,
    int64_t max_length, int64_t doc_stride);

struct QaPostProcessing {
  int64_t n_best = 20;             // Start and end candidates per window.
  int64_t max_answer_length = 30;  // Tokens.
  bool allow_no_answer = false;    // SQuAD v2.0
  double null_score_diff_threshold = 0;
};

struct QaPrediction {
  std::string text;   // Empty: no answer.
  int64_t start = 0;  // Code points into the context, end exclusive.
  int64_t end = 0;
  // Probability of the chosen span in its window (softmax of the start
  // logits times softmax of the end logits); for no answer, that of the
  // first token as both start and end.
  double score = 0;
  // Null score (best window's start+end logit at position 0) minus the best
  // span's start+end logits; larger means "no answer" is likelier.
  double score_diff = 0;
};

// Chooses the answer of `example` from its windows: features[i] with
// start_logits[i] and end_logits[i] (one per token of the window). The best
// span over every window, among the n_best start and end positions, inside
// the context, end >= start and at most max_answer_length tokens, by the
// sum of its logits; with allow_no_answer, "no answer" when the null score
// (the lowest over the windows) exceeds that sum by more than the
// threshold. No valid span gives an empty answer.
QaPrediction PostProcessQa(const QaExample& example,
                           const std::vector<const QaFeature*>& features,
                           const std::vector<std::vector<float>>& start_logits,
                           const std::vector<std::vector<float>>& end_logits,
                           const QaPostProcessing& options);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_SQUAD_DATA_H_
