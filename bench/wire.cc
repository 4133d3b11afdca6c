#include "bench/wire.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace lathe::bench {

namespace {

using Clock = std::chrono::steady_clock;

int Connect(const std::string& host, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads until EOF; the bytes read. `head` gets the first `keep` bytes.
int64_t Drain(int fd, std::string* head, size_t keep) {
  std::vector<char> buf(1 << 20);
  int64_t total = 0;
  while (true) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    if (head != nullptr && head->size() < keep) {
      head->append(buf.data(),
                   std::min(static_cast<size_t>(n), keep - head->size()));
    }
    total += n;
  }
  return total;
}

}  // namespace

int64_t SendfileLoopback(const std::string& path, int64_t size,
                         double* seconds) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener);
    return -1;
  }
  std::thread sender([&] {
    const int conn = ::accept(listener, nullptr, nullptr);
    const int file = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    off_t offset = 0;
    while (offset < size) {
      const ssize_t n =
          ::sendfile(conn, file, &offset, static_cast<size_t>(size - offset));
      if (n <= 0) break;
    }
    ::close(file);
    ::close(conn);
  });
  const auto t0 = Clock::now();
  const int fd = Connect("127.0.0.1", ntohs(addr.sin_port));
  const int64_t got = fd < 0 ? -1 : Drain(fd, nullptr, 0);
  *seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (fd >= 0) ::close(fd);
  sender.join();
  ::close(listener);
  return got;
}

int64_t HttpGet(const std::string& hostport, const std::string& path,
                const std::string& authorization, double* seconds) {
  const size_t colon = hostport.rfind(':');
  const auto t0 = Clock::now();
  const int fd =
      Connect(hostport.substr(0, colon), std::stoi(hostport.substr(colon + 1)));
  if (fd < 0) return -1;
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + hostport +
                              "\r\nAuthorization: " + authorization +
                              "\r\nConnection: close\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return -1;
  }
  std::string head;
  const int64_t total = Drain(fd, &head, 8192);
  *seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  ::close(fd);
  const size_t end = head.find("\r\n\r\n");
  if (head.rfind("HTTP/1.1 200", 0) != 0 || end == std::string::npos) {
    return -1;
  }
  return total - static_cast<int64_t>(end + 4);
}

}  // namespace lathe::bench
