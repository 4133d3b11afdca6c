// Helpers shared by the fuzz targets in this folder: a check that aborts (so
// libFuzzer records the input as a crash and the replay test fails), a
// per-process scratch directory for parsers that read files, and input
// splitting. Used both under libFuzzer and by replay_main.cc.
#ifndef LATHE_TESTS_FUZZ_FUZZ_UTIL_H_
#define LATHE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

// Aborts with the failed condition: an invariant of the code under test does
// not hold for this input.
#define FUZZ_CHECK(cond)                                               \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                   \
      std::abort();                                                    \
    }                                                                  \
  } while (0)

namespace lathe::fuzz {

// A directory made once per process under $TMPDIR (or /tmp) and removed
// with everything in it when the process exits normally.
const std::string& ScratchDir();

// Writes `bytes` to `path` (truncating); aborts on failure, which is an
// environment problem, not a finding.
void WriteFileOrDie(const std::string& path, std::string_view bytes);

// Removes `path` and everything under it; missing is fine.
void RemoveAll(const std::string& path);

// Splits the input at NUL bytes into at most `max_parts` parts (the last
// part keeps any further NULs). Inputs that are JSON or templates cannot
// hold a raw NUL, so it separates, say, a tokenizer.json from the text to
// encode.
std::vector<std::string_view> SplitAtNul(const uint8_t* data, size_t size,
                                         size_t max_parts);

// True for well-formed UTF-8 (no overlong forms, surrogates or code points
// past U+10FFFF). The protobuf runtime refuses a message whose string
// fields are not, so no request with such a field reaches the server: the
// targets that build requests from raw bytes drop those inputs.
bool IsValidUtf8(std::string_view s);

}  // namespace lathe::fuzz

#endif  // LATHE_TESTS_FUZZ_FUZZ_UTIL_H_
