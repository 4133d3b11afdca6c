// What a loopback socket can carry, for the download rows of the control
// benchmark: a raw sendfile(2) of a file to a client that reads and drops
// it (the physical limit of the path), and a plain HTTP/1.1 GET read the
// same way. Both clients read with 1 MiB recv calls.
#ifndef LATHE_BENCH_WIRE_H_
#define LATHE_BENCH_WIRE_H_

#include <cstdint>
#include <string>

namespace lathe::bench {

// Sends `path` (size bytes) with sendfile over a fresh loopback TCP
// connection; the bytes the client received, and the seconds it took.
int64_t SendfileLoopback(const std::string& path, int64_t size,
                         double* seconds);

// GET http://HOSTPORT/PATH with `authorization` (a whole header value);
// the body bytes received (-1 when the answer is not 200), and the
// seconds from connect to the last byte.
int64_t HttpGet(const std::string& hostport, const std::string& path,
                const std::string& authorization, double* seconds);

}  // namespace lathe::bench

#endif  // LATHE_BENCH_WIRE_H_
