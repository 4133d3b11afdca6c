// Webhook delivery: a job's spec.webhooks are POSTed a signed JSON body
// (signature.h) when the job is queued, starts running, succeeds, fails or
// is cancelled, and when a checkpoint becomes its best. Each delivery is
// tried until the receiver answers 2xx, at most `max_attempts` times, with
// the wait doubling from `first_retry`; every outcome is recorded as a log
// event of the job. The URL is checked against the URI policy again at each
// attempt, and the connection goes to the address that was checked.
//
// Deliveries wait in memory: those pending when the server stops are not
// sent after a restart (the job's events say which were delivered).
//
// Thread safety: OnCommit may be called from any thread (the lifecycle
// calls it under its commit lock; it only queues). One thread delivers.
#ifndef LATHE_SERVER_WEBHOOKS_SENDER_H_
#define LATHE_SERVER_WEBHOOKS_SENDER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/uri_policy.h"
#include "lathe/v1/lathe.pb.h"

namespace lathe::server {

struct WebhookOptions {
  UriPolicy policy;
  // The "whsec_..." secret receivers verify with (signature.h).
  std::string secret;
  int max_attempts = 5;
  absl::Duration first_retry = absl::Seconds(1);
  // Per attempt: connecting, and reading the answer.
  absl::Duration timeout = absl::Seconds(10);
  // PEM bundle to verify https receivers with; empty: the system's.
  std::string ca_file;
  // Deliveries waiting at most; past it, new ones are dropped (and noted).
  int max_pending = 10000;
};

class WebhookSender {
 public:
  // Records `message` as a log event of job `job_id`.
  using NoteFn = std::function<void(const std::string& job_id,
                                    const std::string& message)>;
  // The step of the job's best checkpoint (0: none scored).
  using BestStepFn =
      std::function<absl::StatusOr<int64_t>(const std::string& job_id)>;

  // INVALID_ARGUMENT for a secret that is not whsec_ + base64.
  static absl::StatusOr<std::unique_ptr<WebhookSender>> Create(
      WebhookOptions options, NoteFn note, BestStepFn best_step);
  ~WebhookSender();

  // Queues what `events` of `job` call for. Never blocks.
  void OnCommit(const lathe::v1::Job& job,
                const std::vector<lathe::v1::Event>& events)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Delivery {
    std::string job_id;
    std::string url;
    std::string msg_id;  // the same for every attempt: receivers dedupe
    std::string type;    // "job.succeeded", "checkpoint.best", ...
    std::string body;
    int attempt = 0;
    // For "checkpoint.best": sent only if this step is still the best when
    // its turn comes (0: no such check).
    int64_t best_step = 0;
  };

  WebhookSender(WebhookOptions options, std::string key, NoteFn note,
                BestStepFn best_step);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  // One attempt: the HTTP status, or why there is none.
  absl::StatusOr<int> Post(const Delivery& d) const;

  const WebhookOptions options_;
  const std::string key_;
  const NoteFn note_;
  const BestStepFn best_step_;

  absl::Mutex mu_;
  // Due time -> delivery; equal times keep their order.
  std::multimap<absl::Time, Delivery> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_WEBHOOKS_SENDER_H_
