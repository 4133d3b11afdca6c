// Runs worker agents as child processes of lathe-server (`--local-workers N`),
// restarting one that exits unexpectedly, and stopping all on Stop().
#ifndef LATHE_SERVER_LOCAL_WORKERS_H_
#define LATHE_SERVER_LOCAL_WORKERS_H_

#include <sys/types.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace lathe::server {

class LocalWorkers {
 public:
  // `argv_for(i)` gives the full command line of worker i.
  LocalWorkers(std::vector<std::vector<std::string>> argvs,
               std::vector<std::string> log_paths);
  ~LocalWorkers();
  absl::Status Start();
  // SIGTERM to every worker, SIGKILL to those still alive after `grace_s`.
  void Stop(int grace_s);

 private:
  pid_t Spawn(size_t i);
  void Supervise();

  const std::vector<std::vector<std::string>> argvs_;
  const std::vector<std::string> log_paths_;
  absl::Mutex mu_;
  std::vector<pid_t> pids_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread supervisor_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_LOCAL_WORKERS_H_
