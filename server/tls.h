// Transport security of the gRPC listener: the --tls-* flags of lathe-server
// turned into server credentials.
//
// The certificate, key and client CA are read by gRPC's file watcher, which
// looks at the files again every `kTlsRefreshSeconds`: replacing them on disk
// (a new certificate and key, each written whole and renamed into place)
// changes what new connections are offered without a restart. Connections
// already open keep the session they negotiated.
#ifndef LATHE_SERVER_TLS_H_
#define LATHE_SERVER_TLS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/status.h"

namespace lathe::server {

inline constexpr unsigned int kTlsRefreshSeconds = 1;

struct ServerTlsFiles {
  std::string cert;       // --tls-cert: PEM certificate chain, leaf first.
  std::string key;        // --tls-key: PEM private key of the leaf.
  std::string client_ca;  // --tls-client-ca: when set, clients must present
                          // a certificate that chains to this PEM bundle.
  bool enabled() const { return !cert.empty() || !key.empty(); }
};

// Checks the flags and the files as they are now: --tls-cert and --tls-key
// come together, --tls-client-ca needs them, every named file can be read
// and holds what its flag says (PEM certificates; a private key that
// belongs to the first certificate). INVALID_ARGUMENT naming the flag and
// the file otherwise. OK when TLS is not enabled and no file is named.
absl::Status CheckServerTlsFiles(const ServerTlsFiles& files);

// The host name the certificate in `cert_path` is for: its first DNS name
// in subjectAltName, else its common name; "" when it has neither or the
// file cannot be read. Local workers dial the server on loopback and check
// the certificate against this name instead of the loopback address.
std::string CertificateHostName(const std::string& cert_path);

// Credentials for the listener: insecure ones when `files` is not enabled,
// else TLS from a file watcher over the files (mTLS when `client_ca` is
// set). Call CheckServerTlsFiles first: a file that cannot be read here is
// only logged by gRPC, and handshakes fail until it can.
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const ServerTlsFiles& files);

}  // namespace lathe::server

#endif  // LATHE_SERVER_TLS_H_
