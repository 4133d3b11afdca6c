#include "server/local_workers.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace lathe::server {

LocalWorkers::LocalWorkers(std::vector<std::vector<std::string>> argvs,
                           std::vector<std::string> log_paths)
    : argvs_(std::move(argvs)), log_paths_(std::move(log_paths)) {}

LocalWorkers::~LocalWorkers() { Stop(10); }

pid_t LocalWorkers::Spawn(size_t i) {
  std::vector<char*> argv;
  for (const auto& a : argvs_[i]) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int log = ::open(log_paths_[i].c_str(),
                   O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_t pid = ::fork();
  if (pid == 0) {
    // A local worker must not outlive its server, even a killed one.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    // Child: unblock the signals the server reserved for its sigwait thread.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_UNBLOCK, &all, nullptr);
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
    }
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  if (log >= 0) ::close(log);
  return pid;
}

absl::Status LocalWorkers::Start() {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < argvs_.size(); ++i) {
    if (::access(argvs_[i][0].c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker binary ", argvs_[i][0], " is not executable"));
    }
    pid_t pid = Spawn(i);
    if (pid < 0) return absl::InternalError("fork failed");
    pids_.push_back(pid);
  }
  supervisor_ = std::thread([this] { Supervise(); });
  return absl::OkStatus();
}

void LocalWorkers::Supervise() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      for (size_t i = 0; i < pids_.size(); ++i) {
        if (pids_[i] <= 0) continue;
        int status = 0;
        if (::waitpid(pids_[i], &status, WNOHANG) == pids_[i]) {
          std::fprintf(
              stderr,
              "lathe-server: local worker %zu exited (%s %d); "
              "restarting it\n",
              i, WIFSIGNALED(status) ? "signal" : "code",
              WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
          pids_[i] = Spawn(i);
        }
      }
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
}

void LocalWorkers::Stop(int grace_s) {
  std::vector<pid_t> pids;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    pids = pids_;
  }
  if (supervisor_.joinable()) supervisor_.join();
  for (pid_t p : pids) {
    if (p > 0) ::kill(p, SIGTERM);
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(grace_s);
  for (pid_t p : pids) {
    if (p <= 0) continue;
    while (true) {
      int status = 0;
      pid_t r = ::waitpid(p, &status, WNOHANG);
      if (r == p || r < 0) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(p, SIGKILL);
        ::waitpid(p, &status, 0);
        break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
}

}  // namespace lathe::server
