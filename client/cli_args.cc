#include "client/cli_args.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/params.h"

namespace lathe::client {
namespace {

using Kind = FlagSpec::Kind;

// Commands of two words start with one of these.
constexpr const char* kGroups[] = {"datasets", "models", "users", "tokens"};

bool IsGroup(const std::string& word) {
  for (const char* g : kGroups) {
    if (word == g) return true;
  }
  return false;
}

// "-x", "--name", "--name=value"; not "-", "--" alone is handled by the
// callers, and not a negative number (a value such as --priority -5).
bool IsFlagLike(const std::string& arg) {
  if (arg.size() < 2 || arg[0] != '-') return false;
  double number = 0;
  return !absl::SimpleAtod(arg, &number);
}

const FlagSpec* FindFlag(const std::vector<FlagSpec>& flags,
                         const std::string& name) {
  for (const FlagSpec& f : flags) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// The flag named `name` of any command (or a global one), to know while
// looking for the command whether a flag before it takes a value.
const FlagSpec* FindAnyFlag(const std::string& name) {
  if (const FlagSpec* f = FindFlag(GlobalFlags(), name)) return f;
  for (const CommandSpec& c : Commands()) {
    if (const FlagSpec* f = FindFlag(c.flags, name)) return f;
  }
  return nullptr;
}

absl::Status UsageError(const CommandSpec* command, const std::string& what) {
  if (command == nullptr || command->name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "\nrun lathe --help for the commands"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, "\nusage: lathe ", command->name,
                   command->usage.empty() ? "" : " ", command->usage));
}

std::string Normalised(const std::string& name) {
  std::string out = name;
  for (char& c : out) {
    c = c == '_'
            ? '-'
            : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// The candidate nearest to `word`, if near enough to be what was meant: a
// candidate that `word` begins (three letters at least), or one within a
// third of the word's length in edits (at least 1, at most 3).
std::string Nearest(const std::string& word,
                    const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance =
      std::max<size_t>(1, std::min<size_t>(3, word.size() / 3)) + 1;
  for (const std::string& c : candidates) {
    const size_t d = word.size() >= 3 && absl::StartsWith(c, word)
                         ? 0
                         : EditDistance(word, c);
    if (d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

absl::Status UnknownFlag(const CommandSpec& command,
                         const std::vector<FlagSpec>& globals,
                         const std::string& shown, const std::string& name,
                         const std::string& value) {
  const std::string norm = Normalised(name);
  std::vector<std::string> flags;
  for (const FlagSpec& f : command.flags) flags.push_back(f.name);
  for (const FlagSpec& f : globals) flags.push_back(f.name);
  std::vector<std::string> params;
  if (command.takes_params) {
    for (const std::string& p : TrainParamNames()) params.push_back(p);
  }
  std::string param_name = norm;
  std::replace(param_name.begin(), param_name.end(), '-', '_');
  const std::string param_value = value.empty() ? "..." : value;

  std::string hint;
  if (std::find(flags.begin(), flags.end(), norm) != flags.end()) {
    hint = absl::StrCat("--", norm);
  } else if (std::find(params.begin(), params.end(), param_name) !=
             params.end()) {
    hint = absl::StrCat("--param ", param_name, "=", param_value);
  } else if (std::string f = Nearest(norm, flags); !f.empty()) {
    hint = absl::StrCat("--", f);
  } else if (std::string p = Nearest(param_name, params); !p.empty()) {
    hint = absl::StrCat("--param ", p, "=", param_value);
  }
  std::string message = absl::StrCat("unknown flag ", shown);
  if (!command.name.empty()) absl::StrAppend(&message, " for ", command.name);
  if (!hint.empty()) {
    absl::StrAppend(&message, "; did you mean ", hint, "?");
    return UsageError(&command, message);
  }
  // Nothing close: say which commands take it, or list this one's flags.
  std::vector<std::string> owners;
  for (const CommandSpec& c : Commands()) {
    if (FindFlag(c.flags, norm) != nullptr) owners.push_back(c.name);
  }
  if (!owners.empty()) {
    absl::StrAppend(&message, "; --", norm, " is a flag of ",
                    absl::StrJoin(owners, ", "));
  } else if (command.name.empty()) {
    absl::StrAppend(&message, "; give a command first (lathe --help)");
  } else if (command.flags.empty()) {
    absl::StrAppend(&message, "; ", command.name, " takes no flags");
  } else {
    std::vector<std::string> dashed;
    for (const FlagSpec& f : command.flags) {
      dashed.push_back(absl::StrCat("--", f.name));
    }
    absl::StrAppend(&message, "; it takes ", absl::StrJoin(dashed, ", "));
  }
  return UsageError(&command, message);
}

}  // namespace

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"server", Kind::kValue},
      {"output", Kind::kValue},
      {"help", Kind::kSwitch},
      // The token: --token-file, else $LATHE_TOKEN, else `lathe login`'s.
      {"token-file", Kind::kValue},
      // Transport security (client/tls_flags.h).
      {"tls-ca", Kind::kValue},
      {"tls-cert", Kind::kValue},
      {"tls-key", Kind::kValue},
  };
  return *flags;
}

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = [] {
    const FlagSpec value_param = {"param", Kind::kRepeated};
    auto job = [](const std::string& name, std::vector<FlagSpec> flags = {},
                  const std::string& usage_flags = "") {
      return CommandSpec{name,
                         {"JOB"},
                         std::move(flags),
                         false,
                         absl::StrCat("JOB", usage_flags)};
    };
    return new std::vector<CommandSpec>{
        {"submit",
         {},
         {{"task", Kind::kValue, true},
          {"model", Kind::kValue, true},
          {"train-data", Kind::kValue, true},
          {"validation-data", Kind::kValue},
          value_param,
          {"device", Kind::kValue},
          {"owner", Kind::kValue},
          {"label", Kind::kRepeated},
          {"request-id", Kind::kValue},
          {"priority", Kind::kValue},
          {"max-attempts", Kind::kValue},
          {"devices", Kind::kValue},
          {"min-device-memory-mb", Kind::kValue},
          {"webhook", Kind::kRepeated}},
         true,
         "--task TASK --model MODEL --train-data DATA "
         "[--validation-data DATA] [--param NAME=VALUE ...] [--device "
         "cpu|cuda:N] [--owner NAME] [--label KEY=VALUE ...] [--request-id "
         "ID] [--priority N] [--max-attempts N] [--devices N] "
         "[--min-device-memory-mb MB] [--webhook URL ...]"},
        {"list",
         {},
         {{"state", Kind::kRepeated},
          {"owner", Kind::kValue},
          {"page-size", Kind::kValue},
          {"page-token", Kind::kValue}},
         false,
         "[--state STATE ...] [--owner NAME] [--page-size N] [--page-token "
         "T]"},
        job("get"),
        job("watch", {{"after-seq", Kind::kValue}}, " [--after-seq N]"),
        job("wait", {{"timeout", Kind::kValue}}, " [--timeout SECONDS]"),
        job("cancel"),
        job("pause"),
        job("resume"),
        job("checkpoint-now"),
        job("checkpoints"),
        job("download",
            {{"dest", Kind::kValue, true}, {"checkpoint", Kind::kValue}},
            " --dest DIR [--checkpoint latest|best|STEP]"),
        {"predict",
         {"MODEL"},
         {{"input", Kind::kValue, true},
          {"task", Kind::kValue},
          value_param,
          {"device", Kind::kValue},
          {"owner", Kind::kValue},
          {"timeout", Kind::kValue}},
         true,
         "MODEL --input FILE [--task TASK] [--param NAME=VALUE ...] "
         "[--device cpu|cuda:N] [--timeout SECONDS]"},
        {"datasets upload",
         {"FILE"},
         {{"name", Kind::kValue}},
         false,
         "FILE [--name NAME]"},
        {"models push",
         {"DIR"},
         {{"name", Kind::kValue, true}, {"replace", Kind::kSwitch}},
         false,
         "DIR --name NAME [--replace]"},
        {"models list", {}, {}, false, ""},
        {"models delete", {"NAME"}, {}, false, "NAME"},
        {"users create",
         {"NAME"},
         {{"team", Kind::kValue}, {"role", Kind::kValue}},
         false,
         "NAME --team TEAM [--role admin|member|viewer|worker]"},
        {"users list", {}, {}, false, ""},
        {"users disable", {"NAME"}, {}, false, "NAME"},
        {"tokens create",
         {},
         {{"user", Kind::kValue},
          {"name", Kind::kValue},
          {"expires", Kind::kValue}},
         false,
         "[--user NAME] [--name LABEL] [--expires DURATION (30d, 12h, 90m)]"},
        {"tokens list", {}, {{"user", Kind::kValue}}, false, "[--user NAME]"},
        {"tokens revoke", {"ID"}, {}, false, "ID"},
        {"audit",
         {},
         {{"limit", Kind::kValue}, {"before-seq", Kind::kValue}},
         false,
         "[--limit N] [--before-seq SEQ]"},
        {"whoami", {}, {}, false, ""},
        {"login",
         {},
         {},
         false,
         "(reads the token from --token-file, "
         "$LATHE_TOKEN or standard input)"},
        {"tokenize",
         {},
         {{"tokenizer", Kind::kValue, true},
          {"jsonl", Kind::kSwitch},
          {"no-special-tokens", Kind::kSwitch}},
         false,
         "--tokenizer DIR [--jsonl] [--no-special-tokens] < LINES"},
    };
  }();
  return *commands;
}

const CommandSpec* FindCommand(const std::string& name) {
  for (const CommandSpec& c : Commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string ParsedArgs::Get(const std::string& name,
                            const std::string& def) const {
  auto it = options.find(name);
  return it == options.end() || it->second.empty() || it->second.back().empty()
             ? def
             : it->second.back();
}

const std::vector<std::string>& ParsedArgs::All(const std::string& name) const {
  static const auto* empty = new std::vector<std::string>;
  auto it = options.find(name);
  return it == options.end() ? *empty : it->second;
}

absl::StatusOr<ParsedArgs> ParseCommandArgs(
    const CommandSpec& command, const std::vector<FlagSpec>& globals,
    const std::vector<std::string>& args) {
  ParsedArgs out;
  out.command = &command;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!flags_done && arg == "--") {
      flags_done = true;
      continue;
    }
    if (flags_done || !IsFlagLike(arg)) {
      out.positional.push_back(arg);
      continue;
    }
    const bool single_dash = arg[1] != '-';
    std::string name = arg.substr(single_dash ? 1 : 2), value;
    const size_t eq = name.find('=');
    const bool has_value = eq != std::string::npos;
    if (has_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const std::string shown = arg.substr(0, arg.find('='));
    if (single_dash && name == "h") name = "help";
    const FlagSpec* flag = nullptr;
    if (!single_dash || name == "help") {
      flag = FindFlag(command.flags, name);
      if (flag == nullptr) flag = FindFlag(globals, name);
    }
    if (flag == nullptr) {
      const std::string next = has_value ? value
                               : i + 1 < args.size() && !IsFlagLike(args[i + 1])
                                   ? args[i + 1]
                                   : "";
      return UnknownFlag(command, globals, shown, name, next);
    }
    if (flag->kind == Kind::kSwitch) {
      if (has_value) {
        return UsageError(&command,
                          absl::StrCat("--", name, " takes no value"));
      }
      value = "1";
    } else if (!has_value) {
      if (i + 1 >= args.size() || IsFlagLike(args[i + 1])) {
        return UsageError(
            &command,
            absl::StrCat(
                "--", name, " needs a value",
                i + 1 < args.size()
                    ? absl::StrCat(" (found ", args[i + 1], "; write --", name,
                                   "=VALUE for a value that starts "
                                   "with -)")
                    : ""));
      }
      value = args[++i];
    }
    std::vector<std::string>& values = out.options[name];
    if (flag->kind != Kind::kRepeated && !values.empty() &&
        values.back() != value) {
      return UsageError(
          &command, absl::StrCat("--", name, " given twice (\"", values.back(),
                                 "\", then \"", value, "\")"));
    }
    values.push_back(value);
  }
  if (out.Has("help")) return out;
  if (out.positional.size() < command.positional.size()) {
    return UsageError(&command,
                      absl::StrCat(command.name, " needs ",
                                   command.positional[out.positional.size()]));
  }
  if (out.positional.size() > command.positional.size()) {
    const std::string& extra = out.positional[command.positional.size()];
    return UsageError(
        &command, command.positional.empty()
                      ? absl::StrCat(command.name,
                                     " takes no arguments, only flags; got \"",
                                     extra, "\"")
                      : absl::StrCat(command.name, " takes ",
                                     absl::StrJoin(command.positional, " "),
                                     " only; got also \"", extra, "\""));
  }
  for (const FlagSpec& f : command.flags) {
    if (f.required && out.Get(f.name).empty()) {
      return UsageError(&command,
                        absl::StrCat(command.name, " needs --", f.name));
    }
  }
  return out;
}

absl::StatusOr<ParsedArgs> ParseCommandLine(
    const std::vector<std::string>& args) {
  // The command's words: the first one (two for a group such as "models")
  // arguments that are neither flags nor flag values.
  std::vector<size_t> words;
  std::string unknown_before;  // A flag before the command no command knows.
  for (size_t i = 0; i < args.size() && words.size() < 2; ++i) {
    const std::string& arg = args[i];
    if (arg == "--") break;
    if (IsFlagLike(arg)) {
      if (arg.find('=') != std::string::npos) continue;
      const std::string name = arg.substr(arg[1] == '-' ? 2 : 1);
      const FlagSpec* f = arg[1] == '-' ? FindAnyFlag(name) : nullptr;
      if (f == nullptr && unknown_before.empty() && words.empty()) {
        unknown_before = arg;
      }
      if (f != nullptr && f->kind != Kind::kSwitch && i + 1 < args.size() &&
          !IsFlagLike(args[i + 1])) {
        ++i;
      }
      continue;
    }
    words.push_back(i);
    if (!IsGroup(args[words[0]])) break;
  }
  if (words.empty()) {
    // Only global flags: --help, or a mistake.
    // No command: the global flags alone (an empty name in messages).
    static const auto* none = new CommandSpec{"", {}, {}, false, ""};
    auto parsed = ParseCommandArgs(*none, GlobalFlags(), args);
    if (!parsed.ok()) return parsed.status();
    if (parsed->Has("help")) {
      parsed->command = nullptr;
      return parsed;
    }
    return UsageError(nullptr, "no command given");
  }
  std::string name = args[words[0]];
  if (IsGroup(name)) {
    std::vector<std::string> subs;
    for (const CommandSpec& c : Commands()) {
      if (absl::StartsWith(c.name, name + " ")) {
        subs.push_back(c.name.substr(name.size() + 1));
      }
    }
    if (words.size() < 2) {
      return UsageError(nullptr, absl::StrCat(name, " needs a subcommand: ",
                                              absl::StrJoin(subs, ", ")));
    }
    absl::StrAppend(&name, " ", args[words[1]]);
  }
  const CommandSpec* command = FindCommand(name);
  if (command == nullptr) {
    if (!unknown_before.empty()) {
      return UsageError(nullptr, absl::StrCat("unknown flag ", unknown_before));
    }
    std::vector<std::string> names;
    for (const CommandSpec& c : Commands()) names.push_back(c.name);
    const std::string near = Nearest(name, names);
    return UsageError(
        nullptr,
        absl::StrCat(
            "unknown command ", name,
            near.empty() ? "" : absl::StrCat("; did you mean ", near, "?")));
  }
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (std::find(words.begin(), words.end(), i) == words.end()) {
      rest.push_back(args[i]);
    }
  }
  return ParseCommandArgs(*command, GlobalFlags(), rest);
}

size_t EditDistance(const std::string& a, const std::string& b) {
  // Optimal string alignment: Levenshtein plus swaps of neighbours.
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] =
          std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

}  // namespace lathe::client
