// The audit log: every call that changes something and every refused call
// (who, what, which resource, when, from which peer), kept in the store and
// read by admins. Record only queues the entry, so a call never waits for
// the log's write; Flush (every half second from the server's reaper, and
// before every read) writes the queue in one transaction and drops entries
// past the retention. The queue is bounded: past kMaxPending entries
// (a flood of refused calls faster than the disk) new entries are counted
// in dropped() instead of kept.
//
// Thread safety: every method may be called from any thread.
#ifndef LATHE_SERVER_CORE_AUDIT_LOG_H_
#define LATHE_SERVER_CORE_AUDIT_LOG_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/store.h"

namespace lathe::server {

class AuditLog {
 public:
  static constexpr size_t kMaxPending = 100000;

  // Keeps entries younger than `retention` and at most `max_rows`.
  AuditLog(Store* store, absl::Duration retention, int64_t max_rows)
      : store_(store), retention_(retention), max_rows_(max_rows) {}

  // Stamps the time and queues the entry.
  void Record(lathe::v1::AuditEntry entry);
  absl::Status Flush();
  // Newest first (flushes first).
  absl::StatusOr<std::vector<lathe::v1::AuditEntry>> List(int limit,
                                                          int64_t before_seq);
  int64_t dropped();

 private:
  Store* const store_;
  const absl::Duration retention_;
  const int64_t max_rows_;
  absl::Mutex flush_mu_;  // one flush at a time, in order
  absl::Mutex mu_;
  std::vector<lathe::v1::AuditEntry> pending_ ABSL_GUARDED_BY(mu_);
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_AUDIT_LOG_H_
