// The CLI's transport-security flags: --tls-ca, --tls-cert and --tls-key
// (global flags of every command), each falling back to $LATHE_TLS_CA,
// $LATHE_TLS_CERT and $LATHE_TLS_KEY. The files are read later, by
// ClientCredentials (common/channel.h), which names the one it cannot read.
#ifndef LATHE_CLIENT_TLS_FLAGS_H_
#define LATHE_CLIENT_TLS_FLAGS_H_

#include "client/cli_args.h"
#include "common/channel.h"

namespace lathe::client {

// Each file from its flag, else from its environment variable, else empty.
// Plain TCP when the result is not enabled().
lathe::TlsFiles TlsFilesFromArgs(const ParsedArgs& args);

}  // namespace lathe::client

#endif  // LATHE_CLIENT_TLS_FLAGS_H_
