// Helpers for whole-system tests: start the real lathe-server (with local
// worker agents) on loopback ports chosen by the kernel, wait until its health
// service says SERVING, run the real `lathe` CLI, and always stop what was
// started. Nothing here is faked.
#ifndef LATHE_TESTS_SUPPORT_SYSTEM_H_
#define LATHE_TESTS_SUPPORT_SYSTEM_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace grpc {
class Channel;
}

namespace lathe::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `argv` to completion, capturing stdout and stderr.
CommandResult RunCommand(const std::vector<std::string>& argv);

// Directory of the built binaries (set by CMake).
std::string BinDir();

class ServerProcess {
 public:
  // `data_dir` must exist. `extra` flags are appended.
  ServerProcess(std::string data_dir, int local_workers,
                std::vector<std::string> extra = {});
  ~ServerProcess();
  // Starts and waits (up to 60 s) for server.json and a SERVING health check.
  // Returns false with a reason in *why on failure.
  bool Start(std::string* why);
  // SIGTERM, then SIGKILL after `grace_s`. Returns the exit status.
  int Stop(int grace_s = 20);
  // SIGKILL at once, as a crash would.
  void Kill();
  const std::string& grpc_address() const { return grpc_; }
  const std::string& metrics_address() const { return metrics_; }
  // HOST:PORT of the HTTP listener; empty without --http-listen.
  const std::string& http_address() const { return http_; }
  const std::string& data_dir() const { return data_dir_; }
  // Listen on this address instead of a free port (to restart in place).
  void SetListen(const std::string& addr) { listen_ = addr; }
  pid_t pid() const { return pid_; }
  // Runs `lathe --server ADDR --token-file ADMIN_TOKEN args...`: as the
  // first admin, whose token the server wrote at its first start.
  CommandResult Cli(const std::vector<std::string>& args) const;
  // Runs `lathe --server ADDR args...` with no token of its own.
  CommandResult CliAs(const std::string& token_file,
                      const std::vector<std::string>& args) const;
  // DATA_DIR/admin.token.
  std::string admin_token_file() const { return data_dir_ + "/admin.token"; }
  // A channel to the server that sends the admin's token on every call.
  std::shared_ptr<grpc::Channel> AdminChannel() const {
    return ChannelAs(admin_token_file());
  }
  // A channel that sends the token in `token_file` on every call.
  std::shared_ptr<grpc::Channel> ChannelAs(const std::string& token_file) const;
  // Creates user `name` of `team` with `role` (admin, member, viewer or
  // worker) unless it exists, and a new token for it in
  // DATA_DIR/tokens/NAME-N.token (mode 0600); returns the file's path.
  // Fails the calling test (ADD_FAILURE) and returns "" when a call fails.
  std::string NewToken(const std::string& name, const std::string& team,
                       const std::string& role) const;

 private:
  std::string data_dir_;
  int local_workers_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  std::string listen_ = "127.0.0.1:0";
  std::string grpc_;
  std::string metrics_;
  std::string http_;
};

// A process that runs for the life of the object: SIGTERM, then SIGKILL, on
// destruction. Its stdout and stderr go to `log`.
class BackgroundProcess {
 public:
  BackgroundProcess(const std::vector<std::string>& argv,
                    const std::string& log);
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// GET http://addr/path over a plain socket; returns the body ("" on error).
std::string HttpGet(const std::string& addr, const std::string& path);

// Writes a small, clearly separable sentiment set in JSONL to `path`: `rows`
// rows, "positive" and "negative" alternating (from `offset`'s parity), each
// text holding two sentiment words of its label.
void WriteSentimentData(const std::string& path, int rows, int offset);

// Process ids whose command line contains `needle`.
std::vector<pid_t> ProcessesMatching(const std::string& needle);

// The worker agent (or agents) whose command line names `work_dir` (its
// --work-dir), without the training child of job `job_id` that runs under
// that directory too: what a test kills to make a worker vanish.
std::vector<pid_t> AgentProcesses(const std::string& work_dir,
                                  const std::string& job_id);

// Calls `condition` every `poll` until it returns true or `timeout` has
// passed, and returns its last answer. Whole-system tests wait with this for
// what a background process does in its own time (a worker registering, a
// job reaching a step, a log line appearing) instead of assuming it has
// happened or sleeping a fixed time. `condition` runs at least once.
bool WaitUntil(const std::function<bool()>& condition,
               std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll = std::chrono::milliseconds(50));

}  // namespace lathe::testing

#endif  // LATHE_TESTS_SUPPORT_SYSTEM_H_
