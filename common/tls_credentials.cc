// The client half of transport security: channel credentials from PEM files.
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/channel.h"

namespace lathe {
namespace {

// The file at `path`, which must hold `marker` (a PEM header): what `what`
// names in messages.
absl::StatusOr<std::string> ReadPem(const std::string& what,
                                    const std::string& path,
                                    const std::string& marker) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  if (in) ss << in.rdbuf();
  if (!in || in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": cannot read the file"));
  }
  std::string pem = ss.str();
  if (!absl::StrContains(pem, marker)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": holds no PEM ", marker));
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const TlsFiles& tls) {
  if (!tls.key.empty() && tls.cert.empty()) {
    return absl::InvalidArgumentError(
        "TLS client key " + tls.key +
        " without a client certificate: give the certificate too");
  }
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  if (!tls.cert.empty() && tls.key.empty()) {
    return absl::InvalidArgumentError(
        "TLS client certificate " + tls.cert +
        " without its private key: give the key too");
  }
  grpc::SslCredentialsOptions options;
  // Without a CA file, gRPC verifies the server against the system's roots.
  if (!tls.ca.empty()) {
    auto ca = ReadPem("TLS CA file", tls.ca, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  if (!tls.cert.empty()) {
    auto cert = ReadPem("TLS client certificate", tls.cert, "CERTIFICATE");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem("TLS client key", tls.key, "PRIVATE KEY");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *std::move(cert);
    options.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(options);
}

}  // namespace lathe
