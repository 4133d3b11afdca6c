#include "common/uri_policy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lathe {
namespace {

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

AddressClass ClassifyV4(const unsigned char a[4]) {
  if (a[0] == 127) return AddressClass::kLoopback;
  if (a[0] == 0) return AddressClass::kUnspecified;
  if (a[0] == 169 && a[1] == 254) {
    return a[2] == 169 && a[3] == 254 ? AddressClass::kMetadata
                                      : AddressClass::kLinkLocal;
  }
  // Alibaba Cloud's metadata service.
  if (a[0] == 100 && a[1] == 100 && a[2] == 100 && a[3] == 200) {
    return AddressClass::kMetadata;
  }
  return AddressClass::kPublic;
}

const char* ClassName(AddressClass c) {
  switch (c) {
    case AddressClass::kLoopback:
      return "a loopback address";
    case AddressClass::kLinkLocal:
      return "a link-local address";
    case AddressClass::kMetadata:
      return "a cloud metadata address";
    case AddressClass::kUnspecified:
      return "an unspecified address";
    case AddressClass::kPublic:
      break;
  }
  return "an address";
}

}  // namespace

std::string HttpUrl::Display() const {
  const bool v6 = host.find(':') != std::string::npos;
  const bool default_port =
      (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
  std::string path = target.substr(0, target.find('?'));
  return absl::StrCat(scheme, "://", v6 ? "[" : "", host, v6 ? "]" : "",
                      default_port ? "" : absl::StrCat(":", port), path);
}

absl::StatusOr<HttpUrl> ParseHttpUrl(const std::string& url,
                                     const std::string& field) {
  if (url.size() > 2048) return Invalid(field, "URL longer than 2048 bytes");
  for (unsigned char c : url) {
    if (c <= 0x20 || c == 0x7f) {
      return Invalid(field, "URL has a space or control character");
    }
  }
  HttpUrl out;
  std::string rest;
  const std::string lower = absl::AsciiStrToLower(url.substr(0, 8));
  if (absl::StartsWith(lower, "https://")) {
    out.scheme = "https";
    out.port = 443;
    rest = url.substr(8);
  } else if (absl::StartsWith(lower, "http://")) {
    out.scheme = "http";
    out.port = 80;
    rest = url.substr(7);
  } else {
    return Invalid(field, "must be an http:// or https:// URL");
  }
  const size_t slash = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, slash);
  out.target = slash == std::string::npos ? "/" : rest.substr(slash);
  out.target = out.target.substr(0, out.target.find('#'));
  if (out.target.empty() || out.target[0] == '?') out.target = "/" + out.target;
  if (authority.find('@') != std::string::npos) {
    return Invalid(field, "URL must not carry a user name or password");
  }
  std::string port_text;
  if (absl::StartsWith(authority, "[")) {
    const size_t close = authority.find(']');
    if (close == std::string::npos) return Invalid(field, "unclosed [ in URL");
    out.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return Invalid(field, "bad text after ] in URL");
      port_text = after.substr(1);
    }
    unsigned char buf[16];
    if (inet_pton(AF_INET6, out.host.c_str(), buf) != 1) {
      return Invalid(field, "bad IPv6 address in URL");
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  out.host = absl::AsciiStrToLower(out.host);
  if (out.host.empty()) return Invalid(field, "URL has no host");
  if (!port_text.empty()) {
    int port = 0;
    if (!absl::SimpleAtoi(port_text, &port) || port < 1 || port > 65535) {
      return Invalid(field, "URL port must be in [1, 65535]");
    }
    out.port = port;
  }
  return out;
}

AddressClass ClassifyAddress(const std::string& ip) {
  unsigned char a[16];
  if (inet_pton(AF_INET, ip.c_str(), a) == 1) return ClassifyV4(a);
  if (inet_pton(AF_INET6, ip.c_str(), a) != 1) return AddressClass::kPublic;
  static const unsigned char kZero[16] = {};
  if (std::memcmp(a, kZero, 16) == 0) return AddressClass::kUnspecified;
  if (std::memcmp(a, kZero, 15) == 0 && a[15] == 1) {
    return AddressClass::kLoopback;  // ::1
  }
  // IPv4-mapped (::ffff:a.b.c.d): the IPv4 address decides.
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0,    0,
                                            0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a, kMapped, 12) == 0) return ClassifyV4(a + 12);
  if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return AddressClass::kLinkLocal;
  // AWS's IPv6 metadata service, fd00:ec2::254.
  static const unsigned char kAws[16] = {0xfd, 0, 0x0e, 0xc2, 0, 0, 0,    0,
                                         0,    0, 0,    0,    0, 0, 0x02, 0x54};
  if (std::memcmp(a, kAws, 16) == 0) return AddressClass::kMetadata;
  return AddressClass::kPublic;
}

