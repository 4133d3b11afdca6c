// BERT (uncased) WordPiece tokenizer, equivalent to Hugging Face's
// BertTokenizer with do_lower_case=true: basic tokenization (clean control
// characters, split on whitespace and punctuation, lowercase, strip accents,
// isolate CJK ideographs), then greedy longest-match-first WordPiece with
// "##" continuation pieces. No LibTorch.
#ifndef LATHE_WORKER_TOKENIZERS_WORDPIECE_H_
#define LATHE_WORKER_TOKENIZERS_WORDPIECE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace lathe {

// Model inputs for one example.
struct Encoding {
  std::vector<int64_t> input_ids;       // [CLS] a [SEP] (b [SEP])
  std::vector<int64_t> token_type_ids;  // 0 for a's part, 1 for b's part
};

// Immutable after construction; safe to use from several threads.
class WordPieceTokenizer {
 public:
  // Reads vocab.txt (one token per line, id = 0-based line number; a trailing
  // "\r" is ignored). The vocab must contain [UNK], [CLS], [SEP] and [PAD];
  // otherwise INVALID_ARGUMENT.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> FromVocabFile(
      const std::string& path);
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> FromVocab(
      std::vector<std::string> tokens);

  // Basic tokenization only: normalized words and punctuation marks.
  std::vector<std::string> BasicTokenize(std::string_view text) const;
  // Full tokenization to vocabulary pieces.
  std::vector<std::string> Tokenize(std::string_view text) const;
  std::vector<int64_t> TokenizeToIds(std::string_view text) const;

  // Encodes a text (and optional pair) with special tokens, truncating the
  // longer sequence first, one token at a time, so the result has at most
  // `max_length` ids (max_length >= 3 with a pair, >= 2 without).
  Encoding Encode(std::string_view text,
                  std::optional<std::string_view> text_pair,
                  int64_t max_length) const;
  // Truncates and assembles already tokenized ids (see Encode).
  Encoding Assemble(std::vector<int64_t> a,
                    std::optional<std::vector<int64_t>> b,
                    int64_t max_length) const;

  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }
  const std::vector<std::string>& vocab() const { return vocab_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t unk_id() const { return unk_id_; }
  int64_t cls_id() const { return cls_id_; }
  int64_t sep_id() const { return sep_id_; }
  // -1 when absent.
  int64_t TokenToId(const std::string& token) const;

 private:
  WordPieceTokenizer() = default;
  void WordPiece(const std::string& word, std::vector<std::string>* out) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  int64_t pad_id_ = 0;
  int64_t unk_id_ = 0;
  int64_t cls_id_ = 0;
  int64_t sep_id_ = 0;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TOKENIZERS_WORDPIECE_H_
