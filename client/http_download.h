// Checkpoint files over the server's HTTP listener (ListCheckpointsResponse
// names its port): the same bytes as DownloadCheckpointFile, at the speed of
// the wire, resumed with a Range from where a partial file stopped.
#ifndef LATHE_CLIENT_HTTP_DOWNLOAD_H_
#define LATHE_CLIENT_HTTP_DOWNLOAD_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "common/channel.h"

namespace lathe::client {

// GETs http(s)://HOST:PORT`url_path` (HOST from `target`, the HOST:PORT the
// client dials for gRPC) with the token and TLS files of `options`, from
// byte `offset`, appending the bytes to `out`. UNAVAILABLE when the
// listener cannot be reached (the caller may use gRPC instead); the
// server's own words for an error it answers.
absl::Status HttpDownload(const std::string& target, int port, bool tls,
                          const ChannelOptions& options,
                          const std::string& url_path, int64_t offset,
                          std::ostream& out, int64_t* written);

}  // namespace lathe::client

#endif  // LATHE_CLIENT_HTTP_DOWNLOAD_H_
