// A training child process: started in its own process group with its stdout
// on a pipe (the JSON-lines protocol) and its stderr in a log file.
//
// Thread safety: none; one thread owns the child (others signal that thread,
// which then calls Terminate()).
#ifndef LATHE_WORKER_AGENT_CHILD_H_
#define LATHE_WORKER_AGENT_CHILD_H_

#include <sys/types.h>

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lathe::worker {

struct ChildExit {
  bool signaled = false;
  int code = 0;  // exit code, or the signal number when `signaled`
};

class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::vector<std::string>& argv, const std::string& stderr_path);
  ~ChildProcess();

  // Returns the next complete stdout line, waiting up to `timeout`. nullopt
  // when no line arrived in time or stdout reached its end (see eof()).
  std::optional<std::string> ReadLine(absl::Duration timeout);
  bool eof() const { return eof_; }
  // Waits for the child to exit (after stdout ended).
  ChildExit Wait();
  // SIGTERM to the child's process group; SIGKILL after `grace`.
  // Returns when the child is gone.
  void Terminate(absl::Duration grace);
  // Sends `sig` to the child alone (SIGUSR1: write a checkpoint now).
  void Signal(int sig);
  pid_t pid() const { return pid_; }

 private:
  ChildProcess(pid_t pid, int out_fd) : pid_(pid), out_fd_(out_fd) {}
  pid_t pid_;
  int out_fd_;
  std::string buffer_;
  bool eof_ = false;
  std::atomic<bool> reaped_{false};
  ChildExit exit_;
};

}  // namespace lathe::worker

#endif  // LATHE_WORKER_AGENT_CHILD_H_
