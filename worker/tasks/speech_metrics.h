// Word and character error rates for speech recognition, corpus-level as
// speech people report them: the edit distance (substitutions, deletions
// and insertions) summed over every utterance, divided by the length of all
// references together. No LibTorch.
#ifndef LATHE_WORKER_TASKS_SPEECH_METRICS_H_
#define LATHE_WORKER_TASKS_SPEECH_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace lathe {

// Levenshtein distance between two sequences (unit costs).
int64_t EditDistance(const std::vector<std::u32string>& a,
                     const std::vector<std::u32string>& b);
int64_t EditDistance(const std::u32string& a, const std::u32string& b);

// Sums over the utterances seen.
class SpeechErrorRates {
 public:
  // One utterance: the reference transcript and the recognised text. Both
  // are compared as words split on whitespace (WER) and as the characters
  // of the words joined by single spaces, spaces counted (CER); invalid
  // UTF-8 bytes count as one character each.
  void Add(const std::string& reference, const std::string& hypothesis);

  // Total errors over total reference words or characters; 0 before any
  // reference word (or character) was seen.
  double wer() const;
  double cer() const;
  int64_t word_errors() const { return word_errors_; }
  int64_t words() const { return words_; }
  int64_t char_errors() const { return char_errors_; }
  int64_t chars() const { return chars_; }

 private:
  int64_t word_errors_ = 0, words_ = 0, char_errors_ = 0, chars_ = 0;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_SPEECH_METRICS_H_