UriPolicy::UriPolicy(std::vector<std::string> hosts) {
  for (auto& h : hosts) {
    h = absl::AsciiStrToLower(h);
    if (absl::StartsWith(h, "[") && absl::EndsWith(h, "]")) {
      h = h.substr(1, h.size() - 2);
    }
    if (!h.empty()) hosts_.push_back(std::move(h));
  }
}

bool UriPolicy::Named(const std::string& host) const {
  for (const auto& h : hosts_) {
    if (h == host) return true;
    if (absl::StartsWith(h, "*.") && !IsIpLiteral(host) &&
        absl::EndsWith(host, h.substr(1))) {
      return true;
    }
  }
  return false;
}

absl::Status UriPolicy::Check(const HttpUrl& url,
                              const std::string& field) const {
  if (hosts_.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat(field, ": host ", url.host,
                     " is not allowed: the server allows no outbound URLs "
                     "(lathe-server --allow-uri-host HOST names the hosts it "
                     "may call)"));
  }
  // A pattern never admits a literal; a literal is admitted only by itself.
  bool exact = false;
  for (const auto& h : hosts_) exact |= h == url.host;
  if (!exact && (IsIpLiteral(url.host) || !Named(url.host))) {
    return absl::PermissionDeniedError(
        absl::StrCat(field, ": host ", url.host,
                     " is not allowed (lathe-server --allow-uri-host)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> UriPolicy::Resolve(const HttpUrl& url,
                                               const std::string& field) const {
  if (absl::Status s = Check(url, field); !s.ok()) return s;
  // Special addresses pass only for a host named exactly: the literal
  // itself, or a name such as "localhost" that the admin wrote down.
  bool exact = false;
  for (const auto& h : hosts_) exact |= h == url.host;
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  const int rc = getaddrinfo(url.host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        field, ": cannot resolve ", url.host, ": ", gai_strerror(rc)));
  }
  std::string chosen;
  absl::Status refused;
  for (auto* ai = res; ai != nullptr; ai = ai->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* addr =
        ai->ai_family == AF_INET
            ? static_cast<const void*>(
                  &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr)
            : static_cast<const void*>(
                  &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr);
    if (inet_ntop(ai->ai_family, addr, text, sizeof(text)) == nullptr) continue;
    const AddressClass c = ClassifyAddress(text);
    const bool allowed =
        c == AddressClass::kPublic ||
        (exact && c != AddressClass::kUnspecified &&
         (IsIpLiteral(url.host) || c == AddressClass::kLoopback));
    if (!allowed) {
      // Every address must pass: a name that resolves to one public and
      // one loopback address is refused, not tried in turn.
      refused = absl::PermissionDeniedError(
          absl::StrCat(field, ": host ", url.host, " resolves to ",
                       ClassName(c), " (", text, "), which is refused"));
      break;
    }
    if (chosen.empty()) chosen = text;
  }
  freeaddrinfo(res);
  if (!refused.ok()) return refused;
  if (chosen.empty()) {
    return absl::UnavailableError(
        absl::StrCat(field, ": ", url.host, " has no usable address"));
  }
  return chosen;
}

}  // namespace lathe
