// The server's Prometheus metrics, defined once. Names carry the `lathe_`
// prefix and their unit; labels are bounded (job ids only while running).
//
// Thread safety: all methods may be called concurrently.
#ifndef LATHE_SERVER_CORE_METRICS_H_
#define LATHE_SERVER_CORE_METRICS_H_

#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace lathe::server {

class Metrics {
 public:
  Metrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Number of jobs in `state` (a JobState name).
  void SetJobsInState(const std::string& state, double n);
  void SetQueueDepth(double n);
  void SetWorkers(double n);
  void ObserveStartLatency(double seconds);
  void CountRpc(const std::string& method, const std::string& code);
  // How long a call took, from arrival to its status (for a stream: its
  // whole life).
  void ObserveRpcSeconds(const std::string& method, double seconds);
  // Jobs holding a worker, per owner; owners no longer listed drop to 0.
  void SetRunningByOwner(const std::map<std::string, int>& running);
  // The file system of the data directory (statvfs).
  void SetDataDisk(double free_bytes, double size_bytes);
  void SetRunningJob(const std::string& job_id, double loss,
                     double samples_per_second);
  void ClearRunningJob(const std::string& job_id);
  // Bytes of datasets and checkpoint files kept in the artifact store.
  void SetStoredBytes(double bytes);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& workers_;
  prometheus::Histogram& start_latency_;
  prometheus::Family<prometheus::Counter>& rpcs_;
  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Gauge>& throughput_;
  prometheus::Gauge& stored_bytes_;
  prometheus::Family<prometheus::Histogram>& rpc_seconds_;
  prometheus::Family<prometheus::Gauge>& running_by_owner_;
  prometheus::Gauge& disk_free_;
  prometheus::Gauge& disk_size_;
  absl::Mutex mu_;
  std::map<std::string, int> owners_seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_METRICS_H_
