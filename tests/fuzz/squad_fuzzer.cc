// Feeds: a question-answering dataset file (SQuAD JSON v1.1/v2.0, or JSONL
// rows) to ReadQaExamples (worker/tasks/squad_data.h). The first input byte
// picks whether answers are required (bit 0) and renamed columns (bit 1);
// the rest is the file. Checks: no crash or sanitizer report; every error
// is INVALID_ARGUMENT starting with the file's display name; accepted
// examples are non-empty, with line numbers from 1 that never decrease;
// every answer lies inside its context, in code points and in bytes, and
// the context holds the answer's text at its byte offsets; an unanswerable
// example has no answers.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/tasks/squad_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const bool require_answers = (mode & 1) != 0;
  lathe::QaColumns columns;
  if ((mode >> 1 & 1) != 0) columns = {"q", "c", "a"};
  const std::string display_name = "fuzz.json";

  const std::string path = lathe::fuzz::ScratchDir() + "/data";
  lathe::fuzz::WriteFileOrDie(
      path,
      std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  const absl::StatusOr<std::vector<lathe::QaExample>> examples =
      lathe::ReadQaExamples(path, display_name, columns, require_answers);
  if (!examples.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(examples.status()));
    FUZZ_CHECK(
        absl::StartsWith(examples.status().message(), display_name + ":"));
    return 0;
  }
  FUZZ_CHECK(!examples->empty());
  int64_t last_line = 0;
  for (const lathe::QaExample& ex : *examples) {
    FUZZ_CHECK(ex.line >= 1 && ex.line >= last_line);
    last_line = ex.line;
    if (ex.is_impossible) FUZZ_CHECK(ex.answers.empty());
    const int64_t context_bytes = static_cast<int64_t>(ex.context.size());
    for (const lathe::QaAnswer& answer : ex.answers) {
      FUZZ_CHECK(answer.start >= 0 && answer.start <= context_bytes);
      FUZZ_CHECK(answer.byte_start >= answer.start);
      FUZZ_CHECK(answer.byte_start >= 0 && answer.byte_end <= context_bytes);
      FUZZ_CHECK(answer.byte_end - answer.byte_start ==
                 static_cast<int64_t>(answer.text.size()));
      FUZZ_CHECK(ex.context.compare(answer.byte_start, answer.text.size(),
                                    answer.text) == 0);
    }
  }
  return 0;
}
