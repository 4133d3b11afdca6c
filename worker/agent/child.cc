#include "worker/agent/child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace lathe::worker {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& stderr_path) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  int err = ::open(stderr_path.c_str(),
                   O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (err < 0) {
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    return absl::InternalError(
        absl::StrCat("cannot open ", stderr_path, ": ", std::strerror(errno)));
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    ::close(err);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    // The child must not outlive its agent: its events would go nowhere.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_UNBLOCK, &all, nullptr);
    ::dup2(pipefd[1], 1);
    ::dup2(err, 2);
    ::execv(args[0], args.data());
    dprintf(2, "cannot execute %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent, to win the race
  ::close(pipefd[1]);
  ::close(err);
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, pipefd[0]));
}

ChildProcess::~ChildProcess() {
  if (!reaped_) Terminate(absl::Seconds(1));
  if (out_fd_ >= 0) ::close(out_fd_);
}

std::optional<std::string> ChildProcess::ReadLine(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (eof_) {
      if (buffer_.empty()) return std::nullopt;
      std::string line;
      line.swap(buffer_);
      return line;
    }
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) return std::nullopt;
    pollfd p{out_fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    char buf[8192];
    ssize_t n = ::read(out_fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      eof_ = true;
      continue;
    }
    buffer_.append(buf, static_cast<size_t>(n));
    // A single line longer than 1 MiB is not protocol; cut it off.
    if (buffer_.size() > (1 << 20) && buffer_.find('\n') == std::string::npos) {
      buffer_.push_back('\n');
    }
  }
}

ChildExit ChildProcess::Wait() {
  if (reaped_) return exit_;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_.signaled = WIFSIGNALED(status);
  exit_.code = exit_.signaled ? WTERMSIG(status) : WEXITSTATUS(status);
  reaped_ = true;
  return exit_;
}

void ChildProcess::Signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

void ChildProcess::Terminate(absl::Duration grace) {
  if (reaped_) return;
  ::kill(-pid_, SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  while (absl::Now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_.signaled = WIFSIGNALED(status);
      exit_.code = exit_.signaled ? WTERMSIG(status) : WEXITSTATUS(status);
      reaped_ = true;
      return;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  ::kill(-pid_, SIGKILL);
  Wait();
}

}  // namespace lathe::worker
