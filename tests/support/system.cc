#include "tests/support/system.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/channel.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace lathe::testing {
namespace {

// Reads both pipes until they close, without deadlocking on a full pipe.
void Drain(int out_fd, int err_fd, std::string* out, std::string* err) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open = 2;
  char buf[65536];
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      } else {
        (i == 0 ? out : err)->append(buf, static_cast<size_t>(n));
      }
    }
  }
}

pid_t SpawnWithPipes(const std::vector<std::string>& argv, int* out_fd,
                     int* err_fd) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return -1;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  *out_fd = out[0];
  *err_fd = err[0];
  return pid;
}

// Starts `argv` with stdout and stderr appended to `log`.
pid_t SpawnLogged(const std::vector<std::string>& argv,
                  const std::string& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

std::string BinDir() { return LATHE_TEST_BIN_DIR; }

CommandResult RunCommand(const std::vector<std::string>& argv) {
  CommandResult r;
  int out_fd = -1, err_fd = -1;
  pid_t pid = SpawnWithPipes(argv, &out_fd, &err_fd);
  if (pid < 0) return r;
  Drain(out_fd, err_fd, &r.out, &r.err);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

ServerProcess::ServerProcess(std::string data_dir, int local_workers,
                             std::vector<std::string> extra)
    : data_dir_(std::move(data_dir)),
      local_workers_(local_workers),
      extra_(std::move(extra)) {}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Stop(10);
}

bool ServerProcess::Start(std::string* why) {
  std::filesystem::remove(data_dir_ + "/server.json");
  std::filesystem::create_directories(data_dir_ + "/logs");
  std::vector<std::string> argv = {BinDir() + "/lathe-server",
                                   "--listen",
                                   listen_,
                                   "--metrics-listen",
                                   "127.0.0.1:0",
                                   "--data-dir",
                                   data_dir_,
                                   "--local-workers",
                                   std::to_string(local_workers_)};
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  const std::string log = data_dir_ + "/logs/server.log";
  pid_ = SpawnLogged(argv, log);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      std::ifstream in(log);
      std::stringstream ss;
      ss << in.rdbuf();
      *why = "lathe-server exited early: " + ss.str();
      return false;
    }
    std::ifstream in(data_dir_ + "/server.json");
    if (in) {
      auto info = nlohmann::json::parse(in, nullptr, false);
      if (!info.is_discarded()) {
        grpc_ = info.value("grpc", "");
        metrics_ = info.value("metrics", "");
        http_ = info.value("http", "");
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (grpc_.empty()) {
    *why = "lathe-server did not write server.json";
    return false;
  }
  auto channel = grpc::CreateChannel(grpc_, grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(2));
    ctx.set_wait_for_ready(true);
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    if (health->Check(&ctx, req, &resp).ok() &&
        resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return true;
    }
  }
  *why = "health check never said SERVING";
  return false;
}

int ServerProcess::Stop(int grace_s) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(grace_s);
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
  return status;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

CommandResult ServerProcess::Cli(const std::vector<std::string>& args) const {
  return CliAs(admin_token_file(), args);
}

CommandResult ServerProcess::CliAs(const std::string& token_file,
                                   const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {BinDir() + "/lathe", "--server", grpc_};
  if (!token_file.empty()) {
    argv.push_back("--token-file");
    argv.push_back(token_file);
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

std::shared_ptr<grpc::Channel> ServerProcess::ChannelAs(
    const std::string& token_file) const {
  std::ifstream in(token_file);
  std::string token;
  std::getline(in, token);
  auto channel = MakeChannel(grpc_, ChannelOptions{token, {}});
  EXPECT_TRUE(channel.ok()) << channel.status();
  return channel.ok() ? *channel : nullptr;
}

std::string ServerProcess::NewToken(const std::string& name,
                                    const std::string& team,
                                    const std::string& role) const {
  CommandResult who = Cli({"users", "list", "--output", "json"});
  if (who.out.find("\"" + name + "\"") == std::string::npos) {
    CommandResult made =
        Cli({"users", "create", name, "--team", team, "--role", role});
    if (made.exit_code != 0) {
      ADD_FAILURE() << "users create " << name << ": " << made.err;
      return "";
    }
  }
  CommandResult r =
      Cli({"tokens", "create", "--user", name, "--output", "json"});
  auto parsed = nlohmann::json::parse(r.out, nullptr, false);
  if (r.exit_code != 0 || parsed.is_discarded() || !parsed.contains("token")) {
    ADD_FAILURE() << "tokens create " << name << ": " << r.err;
    return "";
  }
  std::filesystem::create_directories(data_dir_ + "/tokens");
  static int serial = 0;
  const std::string path =
      data_dir_ + "/tokens/" + name + "-" + std::to_string(++serial) + ".token";
  {
    std::ofstream out(path);
    out << parsed["token"].get<std::string>() << "\n";
  }
  std::filesystem::permissions(path, std::filesystem::perms::owner_read |
                                         std::filesystem::perms::owner_write);
  return path;
}

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv,
                                     const std::string& log) {
  pid_ = SpawnLogged(argv, log);
}

BackgroundProcess::~BackgroundProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(15);
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) != pid_) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string HttpGet(const std::string& addr, const std::string& path) {
  auto colon = addr.rfind(':');
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(addr.substr(colon + 1))));
  ::inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + addr + "\r\n\r\n";
  (void)!::write(fd, req.data(), req.size());
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0)
    resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  auto body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

std::vector<pid_t> ProcessesMatching(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
    // A zombie has an empty command line; it is gone for our purposes.
    if (cmd.find(needle) != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

std::vector<pid_t> AgentProcesses(const std::string& work_dir,
                                  const std::string& job_id) {
  // Agents first: a child started in between is then in neither list,
  // rather than taken for an agent.
  const std::vector<pid_t> under = ProcessesMatching(work_dir);
  const std::vector<pid_t> children = ProcessesMatching("jobs/" + job_id);
  std::vector<pid_t> agents;
  for (pid_t p : under) {
    if (std::find(children.begin(), children.end(), p) == children.end()) {
      agents.push_back(p);
    }
  }
  return agents;
}

bool WaitUntil(const std::function<bool()>& condition,
               std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
}

void WriteSentimentData(const std::string& path, int rows, int offset) {
  static const char* const kPositive[] = {"great", "excellent", "wonderful",
                                          "happy", "love",      "superb",
                                          "fine",  "nice"};
  static const char* const kNegative[] = {
      "terrible", "awful", "horrible", "sad", "hate", "poor", "bad", "worst"};
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    const bool pos = (i + offset) % 2 == 0;
    const auto& words = pos ? kPositive : kNegative;
    nlohmann::json row = {
        {"text", std::string("the movie was ") + words[(i * 3 + offset) % 8] +
                     " and the food was " + words[(i * 5 + 1 + offset) % 8]},
        {"label", pos ? "positive" : "negative"}};
    out << row.dump() << "\n";
  }
}

}  // namespace lathe::testing
