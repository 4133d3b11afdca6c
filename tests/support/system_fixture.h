// The plumbing every whole-system test shares, on top of system.h: a suite
// fixture that runs one real lathe-server (one local worker) for all its
// tests, and the CLI round trips the tests make again and again (submit a
// job, wait for it, get it, download it, run a fine-tuned model), reporting
// a failed command through gtest expectations that show its output.
//
// Only the e2e tests link this file (it needs gtest); system.h stays free of
// it for the benchmarks.
#ifndef LATHE_TESTS_SUPPORT_SYSTEM_FIXTURE_H_
#define LATHE_TESTS_SUPPORT_SYSTEM_FIXTURE_H_

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"

namespace lathe::testing {

// Starts `server` (ServerProcess::Start) as an assertion: its failure says
// why the server did not come up. For ASSERT_TRUE(Started(server)).
::testing::AssertionResult Started(ServerProcess& server);

// `r.out` as JSON; a failed expectation showing stdout and stderr when it is
// not (the value is then discarded).
nlohmann::json ParseJson(const CommandResult& r);

// One JSON value per non-blank line of `text`, as `lathe predict --output
// json` and `lathe-train predict` print them; a failed expectation for a line
// that is not JSON (kept, discarded, so row counts still line up).
std::vector<nlohmann::json> ParseJsonLines(const std::string& text);

// What a test hands `lathe submit`.
// The optional fields have initializers so that a braced list may stop
// after the ones a test needs.
struct SubmitArgs {
  std::string task;
  std::string model;
  std::string train_data;
  std::string validation_data = "";  // None when empty.
  // NAME=VALUE, passed as --param in this order; a later one for the same
  // NAME replaces the earlier one.
  std::vector<std::string> params = {};
  // Other flags, appended as given (e.g. {"--min-device-memory-mb", "8"}).
  std::vector<std::string> flags = {};

  // Appends `more` after the params there are, so that they win.
  SubmitArgs& AddParams(const std::vector<std::string>& more) {
    params.insert(params.end(), more.begin(), more.end());
    return *this;
  }
};

// The arguments of `lathe submit ... --output json` for ServerProcess::Cli.
std::vector<std::string> SubmitCommand(const SubmitArgs& args);

// Submits through the CLI and returns the new job's id; a failed expectation
// when the CLI does not exit 0 with JSON ("" is returned then).
std::string SubmitJob(const ServerProcess& server, const SubmitArgs& args);

// `lathe get ID --output json`; a failed expectation unless it exits 0.
nlohmann::json GetJob(const ServerProcess& server, const std::string& id);

// Whether WaitAndGet expects the job to succeed.
enum class JobEnd {
  kAny,        // The caller checks the state (failures are expected too).
  kSucceeded,  // `lathe wait` must exit 0.
};

// `lathe wait ID --timeout TIMEOUT_S`, then GetJob.
nlohmann::json WaitAndGet(const ServerProcess& server, const std::string& id,
                          int timeout_s, JobEnd end);

// `lathe download ID --dest DEST`; a failed expectation unless it exits 0.
// Returns `dest`.
std::string DownloadJob(const ServerProcess& server, const std::string& id,
                        const std::string& dest);

// Runs `lathe-train predict --model MODEL_DIR --task TASK --input INPUT
// [--param P]...` on a downloaded model; a failed expectation unless it
// exits 0. One JSON value per output line.
std::vector<nlohmann::json> TrainPredict(
    const std::string& model_dir, const std::string& task,
    const std::string& input, const std::vector<std::string>& params = {});

// Expects that no process whose command line names `dir` is left: stopped
// processes get a little time to finish exiting (a training child killed
// with its worker goes a moment after it), no more.
void ExpectNoProcessesLeft(const std::string& dir);

// A fixture whose tests share one real lathe-server with one local worker,
// started before the suite's first test and stopped after its last, in a
// fresh directory the tests may write their data to (the server reads it:
// --allow-root). A suite that writes data for all its tests does so in its
// own SetUpTestSuite after calling this one's.
//
// Not thread-safe; suites run one after another, each with its own server.
class SharedServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite() {
    StopSharedServer(/*expect_clean_exit=*/false);
  }
  // Fails the test when the suite's server did not start, saying why.
  void SetUp() override;

  // Stops the server and its workers (SIGTERM, then SIGKILL after a grace
  // period), expecting a clean exit (status 0) when asked to, and that they
  // left no process behind; removes the directory.
  static void StopSharedServer(bool expect_clean_exit);

  // `name` inside the suite's directory.
  static std::string Path(const std::string& name);

  static TempDir* dir_;
  static ServerProcess* server_;

 private:
  static std::string* start_error_;  // Null when the server started.
};

// A SharedServerTest whose directory also holds WriteSentimentData's set:
// train.jsonl (96 rows) and validation.jsonl (32 other rows).
class SentimentServerTest : public SharedServerTest {
 protected:
  static void SetUpTestSuite();
};

}  // namespace lathe::testing

#endif  // LATHE_TESTS_SUPPORT_SYSTEM_FIXTURE_H_
