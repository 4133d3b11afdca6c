#include "tests/support/system_fixture.h"

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <sstream>

namespace lathe::testing {

using nlohmann::json;

::testing::AssertionResult Started(ServerProcess& server) {
  std::string why;
  if (server.Start(&why)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << why;
}

json ParseJson(const CommandResult& r) {
  json j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out << r.err;
  return j;
}

std::vector<json> ParseJsonLines(const std::string& text) {
  std::vector<json> rows;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    rows.push_back(json::parse(line, nullptr, false));
    EXPECT_FALSE(rows.back().is_discarded()) << "not JSON: " << line;
  }
  return rows;
}

std::vector<std::string> SubmitCommand(const SubmitArgs& args) {
  std::vector<std::string> argv = {"submit",       "--task",   args.task,
                                   "--model",      args.model, "--train-data",
                                   args.train_data};
  if (!args.validation_data.empty()) {
    argv.push_back("--validation-data");
    argv.push_back(args.validation_data);
  }
  // The CLI refuses a name given twice: a later NAME=VALUE replaces the
  // earlier one in its place instead.
  std::vector<std::string> params;
  for (const std::string& p : args.params) {
    const std::string name = p.substr(0, p.find('='));
    auto same = std::find_if(
        params.begin(), params.end(),
        [&](const std::string& q) { return q.substr(0, q.find('=')) == name; });
    if (same != params.end()) {
      *same = p;
    } else {
      params.push_back(p);
    }
  }
  for (const std::string& p : params) {
    argv.push_back("--param");
    argv.push_back(p);
  }
  argv.insert(argv.end(), args.flags.begin(), args.flags.end());
  argv.push_back("--output");
  argv.push_back("json");
  return argv;
}

std::string SubmitJob(const ServerProcess& server, const SubmitArgs& args) {
  CommandResult r = server.Cli(SubmitCommand(args));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const json job = ParseJson(r);
  return job.is_object() ? job.value("id", "") : "";
}

json GetJob(const ServerProcess& server, const std::string& id) {
  CommandResult get = server.Cli({"get", id, "--output", "json"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  return ParseJson(get);
}

json WaitAndGet(const ServerProcess& server, const std::string& id,
                int timeout_s, JobEnd end) {
  CommandResult wait =
      server.Cli({"wait", id, "--timeout", std::to_string(timeout_s)});
  if (end == JobEnd::kSucceeded) {
    EXPECT_EQ(wait.exit_code, 0) << wait.out << wait.err;
  }
  return GetJob(server, id);
}

std::string DownloadJob(const ServerProcess& server, const std::string& id,
                        const std::string& dest) {
  CommandResult dl = server.Cli({"download", id, "--dest", dest});
  EXPECT_EQ(dl.exit_code, 0) << dl.out << dl.err;
  return dest;
}

std::vector<json> TrainPredict(const std::string& model_dir,
                               const std::string& task,
                               const std::string& input,
                               const std::vector<std::string>& params) {
  std::vector<std::string> argv = {BinDir() + "/lathe-train",
                                   "predict",
                                   "--model",
                                   model_dir,
                                   "--task",
                                   task,
                                   "--input",
                                   input};
  for (const std::string& p : params) {
    argv.push_back("--param");
    argv.push_back(p);
  }
  CommandResult r = RunCommand(argv);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return ParseJsonLines(r.out);
}

void ExpectNoProcessesLeft(const std::string& dir) {
  std::vector<pid_t> left;
  EXPECT_TRUE(WaitUntil(
      [&] {
        left = ProcessesMatching(dir);
        return left.empty();
      },
      std::chrono::seconds(10)))
      << "processes left behind: " << ::testing::PrintToString(left);
}

TempDir* SharedServerTest::dir_ = nullptr;
ServerProcess* SharedServerTest::server_ = nullptr;
std::string* SharedServerTest::start_error_ = nullptr;

void SharedServerTest::SetUpTestSuite() {
  dir_ = new TempDir();
  server_ = new ServerProcess(dir_->path() + "/server", 1,
                              {"--allow-root", dir_->path()});
  std::string why;
  if (!server_->Start(&why)) start_error_ = new std::string(why);
}

void SharedServerTest::SetUp() {
  ASSERT_TRUE(start_error_ == nullptr)
      << "lathe-server did not start: " << *start_error_;
}

void SharedServerTest::StopSharedServer(bool expect_clean_exit) {
  if (server_ != nullptr) {
    const int status = server_->Stop();
    if (expect_clean_exit) {
      // A clean stop: SIGTERM drains and the process exits 0.
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "lathe-server did not exit cleanly: status " << status;
    }
    delete server_;
    server_ = nullptr;
  }
  delete start_error_;
  start_error_ = nullptr;
  // Stopping the server stops its workers and their children.
  if (dir_ != nullptr) ExpectNoProcessesLeft(dir_->path());
  delete dir_;
  dir_ = nullptr;
}

std::string SharedServerTest::Path(const std::string& name) {
  return dir_->path() + "/" + name;
}

void SentimentServerTest::SetUpTestSuite() {
  SharedServerTest::SetUpTestSuite();
  WriteSentimentData(Path("train.jsonl"), 96, 0);
  WriteSentimentData(Path("validation.jsonl"), 32, 1);
}

}  // namespace lathe::testing
