// Language-modelling data (causal-lm and masked-lm): readers, chat rendering
// and the token/label layout of causal-lm examples. No LibTorch.
//
// Files:
//   * JSONL, one object per line, in one of three formats decided by the
//     first row (a later row in another format is an error naming its
//     file:line):
//       prompt/completion  {"prompt": "...", "completion": "..."}
//       chat               {"messages": [{"role": "user", "content": "..."},
//                                        {"role": "assistant", ...}, ...]}
//       raw text           {"text": "..."}
//     (column names from prompt_column, completion_column, messages_column,
//     text_column).
//   * Plain text (.txt): raw text, one document per block of lines
//     separated by one or more blank lines; a block's lines are joined with
//     "\n".
//
// Chat rendering: with the tokenizer's chat_template, exactly as the
// template renders (see chat_template_data.h); the rendered text is
// tokenized without adding special tokens (the template writes them).
// Without a template, Lathe's default format, for each message but the
// last assistant reply:
//     "<|ROLE|>\n" + content + "\n"          (system, user, ...)
//     "<|assistant|>\n" + content + EOS + "\n" (earlier assistant replies)
// then the generation prompt "<|assistant|>\n", then the final reply's
// content; EOS is the tokenizer's end-of-sequence token text. The prompt
// part gets the tokenizer's usual special tokens (BOS for Llama, none for
// GPT-2) and the reply is followed by the EOS id.
//
// Causal-lm examples: ids = prompt tokens + completion tokens (+ EOS),
// truncated at max_length from the end; labels are the ids, with -100 on
// the prompt tokens when completion_only (the model is trained on the
// reply only); raw text rows are trained on every token (each row is one
// example, with EOS appended; rows are not packed together).
#ifndef LATHE_WORKER_TASKS_LM_DATA_H_
#define LATHE_WORKER_TASKS_LM_DATA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/params.h"
#include "nlohmann/json.hpp"
#include "worker/tasks/chat_template_data.h"
#include "worker/tokenizers/tokenizer.h"

namespace lathe {

enum class LmFormat { kPromptCompletion, kChat, kText };
// "prompt/completion", "chat", "text".
const char* LmFormatName(LmFormat format);

struct LmColumns {
  std::string prompt = "prompt";
  std::string completion = "completion";
  std::string messages = "messages";
  std::string text = "text";
};
// The columns named in `params`, defaults for empty names.
LmColumns LmColumnsFromParams(const TrainParams& params);

struct LmRow {
  std::string prompt;
  std::string completion;
  nlohmann::json messages;  // Chat: array of objects with role and content.
  std::string text;
  int64_t line = 0;  // 1-based line where the row starts.
};

struct LmRows {
  LmFormat format = LmFormat::kText;
  std::vector<LmRow> rows;
};

// Reads every row of `path` (".txt" in `display_name` or `path`: plain
// text; anything else: JSONL). With `for_prediction`, prompt rows may omit
// the completion and chat rows may end with any role. Every error is
// INVALID_ARGUMENT starting with "DISPLAY_NAME:LINE: " (mixed formats, a
// missing column, a message without role/content, a chat row whose last
// message is not from the assistant); an empty file is an error. Lines are
// capped at 64 MiB.
absl::StatusOr<LmRows> ReadLmRows(const std::string& path,
                                  const std::string& display_name,
                                  const LmColumns& columns,
                                  bool for_prediction);

// Turns chat messages into text (see the header comment).
class ChatFormatter {
 public:
  // Uses tokenizer.chat_template() when present (INVALID_ARGUMENT when it
  // uses a construct Lathe does not implement), else the default format.
  // `tokenizer` must outlive the formatter.
  static absl::StatusOr<std::unique_ptr<ChatFormatter>> ForTokenizer(
      const Tokenizer& tokenizer);
  // A formatter for an explicit template source (tests).
  static absl::StatusOr<std::unique_ptr<ChatFormatter>> WithTemplate(
      const Tokenizer& tokenizer, const std::string& source);

  bool uses_template() const { return template_ != nullptr; }

  // (prompt, reply): the conversation up to and including the generation
  // prompt of the final assistant message, and what follows it. The final
  // message must be from the assistant. With a template, the prompt is the
  // rendering of all messages but the last with add_generation_prompt, and
  // must be a prefix of the full rendering (else INVALID_ARGUMENT).
  absl::StatusOr<std::pair<std::string, std::string>> SplitForTraining(
      const nlohmann::json& messages) const;
  // The text a reply is generated from: every message but a final
  // assistant one, then the generation prompt.
  absl::StatusOr<std::string> PromptForGeneration(
      const nlohmann::json& messages) const;

 private:
  explicit ChatFormatter(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  absl::StatusOr<std::string> Render(const nlohmann::json& messages,
                                     bool add_generation_prompt) const;

  const Tokenizer* tokenizer_;
  std::unique_ptr<ChatTemplate> template_;
  std::string bos_, eos_;
};

struct LmExample {
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;  // Same length as ids; -100 is ignored.
};

constexpr int64_t kIgnoreLabel = -100;

// The causal-lm example of `row` (format `format`; `chat` is needed for
// chat rows). max_length >= 2. INVALID_ARGUMENT (without a file:line
// prefix) when a chat row cannot be rendered.
absl::StatusOr<LmExample> EncodeLmExample(const Tokenizer& tokenizer,
                                          const ChatFormatter* chat,
                                          LmFormat format, const LmRow& row,
                                          int64_t max_length,
                                          bool completion_only);

// The ids generation starts from: the prompt (prompt/completion rows), the
// rendered conversation with its generation prompt (chat rows), or the
// text (raw rows), with the tokenizer's special tokens as in training
// (no EOS). Keeps the last `max_length` ids when longer.
absl::StatusOr<std::vector<int64_t>> EncodeLmPrompt(const Tokenizer& tokenizer,
                                                    const ChatFormatter* chat,
                                                    LmFormat format,
                                                    const LmRow& row,
                                                    int64_t max_length);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_LM_DATA_H_
