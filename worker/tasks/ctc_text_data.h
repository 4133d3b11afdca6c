// The character alphabet of a CTC speech recogniser (Wav2Vec2ForCTC with a
// Wav2Vec2CTCTokenizer): transcripts to label ids and frame predictions back
// to text. No LibTorch.
#ifndef LATHE_WORKER_TASKS_CTC_TEXT_DATA_H_
#define LATHE_WORKER_TASKS_CTC_TEXT_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lathe {

class CtcAlphabet {
 public:
  // The special tokens, ids 0 to 4 in an alphabet built from transcripts.
  static constexpr char kPad[] = "<pad>";  // Also CTC's blank.
  static constexpr char kBos[] = "<s>";
  static constexpr char kEos[] = "</s>";
  static constexpr char kUnk[] = "<unk>";
  static constexpr char kWordDelimiter[] = "|";

  // The special tokens, then every character of the transcripts (lower
  // case, whitespace excepted) in code point order.
  static CtcAlphabet FromTranscripts(const std::vector<std::string>& texts);
  // A model's alphabet (tokens by id, from its vocab.json);
  // INVALID_ARGUMENT when it lacks the blank "<pad>" or the word delimiter.
  static absl::StatusOr<CtcAlphabet> FromTokens(
      std::vector<std::string> tokens);

  // `text` in the alphabet: letters folded to the case the alphabet holds
  // (lower unless it has upper-case letters only), runs of whitespace one
  // space, no space at either end, characters the alphabet lacks left out
  // (counted in *dropped when given).
  std::string Normalize(const std::string& text,
                        int64_t* dropped = nullptr) const;
  // The label ids of Normalize(text), spaces as the word delimiter.
  std::vector<int64_t> Encode(const std::string& text,
                              int64_t* dropped = nullptr) const;
  // Greedy CTC decoding of one row's best id per frame: runs of the same id
  // merged, blanks removed, the word delimiter as a space, the other
  // special tokens left out, no space at either end.
  std::string Decode(const std::vector<int64_t>& frame_ids) const;

  int64_t blank() const { return blank_; }
  const std::vector<std::string>& tokens() const { return tokens_; }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }

 private:
  std::vector<std::string> tokens_;
  int64_t blank_ = 0, delimiter_ = 4;
  bool upper_ = false;  // The alphabet's letters are upper case.
};

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_CTC_TEXT_DATA_H_
