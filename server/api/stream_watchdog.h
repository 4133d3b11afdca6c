// Ends client streams that have gone quiet. An upload (UploadDataset,
// PushModel, UploadCheckpointFile) holds a server thread while it waits for
// the client's next message; a client that opens one and then sends nothing
// would hold it forever. Each such handler registers its call here and
// touches it on every message; Sweep, called by the server's reaper, cancels
// calls idle for longer than the timeout.
//
// Thread safety: every method may be called concurrently.
#ifndef LATHE_SERVER_API_STREAM_WATCHDOG_H_
#define LATHE_SERVER_API_STREAM_WATCHDOG_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lathe::server {

class StreamWatchdog {
 public:
  // Zero: no timeout.
  explicit StreamWatchdog(absl::Duration idle_timeout)
      : idle_timeout_(idle_timeout) {}

  // Watches `ctx` for the life of the object.
  class Watch {
   public:
    Watch(StreamWatchdog* dog, grpc::ServerContext* ctx);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    // A message arrived.
    void Touch();

   private:
    StreamWatchdog* dog_;
    int64_t id_;
  };

  // Cancels the calls idle longer than the timeout; returns how many.
  int Sweep(absl::Time now);

 private:
  struct Entry {
    grpc::ServerContext* ctx;
    absl::Time last;
    bool cancelled = false;
  };
  const absl::Duration idle_timeout_;
  absl::Mutex mu_;
  int64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int64_t, Entry> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_API_STREAM_WATCHDOG_H_
