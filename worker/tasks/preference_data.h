// Preference data for DPO (method=dpo or dpo-lora on causal-lm): each row
// gives a prompt and two replies, the one people preferred and the one they
// rejected. No LibTorch.
//
// JSONL, one object per line (columns from prompt_column, chosen_column,
// rejected_column):
//   text  {"prompt": "...", "chosen": "...", "rejected": "..."}
//   chat  any of the three is an array of {"role", "content"} messages:
//         {"prompt": [{"role": "user", "content": "..."}],
//          "chosen": [{"role": "assistant", "content": "..."}],
//          "rejected": [{"role": "assistant", "content": "..."}]}
//         A prompt may also be an object holding the messages under
//         "messages" (OpenAI's {"input": {"messages": [...]},
//         "preferred_output": [...], "non_preferred_output": [...]} rows,
//         with prompt_column=input, chosen_column=preferred_output and
//         rejected_column=non_preferred_output); non-empty "tools" there are
//         refused. A string prompt in a chat row is one user message and a
//         string reply one assistant message. Without "prompt", "chosen" and
//         "rejected" are whole conversations that share every message but
//         the last.
// A chat conversation (prompt messages, then the reply's) must end with an
// assistant message: that message is what the pair scores. Rows are encoded
// as causal-lm rows (lm_data.h), text rows as prompt/completion and chat
// rows as chat, so the tokens scored are those supervised fine-tuning
// trains on.
#ifndef LATHE_WORKER_TASKS_PREFERENCE_DATA_H_
#define LATHE_WORKER_TASKS_PREFERENCE_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/params.h"
#include "worker/tasks/lm_data.h"

namespace lathe {

struct PreferenceColumns {
  std::string prompt = "prompt";
  std::string chosen = "chosen";
  std::string rejected = "rejected";
};
// The columns named in `params`, defaults for empty names.
PreferenceColumns PreferenceColumnsFromParams(const TrainParams& params);

// One pair, as two causal-lm rows in `format` (kPromptCompletion: prompt
// and completion set; kChat: messages set).
struct PreferenceRow {
  LmFormat format = LmFormat::kPromptCompletion;
  LmRow chosen, rejected;
  int64_t line = 0;  // 1-based line of the row.
};

// Reads every row of `path`. Errors are INVALID_ARGUMENT starting with
// "DISPLAY_NAME:LINE: " (not an object, a missing or mistyped column, a
// message without string role and content, a conversation not ending with
// the assistant, chat replies without a prompt whose earlier messages
// differ); an empty file is an error. Lines are capped at 64 MiB.
absl::StatusOr<std::vector<PreferenceRow>> ReadPreferenceRows(
    const std::string& path, const std::string& display_name,
    const PreferenceColumns& columns);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_PREFERENCE_DATA_H_
