// Feeds: a tokenizer.json (as a base model directory carries it), a NUL, a
// text, and optionally a NUL and a pair text, to Tokenizer::FromTokenizerJson
// and, when it loads, Encode, EncodeTruncated and Decode
// (worker/tokenizers/tokenizer.h). Checks: no crash or sanitizer report;
// load errors are INVALID_ARGUMENT; an encoding's vectors have one entry per
// token, ids lie in [0, vocab_size), offsets lie inside the text their
// sequence came from, and truncation keeps at most max_length ids (or just
// the special tokens when they do not fit); Decode takes any ids, out of
// range ones included.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fuzz/fuzz_util.h"
#include "worker/tokenizers/tokenizer.h"

namespace {

void CheckEncoding(const lathe::TokenizedText& t, int64_t vocab_size,
                   std::string_view text,
                   std::optional<std::string_view> pair) {
  const size_t n = t.ids.size();
  FUZZ_CHECK(t.type_ids.size() == n && t.offsets.size() == n &&
             t.sequence_ids.size() == n && t.special_mask.size() == n);
  for (size_t i = 0; i < n; ++i) {
    FUZZ_CHECK(t.ids[i] >= 0 && t.ids[i] < vocab_size);
    const auto [begin, end] = t.offsets[i];
    FUZZ_CHECK(0 <= begin && begin <= end);
    const int64_t seq = t.sequence_ids[i];
    FUZZ_CHECK(seq == -1 || seq == 0 || (seq == 1 && pair.has_value()));
    if (seq == 0) FUZZ_CHECK(end <= static_cast<int64_t>(text.size()));
    if (seq == 1) FUZZ_CHECK(end <= static_cast<int64_t>(pair->size()));
    FUZZ_CHECK(t.special_mask[i] <= 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string_view> parts =
      lathe::fuzz::SplitAtNul(data, size, 3);
  // Loading is the slow part: keep the last tokenizer while only the texts
  // change, so the fuzzer spends its time on both.
  static std::string last_json;
  static std::unique_ptr<lathe::Tokenizer> tokenizer;
  static bool loaded = false;
  if (!loaded || parts[0] != last_json) {
    last_json = std::string(parts[0]);
    const std::string path = lathe::fuzz::ScratchDir() + "/tokenizer.json";
    lathe::fuzz::WriteFileOrDie(path, parts[0]);
    auto t = lathe::Tokenizer::FromTokenizerJson(path);
    loaded = true;
    tokenizer.reset();
    if (!t.ok()) {
      FUZZ_CHECK(absl::IsInvalidArgument(t.status()));
      return 0;
    }
    tokenizer = std::move(*t);
  }
  if (tokenizer == nullptr) return 0;

  const std::string_view text = parts.size() > 1 ? parts[1] : "";
  std::optional<std::string_view> pair;
  if (parts.size() > 2) pair = parts[2];
  const int64_t vocab = tokenizer->vocab_size();
  FUZZ_CHECK(vocab >= 0);

  for (bool specials : {false, true}) {
    const lathe::TokenizedText t = tokenizer->Encode(text, pair, specials);
    CheckEncoding(t, vocab, text, pair);
    tokenizer->Decode(t.ids, /*skip_special_tokens=*/true);
    tokenizer->Decode(t.ids, /*skip_special_tokens=*/false);
  }
  const lathe::TokenizedText all = tokenizer->Encode(text, pair, true);
  int64_t specials = 0;
  for (uint8_t s : all.special_mask) specials += s;
  for (int64_t max_length : {int64_t{1}, int64_t{8}, int64_t{64}}) {
    const lathe::TokenizedText t =
        tokenizer->EncodeTruncated(text, pair, max_length);
    CheckEncoding(t, vocab, text, pair);
    FUZZ_CHECK(static_cast<int64_t>(t.ids.size()) <=
               std::max(max_length, specials));
  }
  // Ids a caller made up (the text's bytes), some out of range.
  std::vector<int64_t> ids;
  for (char c : text.substr(0, 64)) {
    ids.push_back(static_cast<uint8_t>(c) % (vocab + 2) - 1);
  }
  tokenizer->Decode(ids, false);
  for (int64_t id : ids) tokenizer->IdToToken(id);
  return 0;
}
