// How the CLI, the worker agent, the tests and the benchmarks dial the
// server: one channel builder, so that every caller sends its credential the
// same way and verifies the server the same way.
//
// The bearer token goes on every call as `authorization: Bearer TOKEN`
// metadata, added by a client interceptor: gRPC refuses call credentials on a
// channel without TLS, and the loopback-without-TLS mode must authenticate
// too. With TLS files the channel verifies the server against `ca` and, where
// `cert` and `key` are given, presents a client certificate (mTLS).
#ifndef LATHE_COMMON_CHANNEL_H_
#define LATHE_COMMON_CHANNEL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace lathe {

struct TlsFiles {
  std::string ca;    // PEM bundle the server's certificate must chain to.
  std::string cert;  // PEM client certificate (mTLS), with `key`.
  std::string key;
  bool enabled() const { return !ca.empty() || !cert.empty(); }
};

struct ChannelOptions {
  std::string token;  // Sent as a bearer token when not empty.
  TlsFiles tls;       // Plain TCP when !tls.enabled().
};

// The channel credentials for `tls`: insecure ones when it is not enabled.
// INVALID_ARGUMENT naming the file that cannot be read.
// (common/tls_credentials.cc)
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const TlsFiles& tls);

// A channel to `target` that sends `options.token` on every call.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& target, const ChannelOptions& options,
    const grpc::ChannelArguments& args = grpc::ChannelArguments());

// The token for a program: the first line of `token_file` when given, else
// $LATHE_TOKEN, else the first line of `fallback_file` when it exists; empty
// when none is set. INVALID_ARGUMENT when a named file cannot be read, is
// empty, or can be read by other users (mode beyond 0600).
absl::StatusOr<std::string> ReadToken(const std::string& token_file,
                                      const std::string& fallback_file = "");

// Has this process keep up to 64 MiB of freed heap instead of handing it
// back to the kernel at once. A streamed download allocates and frees its
// receive buffers megabytes at a time; with glibc's default (trim above
// 128 KiB) each round of them is fresh memory, faulted in page by page,
// which more than halved the measured gRPC download rate. For the programs
// that stream files from the server (the CLI, the worker agent, the
// benchmarks); a no-op where the C library is not glibc.
void KeepFreedMemoryForStreaming();

}  // namespace lathe

#endif  // LATHE_COMMON_CHANNEL_H_
