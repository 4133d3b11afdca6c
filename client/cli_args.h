// The command line of `lathe`: which commands exist, which flags each takes,
// and a parser that refuses anything else with a message naming the flag and
// the nearest one the command knows. No gRPC; unit-tested on its own.
#ifndef LATHE_CLIENT_CLI_ARGS_H_
#define LATHE_CLIENT_CLI_ARGS_H_

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lathe::client {

struct FlagSpec {
  enum class Kind {
    kValue,     // --name VALUE or --name=VALUE, at most once
    kRepeated,  // --name VALUE, any number of times
    kSwitch,    // --name, no value
  };
  std::string name;  // Without the dashes: "train-data".
  Kind kind = Kind::kValue;
  bool required = false;  // The command refuses to run without it.
};

struct CommandSpec {
  std::string name;  // The command's words: "submit", "models push".
  // The positional arguments after the words, all required: {"JOB"}.
  std::vector<std::string> positional;
  std::vector<FlagSpec> flags;
  // Accepts --param NAME=VALUE: an unknown flag spelled like a
  // hyperparameter (--method, --learning-rate) is pointed there.
  bool takes_params = false;
  // One line: the arguments after the words, for messages.
  std::string usage;
};

// Every command of `lathe`, and the flags every command accepts (--server,
// --output, --help). Stable references.
const std::vector<CommandSpec>& Commands();
const std::vector<FlagSpec>& GlobalFlags();
const CommandSpec* FindCommand(const std::string& name);

struct ParsedArgs {
  // The command found; nullptr when the line holds no command (only
  // global flags, --help for instance).
  const CommandSpec* command = nullptr;
  std::vector<std::string> positional;  // After the command's words.
  // Flag name (no dashes) -> values in order; a switch's value is "1".
  std::map<std::string, std::vector<std::string>> options;

  // The flag's last value, or `def` when absent or empty.
  std::string Get(const std::string& name, const std::string& def = "") const;
  const std::vector<std::string>& All(const std::string& name) const;
  bool Has(const std::string& name) const { return options.count(name) > 0; }
};

// Parses the arguments after the program name: global flags anywhere, the
// command's words, then its flags and positional arguments in any order;
// `--` ends the flags. INVALID_ARGUMENT, with a message for the user (and
// the command's usage on a second line), for an unknown command, an unknown
// flag (with the nearest flag the command takes, or --param NAME=VALUE when
// the flag is a hyperparameter's name), a flag without its value, a switch
// given a value, a flag given twice with different values, and a missing or
// extra positional argument, and a required flag left out. --help skips
// the last two checks.
absl::StatusOr<ParsedArgs> ParseCommandLine(
    const std::vector<std::string>& args);

// The same for the arguments after `command`'s words, with `globals` also
// accepted.
absl::StatusOr<ParsedArgs> ParseCommandArgs(
    const CommandSpec& command, const std::vector<FlagSpec>& globals,
    const std::vector<std::string>& args);

// Edits (insertions, deletions, substitutions, swaps of neighbours) that
// turn `a` into `b`.
size_t EditDistance(const std::string& a, const std::string& b);

}  // namespace lathe::client

#endif  // LATHE_CLIENT_CLI_ARGS_H_
