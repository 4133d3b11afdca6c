// `lathe tokenize`: encodes text with a tokenizer directory, offline (no
// server), so users can check what a model will see.
#ifndef LATHE_CLIENT_TOKENIZE_COMMAND_H_
#define LATHE_CLIENT_TOKENIZE_COMMAND_H_

#include <iosfwd>
#include <string>

namespace lathe::client {

// Encodes each line of `in` with the tokenizer in `dir` (tokenizer.json,
// vocab.txt, or vocab.json + merges.txt). With `jsonl`, each input line is
// a JSON string, or an object with a "text" string (so texts may hold
// newlines); `add_special_tokens` adds the post-processor's special tokens.
// Writes one JSON object per line to `out`: {"ids": [...], "offsets":
// [[begin, end], ...]} with offsets in Unicode code points of that line's
// text. Returns the process exit code: 0, or 1 when loading or a line fails
// (the error goes to `err`).
int RunTokenizeCommand(const std::string& dir, bool jsonl,
                       bool add_special_tokens, std::istream& in,
                       std::ostream& out, std::ostream& err);

}  // namespace lathe::client

#endif  // LATHE_CLIENT_TOKENIZE_COMMAND_H_
