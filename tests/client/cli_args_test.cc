#include "client/cli_args.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_split.h"

namespace lathe::client {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The message of the error ParseCommandLine gives for `args`.
std::string ErrorOf(const std::vector<std::string>& args) {
  auto parsed = ParseCommandLine(args);
  EXPECT_FALSE(parsed.ok()) << "accepted: " << testing::PrintToString(args);
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

const std::vector<std::string> kSubmit = {
    "submit",           "--task",       "text-classification", "--model",
    "preset:bert-tiny", "--train-data", "train.jsonl"};

std::vector<std::string> SubmitWith(std::vector<std::string> more) {
  std::vector<std::string> args = kSubmit;
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

TEST(CliArgsTest, ParsesASubmit) {
  auto a = ParseCommandLine(
      SubmitWith({"--param", "epochs=2", "--param=seed=7", "--server", "h:1",
                  "--priority", "-5", "--output=json"}));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_NE(a->command, nullptr);
  EXPECT_EQ(a->command->name, "submit");
  EXPECT_TRUE(a->positional.empty());
  EXPECT_EQ(a->Get("task"), "text-classification");
  EXPECT_EQ(a->All("param"), (std::vector<std::string>{"epochs=2", "seed=7"}));
  EXPECT_EQ(a->Get("server"), "h:1");
  EXPECT_EQ(a->Get("priority"), "-5");  // a negative number is a value
  EXPECT_EQ(a->Get("output"), "json");
  EXPECT_EQ(a->Get("owner", "me"), "me");
}

TEST(CliArgsTest, GlobalFlagsGoBeforeTheCommandToo) {
  auto a =
      ParseCommandLine({"--server", "h:1", "--output", "json", "get", "job-1"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->command->name, "get");
  EXPECT_EQ(a->positional, std::vector<std::string>{"job-1"});
  EXPECT_EQ(a->Get("server"), "h:1");
}

TEST(CliArgsTest, TwoWordCommands) {
  auto a =
      ParseCommandLine({"models", "push", "dir", "--name", "m", "--replace"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->command->name, "models push");
  EXPECT_EQ(a->positional, std::vector<std::string>{"dir"});
  EXPECT_TRUE(a->Has("replace"));
  a = ParseCommandLine({"datasets", "upload", "f.jsonl"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->command->name, "datasets upload");
  EXPECT_THAT(ErrorOf({"models"}),
              HasSubstr("models needs a subcommand: push, list, delete"));
  EXPECT_THAT(ErrorOf({"models", "pish", "d"}),
              HasSubstr("unknown command models pish; did you mean models "
                        "push?"));
}

TEST(CliArgsTest, HelpNeedsNoArguments) {
  auto a = ParseCommandLine({"--help"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->command, nullptr);
  a = ParseCommandLine({"get", "-h"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->Has("help"));
}

TEST(CliArgsTest, AHyperparameterAsAFlagPointsToParam) {
  EXPECT_THAT(ErrorOf(SubmitWith({"--method", "lora", "--param", "lora_r=4"})),
              StartsWith("unknown flag --method for submit; did you mean "
                         "--param method=lora?\nusage: lathe submit --task"));
  EXPECT_THAT(ErrorOf(SubmitWith({"--learning-rate=1e-3"})),
              HasSubstr("did you mean --param learning_rate=1e-3?"));
  EXPECT_THAT(ErrorOf(SubmitWith({"--epocs", "3"})),
              HasSubstr("did you mean --param epochs=3?"));
  EXPECT_THAT(
      ErrorOf({"predict", "job:j", "--input", "f", "--max-new-tokens", "8"}),
      HasSubstr("unknown flag --max-new-tokens for predict; did you "
                "mean --param max_new_tokens=8?"));
}

TEST(CliArgsTest, UnknownFlagsNameTheNearestFlag) {
  EXPECT_THAT(ErrorOf(SubmitWith({"--validaton-data", "v"})),
              HasSubstr("unknown flag --validaton-data for submit; did you "
                        "mean --validation-data?"));
  EXPECT_THAT(ErrorOf(SubmitWith({"--validation", "v"})),
              HasSubstr("did you mean --validation-data?"));
  EXPECT_THAT(ErrorOf({"submit", "--train_data", "t"}),
              HasSubstr("did you mean --train-data?"));
  EXPECT_THAT(ErrorOf({"download", "j", "--dst", "d"}),
              HasSubstr("unknown flag --dst for download; did you mean "
                        "--dest?"));
  EXPECT_THAT(ErrorOf({"get", "j", "-output", "json"}),
              HasSubstr("unknown flag -output for get; did you mean "
                        "--output?"));
  // Nothing near: the flags the command takes.
  EXPECT_THAT(ErrorOf(SubmitWith({"--bogus-flag", "3"})),
              HasSubstr("unknown flag --bogus-flag for submit; it takes "
                        "--task, --model, --train-data"));
  // A flag of another command says whose it is.
  EXPECT_THAT(ErrorOf({"get", "j", "--dest", "d"}),
              HasSubstr("unknown flag --dest for get; --dest is a flag of "
                        "download"));
  EXPECT_THAT(ErrorOf({"cancel", "j", "--xyzzy"}),
              HasSubstr("unknown flag --xyzzy for cancel; cancel takes no "
                        "flags"));
}

TEST(CliArgsTest, EveryCommandRefusesUnknownFlags) {
  for (const CommandSpec& c : Commands()) {
    std::vector<std::string> args = absl::StrSplit(c.name, ' ');
    for (const std::string& p : c.positional) args.push_back(p);
    args.push_back("--bogus-flag");
    args.push_back("3");
    EXPECT_THAT(ErrorOf(args),
                StartsWith("unknown flag --bogus-flag for " + c.name))
        << c.name;
  }
}

TEST(CliArgsTest, MissingValues) {
  EXPECT_THAT(ErrorOf({"submit", "--task"}),
              StartsWith("--task needs a value\nusage: lathe submit"));
  EXPECT_THAT(ErrorOf({"submit", "--task", "--model", "m"}),
              StartsWith("--task needs a value (found --model; write "
                         "--task=VALUE for a value that starts with -)"));
  EXPECT_THAT(ErrorOf({"--server"}), StartsWith("--server needs a value"));
  EXPECT_THAT(ErrorOf({"models", "push", "d", "--name", "n", "--replace=1"}),
              StartsWith("--replace takes no value"));
}

TEST(CliArgsTest, RequiredFlagsAndArguments) {
  EXPECT_THAT(ErrorOf({"submit", "--task", "t", "--model", "m"}),
              StartsWith("submit needs --train-data"));
  EXPECT_THAT(ErrorOf({"get"}), StartsWith("get needs JOB\nusage: lathe get "
                                           "JOB"));
  EXPECT_THAT(ErrorOf({"download", "j"}), StartsWith("download needs --dest"));
  EXPECT_THAT(ErrorOf({"get", "a", "b"}),
              StartsWith("get takes JOB only; got also \"b\""));
  EXPECT_THAT(ErrorOf({"list", "x"}),
              StartsWith("list takes no arguments, only flags; got \"x\""));
  EXPECT_THAT(ErrorOf({"sumbit"}),
              StartsWith("unknown command sumbit; did you mean submit?"));
  EXPECT_THAT(ErrorOf({"--output", "json"}), StartsWith("no command given"));
}

TEST(CliArgsTest, AFlagTwiceMustAgree) {
  EXPECT_THAT(ErrorOf(SubmitWith({"--train-data", "other.jsonl"})),
              StartsWith("--train-data given twice (\"train.jsonl\", then "
                         "\"other.jsonl\")"));
  EXPECT_TRUE(
      ParseCommandLine(SubmitWith({"--task", "text-classification"})).ok());
}

TEST(CliArgsTest, DoubleDashEndsTheFlags) {
  auto a = ParseCommandLine({"get", "--", "--odd-id"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->positional, std::vector<std::string>{"--odd-id"});
}

TEST(CliArgsTest, EditDistance) {
  EXPECT_EQ(EditDistance("", ""), 0u);
  EXPECT_EQ(EditDistance("dest", "dst"), 1u);
  EXPECT_EQ(EditDistance("epcohs", "epochs"), 1u);  // a swap
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
}

}  // namespace
}  // namespace lathe::client
