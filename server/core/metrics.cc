#include "server/core/metrics.h"

namespace lathe::server {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      jobs_(BuildGauge()
                .Name("lathe_jobs")
                .Help("Jobs by state")
                .Register(*registry_)),
      queue_depth_(BuildGauge()
                       .Name("lathe_queue_depth_jobs")
                       .Help("Jobs waiting in the queue")
                       .Register(*registry_)
                       .Add({})),
      workers_(BuildGauge()
                   .Name("lathe_workers")
                   .Help("Registered worker agents with a live heartbeat")
                   .Register(*registry_)
                   .Add({})),
      start_latency_(
          BuildHistogram()
              .Name("lathe_job_start_latency_seconds")
              .Help("Time from submit to the first start of a job")
              .Register(*registry_)
              .Add({},
                   prometheus::Histogram::BucketBoundaries{
                       0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200})),
      rpcs_(BuildCounter()
                .Name("lathe_rpcs_total")
                .Help("RPCs handled, by method and status code")
                .Register(*registry_)),
      loss_(BuildGauge()
                .Name("lathe_job_train_loss")
                .Help("Latest training loss of each running job")
                .Register(*registry_)),
      throughput_(BuildGauge()
                      .Name("lathe_job_samples_per_second")
                      .Help("Steady-state training throughput of each running "
                            "job")
                      .Register(*registry_)),
      stored_bytes_(BuildGauge()
                        .Name("lathe_artifact_bytes")
                        .Help("Bytes of datasets and checkpoint files kept")
                        .Register(*registry_)
                        .Add({})),
      rpc_seconds_(BuildHistogram()
                       .Name("lathe_rpc_duration_seconds")
                       .Help("Time from a call's arrival to its status, by "
                             "method (streams: their whole life)")
                       .Register(*registry_)),
      running_by_owner_(BuildGauge()
                            .Name("lathe_running_jobs")
                            .Help("Jobs holding a worker, by owner")
                            .Register(*registry_)),
      disk_free_(BuildGauge()
                     .Name("lathe_data_disk_free_bytes")
                     .Help("Free bytes on the data directory's file system")
                     .Register(*registry_)
                     .Add({})),
      disk_size_(BuildGauge()
                     .Name("lathe_data_disk_size_bytes")
                     .Help("Size of the data directory's file system")
                     .Register(*registry_)
                     .Add({})) {}

void Metrics::ObserveRpcSeconds(const std::string& method, double seconds) {
  static const auto* kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  rpc_seconds_.Add({{"method", method}}, *kBuckets).Observe(seconds);
}

void Metrics::SetRunningByOwner(const std::map<std::string, int>& running) {
  absl::MutexLock lock(&mu_);
  for (auto& [owner, n] : owners_seen_) {
    if (!running.count(owner)) {
      running_by_owner_.Add({{"owner", owner}}).Set(0);
      n = 0;
    }
  }
  for (const auto& [owner, n] : running) {
    running_by_owner_.Add({{"owner", owner}}).Set(n);
    owners_seen_[owner] = n;
  }
}

void Metrics::SetDataDisk(double free_bytes, double size_bytes) {
  disk_free_.Set(free_bytes);
  disk_size_.Set(size_bytes);
}

void Metrics::SetJobsInState(const std::string& state, double n) {
  jobs_.Add({{"state", state}}).Set(n);
}
void Metrics::SetStoredBytes(double bytes) { stored_bytes_.Set(bytes); }
void Metrics::SetQueueDepth(double n) { queue_depth_.Set(n); }
void Metrics::SetWorkers(double n) { workers_.Set(n); }
void Metrics::ObserveStartLatency(double seconds) {
  start_latency_.Observe(seconds);
}
void Metrics::CountRpc(const std::string& method, const std::string& code) {
  rpcs_.Add({{"method", method}, {"code", code}}).Increment();
}
void Metrics::SetRunningJob(const std::string& job_id, double loss,
                            double samples_per_second) {
  absl::MutexLock lock(&mu_);
  loss_.Add({{"job", job_id}}).Set(loss);
  throughput_.Add({{"job", job_id}}).Set(samples_per_second);
}
void Metrics::ClearRunningJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (loss_.Has({{"job", job_id}})) loss_.Remove(&loss_.Add({{"job", job_id}}));
  if (throughput_.Has({{"job", job_id}})) {
    throughput_.Remove(&throughput_.Add({{"job", job_id}}));
  }
}

}  // namespace lathe::server
