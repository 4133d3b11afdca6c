// Internal building blocks of Tokenizer (tokenizer.h): the text with its
// alignment to the original input, and the pipeline stages of a
// tokenizer.json (normalizers, pre-tokenizers, models, post-processors,
// decoders), each built from its JSON object. Not a public API.
#ifndef LATHE_WORKER_TOKENIZERS_COMPONENTS_H_
#define LATHE_WORKER_TOKENIZERS_COMPONENTS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lathe {
namespace tok {

using Json = nlohmann::json;
using Span = std::pair<int64_t, int64_t>;

// ---- UTF-8 and character classes ----

// Decodes the code point at s[*pos] and advances *pos past it. An invalid or
// truncated sequence yields U+FFFD and advances one byte.
int32_t NextCodePoint(std::string_view s, size_t* pos);
void AppendUtf8(int32_t cp, std::string* out);
bool IsWhitespaceChar(int32_t cp);   // Unicode White_Space (as \s)
bool IsBertWhitespace(int32_t cp);   // space, \t, \n, \r, Zs
bool IsBertControl(int32_t cp);      // Cc/Cf except \t \n \r
bool IsPunctuationChar(int32_t cp);  // ASCII symbols and Unicode P*
bool IsCjkChar(int32_t cp);
bool IsDigitChar(int32_t cp);  // Unicode N* (Nd, Nl, No)

// ---- Errors ----

// INVALID_ARGUMENT "FILE: PATH: what".
absl::Status JsonError(const std::string& file, const std::string& path,
                       std::string_view what);

// Where a component is being read: the file and the JSON path so far.
struct JsonContext {
  std::string file;
  std::string path;
  JsonContext Child(std::string_view key) const;
  JsonContext Index(size_t i) const;
  absl::Status Error(std::string_view what) const;
};

// Typed field access with clear errors; absent or null optional fields give
// the default.
absl::StatusOr<std::string> GetString(const Json& obj, const JsonContext& ctx,
                                      const char* key,
                                      std::optional<std::string> def);
absl::StatusOr<bool> GetBool(const Json& obj, const JsonContext& ctx,
                             const char* key, std::optional<bool> def);
absl::StatusOr<int64_t> GetInt(const Json& obj, const JsonContext& ctx,
                               const char* key, std::optional<int64_t> def);
absl::StatusOr<std::string> GetType(const Json& obj, const JsonContext& ctx);

// ---- Text with alignment ----

// A piece of text and, for each of its bytes, the [begin, end) byte range
// of the original input it came from. Every byte of one character carries
// the range of the whole original character(s) it was made from, so any
// token boundary maps back to original boundaries.
struct Piece {
  std::string text;
  std::vector<Span> align;

  Piece Sub(size_t begin, size_t end) const;
  Span OriginalSpan(size_t begin, size_t end) const;
};

// Builds a Piece one character at a time.
class PieceBuilder {
 public:
  void Append(int32_t cp, Span original);
  void AppendBytes(std::string_view bytes, Span original);
  Piece Finish() { return std::move(piece_); }
  size_t size() const { return piece_.text.size(); }

 private:
  Piece piece_;
};

// A compiled PCRE2 pattern (UTF, Unicode properties), safe to share between
// threads.
class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(
      const std::string& pattern, const JsonContext& ctx);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // All non-overlapping, non-empty matches in `text`, left to right.
  std::vector<Span> FindAll(std::string_view text) const;

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
};

// How a split treats the delimiters it finds.
enum class SplitBehavior {
  kRemoved,
  kIsolated,
  kMergedWithPrevious,
  kMergedWithNext,
  kContiguous
};
absl::StatusOr<SplitBehavior> ParseBehavior(const Json& obj,
                                            const JsonContext& ctx);
// Splits `piece` at the byte ranges in `matches` (sorted, disjoint);
// with `invert` the ranges are the parts to keep as the pieces.
void SplitPiece(const Piece& piece, const std::vector<Span>& matches,
                SplitBehavior behavior, bool invert, std::vector<Piece>* out);

// ---- Stages ----

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual Piece Normalize(Piece in) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // `first` is true when the pieces start the input (not after an added
  // token), which Metaspace's "first" prepend scheme needs.
  virtual void PreTokenize(std::vector<Piece>* pieces, bool first) const = 0;
};

// A token the model produced: its id and [begin, end) in the piece's bytes.
struct ModelToken {
  int64_t id;
  uint32_t begin;
  uint32_t end;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual void Tokenize(std::string_view word,
                        std::vector<ModelToken>* out) const = 0;
  virtual std::optional<int64_t> TokenToId(std::string_view token) const = 0;
  virtual std::optional<std::string> IdToToken(int64_t id) const = 0;
  virtual int64_t size() const = 0;  // one more than the largest id
  virtual std::optional<int64_t> unk_id() const = 0;
};

// One encoded sequence while it is assembled.
struct Encoded {
  std::vector<int64_t> ids;
  std::vector<int64_t> type_ids;
  std::vector<Span> offsets;
  std::vector<int64_t> sequence_ids;
  std::vector<uint8_t> special_mask;
  void Add(int64_t id, int64_t type_id, Span offset, int64_t seq, bool special);
  void Append(const Encoded& other);
  size_t size() const { return ids.size(); }
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // How many special tokens Process adds (for truncation).
  virtual size_t AddedTokens(bool pair) const = 0;
  // Combines the sequences (type ids and sequence ids filled in) and adds
  // special tokens when asked. `texts` are the inputs, for offset trimming.
  virtual Encoded Process(Encoded a, std::optional<Encoded> b,
                          bool add_special_tokens,
                          const std::vector<std::string_view>& texts) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the token strings; the decoded text is their concatenation.
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Reads obj["pattern"], {"String": s} or {"Regex": r}: sets `literal` or
// `re`.
absl::Status ReadPattern(const Json& obj, const JsonContext& ctx,
                         std::string* literal, std::unique_ptr<Regex>* re);

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(
    const Json& obj, const JsonContext& ctx);
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(
    const Json& obj, const JsonContext& ctx);
absl::StatusOr<std::unique_ptr<Model>> MakeModel(const Json& obj,
                                                 const JsonContext& ctx);
// `model` resolves the special tokens the processor names.
absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(
    const Json& obj, const JsonContext& ctx);
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& obj,
                                                     const JsonContext& ctx);

// GPT-2's reversible byte <-> printable character table.
const std::vector<int32_t>& ByteToUnicode();
// Inverse; -1 for characters outside the table.
int ByteFromUnicode(int32_t cp);

// Offsets trimmed of leading/trailing whitespace as byte-level processors
// with trim_offsets do; `text` is the original input.
Span TrimOffsets(std::string_view text, Span span);

}  // namespace tok
}  // namespace lathe

#endif  // LATHE_WORKER_TOKENIZERS_COMPONENTS_H_
