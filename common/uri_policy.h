// Which outbound URLs the server (webhooks) and workers (remote data) may
// call: the admin names the hosts (lathe-server --allow-uri-host), and the
// addresses a name resolves to are checked before connecting, so that a
// job cannot point the server at itself, its network neighbours' loopback
// services or a cloud metadata endpoint (server-side request forgery).
#ifndef LATHE_COMMON_URI_POLICY_H_
#define LATHE_COMMON_URI_POLICY_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lathe {

// An http:// or https:// URL, split.
struct HttpUrl {
  std::string scheme;  // "http" or "https"
  std::string host;    // lower-case; an IPv6 literal without brackets
  int port = 0;        // the scheme's default when the URL names none
  std::string target;  // path and query, "/" when empty
  // scheme://host[:port]/path without the query or any user info: safe to
  // show in events and logs (a query may carry a secret).
  std::string Display() const;
};

// INVALID_ARGUMENT naming `field` for anything but http(s)://HOST[:PORT][/...]
// of at most 2048 bytes, with no user info and no control characters.
absl::StatusOr<HttpUrl> ParseHttpUrl(const std::string& url,
                                     const std::string& field);

// Special address classes that no named host may resolve to.
enum class AddressClass {
  kPublic,
  kLoopback,
  kLinkLocal,
  kMetadata,
  kUnspecified
};
// The class of a numeric IPv4 or IPv6 address; kPublic for anything else
// (private ranges included: they are the admin's to allow by name).
AddressClass ClassifyAddress(const std::string& ip);

class UriPolicy {
 public:
  UriPolicy() = default;
  // `hosts`: names ("example.com"), suffix patterns ("*.example.com") or IP
  // literals ("127.0.0.1", "::1"). Empty: no outbound call is allowed.
  explicit UriPolicy(std::vector<std::string> hosts);

  const std::vector<std::string>& hosts() const { return hosts_; }

  // PERMISSION_DENIED naming `field` and the host unless the URL's host is
  // allowed. A special address (loopback, link-local, metadata) written as
  // a literal is allowed only when that literal is named itself.
  absl::Status Check(const HttpUrl& url, const std::string& field) const;

  // Resolves an allowed URL's host and returns a numeric address to connect
  // to. PERMISSION_DENIED when a name resolves to a loopback, link-local,
  // metadata or unspecified address ("localhost" counts as a name unless
  // named itself, which allows its loopback addresses); UNAVAILABLE when it
  // does not resolve.
  absl::StatusOr<std::string> Resolve(const HttpUrl& url,
                                      const std::string& field) const;

 private:
  bool Named(const std::string& host) const;
  std::vector<std::string> hosts_;
};

}  // namespace lathe

#endif  // LATHE_COMMON_URI_POLICY_H_
