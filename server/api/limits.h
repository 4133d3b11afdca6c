// What one caller may hold or do at a time, so that no token can starve the
// others: submits per second per token (a token bucket), and open streams
// (watches, downloads, uploads) per user. Admins are not limited: they run
// the server. Exceeding either is RESOURCE_EXHAUSTED with a message that
// says when to retry.
//
// Thread safety: every method may be called concurrently.
#ifndef LATHE_SERVER_API_LIMITS_H_
#define LATHE_SERVER_API_LIMITS_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lathe::server {

struct LimitOptions {
  // Submits per second per token, and how many may come at once (0: no
  // limit).
  double submit_rate = 20;
  double submit_burst = 100;
  // Open streaming calls per user (0: no limit).
  int max_streams = 64;
};

class Limits {
 public:
  explicit Limits(LimitOptions options) : options_(options) {}
  // Takes one submit from `token_id`'s bucket.
  absl::Status TakeSubmit(const std::string& token_id, absl::Time now);
  // Opens a stream for `user`; CloseStream when it ends.
  absl::Status OpenStream(const std::string& user);
  void CloseStream(const std::string& user);
  int open_streams(const std::string& user);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time updated;
  };
  const LimitOptions options_;
  absl::Mutex mu_;
  std::map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_API_LIMITS_H_
