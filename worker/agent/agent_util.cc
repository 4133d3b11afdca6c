#include "worker/agent/agent_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace lathe::worker {

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

void Log(const std::string& msg) {
  std::fprintf(stderr, "lathe-worker: %s\n", msg.c_str());
}

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok =
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) return absl::InternalError("no free loopback port");
  return static_cast<int>(ntohs(addr.sin_port));
}

lathe::v1::FailureKind FailureKindOf(const ChildExit& exit) {
  if (!exit.signaled && exit.code == 2) {
    return lathe::v1::FAILURE_KIND_INVALID_INPUT;
  }
  if (!exit.signaled && exit.code == 3) {
    return lathe::v1::FAILURE_KIND_OUT_OF_MEMORY;
  }
  return lathe::v1::FAILURE_KIND_CRASH;
}

std::string DescribeExit(const ChildExit& exit) {
  return exit.signaled ? absl::StrCat("killed by signal ", exit.code)
                       : absl::StrCat("exited with code ", exit.code);
}

}  // namespace lathe::worker
