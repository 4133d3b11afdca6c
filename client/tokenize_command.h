// `lathe tokenize`: encodes text with a tokenizer directory, offline (no
// server), so users can check what a model will see.
#ifndef LATHE_CLIENT_TOKENIZE_COMMAND_H_
#define LATHE_CLIENT_TOKENIZE_COMMAND_H_

#include <iosfwd>

namespace lathe::client {

// args: the words after "tokenize":
//   --tokenizer DIR        a tokenizer directory (tokenizer.json, vocab.txt,
//                          or vocab.json + merges.txt)
//   --jsonl                each input line is a JSON string, or an object
//                          with a "text" string (so texts may hold newlines)
//   --no-special-tokens    do not add the post-processor's special tokens
// Reads UTF-8 lines from `in` and writes one JSON object per line to `out`:
// {"ids": [...], "offsets": [[begin, end], ...]} with offsets in Unicode
// code points of that line's text. Returns the process exit code: 0, 1 when
// loading or a line fails (the error goes to `err`), 2 for bad usage.
int RunTokenizeCommand(int argc, char** argv, std::istream& in,
                       std::ostream& out, std::ostream& err);

}  // namespace lathe::client

#endif  // LATHE_CLIENT_TOKENIZE_COMMAND_H_
