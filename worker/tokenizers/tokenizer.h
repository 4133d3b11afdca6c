// Hugging Face tokenizers in C++: tokenizer.json (normalizer, pre-tokenizer,
// model, post-processor, decoder, added tokens, truncation and padding), and
// the older vocab.txt (BERT WordPiece) and vocab.json + merges.txt (GPT-2
// byte-level BPE) layouts. No LibTorch: the CLI links it too.
#ifndef LATHE_WORKER_TOKENIZERS_TOKENIZER_H_
#define LATHE_WORKER_TOKENIZERS_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lathe {

// One encoded input (a text, or a text and its pair), special tokens
// included when asked for. All vectors have the same length.
struct TokenizedText {
  std::vector<int64_t> ids;
  std::vector<int64_t> type_ids;  // 0 for the first sequence, 1 for the pair
  // [begin, end) in bytes of the UTF-8 input the token came from (the pair's
  // tokens index into the pair); special tokens added by the post-processor
  // have (0, 0).
  std::vector<std::pair<int64_t, int64_t>> offsets;
  std::vector<int64_t> sequence_ids;  // 0, 1, or -1 for added specials
  std::vector<uint8_t> special_mask;  // 1 for special tokens
};

// Immutable after loading; Encode and Decode are safe from several threads.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads the tokenizer in `dir`: tokenizer.json when present; otherwise
  // vocab.txt (WordPiece; tokenizer_config.json's do_lower_case, default
  // true); otherwise vocab.json + merges.txt (byte-level BPE as GPT-2).
  // NOT_FOUND when none exist; INVALID_ARGUMENT naming the file (and the
  // JSON path, such as "model.merges[12]") when a file is malformed or uses
  // a component Lathe does not implement.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(
      const std::string& dir);
  // A tokenizer.json alone.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJson(
      const std::string& path);

  // Normalizes, pre-tokenizes and tokenizes `text` (and `pair`); with
  // `add_special_tokens`, the post-processor adds its special tokens (as
  // Hugging Face's encode(add_special_tokens=True) does). Ignores the
  // tokenizer.json truncation and padding settings.
  virtual TokenizedText Encode(std::string_view text,
                               std::optional<std::string_view> pair,
                               bool add_special_tokens) const = 0;

  // Encode with special tokens, then truncation to at most `max_length`
  // ids in total: the longer sequence loses tokens from its end first, and
  // the special tokens are kept. max_length must leave room for them.
  virtual TokenizedText EncodeTruncated(std::string_view text,
                                        std::optional<std::string_view> pair,
                                        int64_t max_length) const = 0;

  // Ids back to text through the decoder (WordPiece "##" joining, byte-level
  // bytes, metaspace, byte fallback), optionally without special tokens.
  virtual std::string Decode(const std::vector<int64_t>& ids,
                             bool skip_special_tokens) const = 0;

  // Vocabulary size including added tokens (one more than the largest id).
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int64_t> TokenToId(std::string_view token) const = 0;
  virtual std::optional<std::string> IdToToken(int64_t id) const = 0;

  // Special tokens from the files (tokenizer_config.json, the
  // post-processor, added tokens); nullopt when the tokenizer has none.
  virtual std::optional<int64_t> pad_id() const = 0;
  virtual std::optional<int64_t> bos_id() const = 0;
  virtual std::optional<int64_t> eos_id() const = 0;
  virtual std::optional<int64_t> unk_id() const = 0;
  // For BERT-style tokenizers: [CLS], [SEP], [MASK] (nullopt otherwise).
  virtual std::optional<int64_t> cls_id() const = 0;
  virtual std::optional<int64_t> sep_id() const = 0;
  virtual std::optional<int64_t> mask_id() const = 0;
  // The tokenizer_config.json "chat_template" string, if any.
  virtual std::optional<std::string> chat_template() const = 0;

  // The files this tokenizer was read from (names relative to its
  // directory, such as "tokenizer.json" and "tokenizer_config.json"), so a
  // checkpoint can carry them unchanged; see CopyFilesTo.
  virtual const std::vector<std::string>& source_files() const = 0;
  // Copies source_files() from the directory it was loaded from into `dir`
  // (which must exist), so FromDirectory(dir) loads the same tokenizer.
  virtual absl::Status CopyFilesTo(const std::string& dir) const = 0;
};

// Byte offsets into `text` to Unicode code point offsets (as Hugging Face's
// Python API reports them). Offsets inside a code point round down.
std::vector<std::pair<int64_t, int64_t>> ByteToCharOffsets(
    std::string_view text,
    const std::vector<std::pair<int64_t, int64_t>>& byte_offsets);

}  // namespace lathe

#endif  // LATHE_WORKER_TOKENIZERS_TOKENIZER_H_
