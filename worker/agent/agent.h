// The worker agent: dials the server, registers, heartbeats, acquires one job
// at a time, fetches its data and base model (cached by digest under
// WORK_DIR/cache/datasets/<sha256> and WORK_DIR/cache/models/<digest>/), runs
// the training child,
// relays the child's events and checkpoints, and stops the child on cancel.
// It does not link LibTorch; the child does.
#ifndef LATHE_WORKER_AGENT_AGENT_H_
#define LATHE_WORKER_AGENT_AGENT_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace lathe::worker {

struct AgentOptions {
  std::string server = "127.0.0.1:50051";
  std::string name;            // default: the host name
  std::string device = "cpu";  // "cpu" or "cuda:N"
  // Devices this worker trains on: `device` and the next device_count - 1
  // (cuda:N, cuda:N+1, ...; on the CPU, that many training processes
  // sharing the cores). A job asking for several devices runs one process
  // per device, data-parallel.
  int device_count = 1;
  std::string work_dir = "lathe-worker-data";
  std::string train_binary;  // default: lathe-train beside this binary
  std::string assets_dir;    // default: the child's own default
  // How long the child gets after SIGTERM before SIGKILL on cancel.
  absl::Duration kill_grace = absl::Seconds(3);
  // On pause or shutdown: how long to wait for the requested checkpoint.
  absl::Duration drain_timeout = absl::Seconds(60);
  // Memory of the device in MiB, advertised for placement (0: detect).
  int64_t device_memory_mb = 0;
  // How to verify the server (and, with cert and key, the client
  // certificate to present): plain TCP when !tls.enabled().
  lathe::TlsFiles tls;
  // The name the server's certificate must carry, when not the host in
  // `server` (local workers dial a loopback address). Needs `tls`.
  std::string tls_server_name;
  // The worker-role token sent on every call (from --token-file, else
  // $LATHE_TOKEN).
  std::string token;
  // The address other workers reach this one at, for the rendezvous store
  // of a gang whose rank 0 runs here (their ranks dial it).
  std::string gang_address = "127.0.0.1";
  // How long a gang member waits for the others to join before it fails
  // the attempt.
  absl::Duration gang_join_timeout = absl::Seconds(300);
};

class Agent {
 public:
  static absl::StatusOr<std::unique_ptr<Agent>> Create(AgentOptions options);
  // Serves jobs until Stop(). Returns OK after a stop.
  absl::Status Run();
  // Safe from any thread: checkpoints the current job, stops its child and
  // gives the job back to the queue.
  void Stop();

 private:
  explicit Agent(AgentOptions options);
  absl::Status Register();
  void HeartbeatLoop();
  // Sets the cancel/pause/checkpoint flags for `job` from a response.
  void ApplyCommands(const lathe::v1::HeartbeatResponse& resp,
                     const std::string& job);
  void RunJob(const lathe::v1::Assignment& a);
  // Fetches what the job needs into `dir` and fills the child's spec.
  absl::Status PrepareSpec(const lathe::v1::Assignment& a,
                           const std::string& dir, nlohmann::json* spec);

  // Gangs (gang.cc). The ranks this worker runs for a gang member other
  // than rank 0's: they report nothing; the first to fail ends the attempt.
  void RunGangMember(const lathe::v1::Assignment& a);
  // Joins the attempt's rendezvous until every member has (rank 0's member
  // gives `store_address`); returns rank 0's store address.
  absl::StatusOr<std::string> JoinGang(const lathe::v1::Assignment& a,
                                       const std::string& store_address);
  static int GangWorldSize(const lathe::v1::Assignment& a);
  absl::StatusOr<std::string> FetchDataset(const lathe::v1::Dataset& ds);
  // FetchDataset, then a folder dataset (an archive named *.tar) unpacked
  // into a folder next to it: the path the child reads.
  absl::StatusOr<std::string> FetchDatasetForChild(
      const lathe::v1::Dataset& ds);
  // The directory or preset the child trains from: a pinned manifest is
  // fetched file by file (SHA-256 verified) into the model cache once per
  // digest; presets and local paths pass through.
  absl::StatusOr<std::string> PrepareModel(const lathe::v1::Assignment& a);
  absl::StatusOr<lathe::v1::Event> UploadCheckpoint(
      const lathe::v1::Assignment& a, int64_t step, const std::string& dir);
  // Sends events; returns false when the attempt is no longer ours.
  bool Report(const lathe::v1::Assignment& a,
              std::vector<lathe::v1::Event> events);
  void Finish(const lathe::v1::Assignment& a, lathe::v1::JobState outcome,
              const std::string& error, lathe::v1::FailureKind failure);
  // Downloads the assignment's resume checkpoint into DIR/resume/...
  absl::StatusOr<std::string> FetchResumeCheckpoint(
      const lathe::v1::Assignment& a, const std::string& dir);
  std::string WorkerId();
  // `device` and the devices after it, device_count in all.
  std::vector<std::string> Devices() const;

  const AgentOptions options_;
  std::unique_ptr<lathe::v1::WorkerService::Stub> stub_;
  absl::Mutex mu_;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  std::string current_job_ ABSL_GUARDED_BY(mu_);
  // The in-flight long poll, cancelled by Stop().
  grpc::ClientContext* acquire_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  // The open heartbeat stream.
  grpc::ClientContext* heartbeat_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(1);
  std::atomic<bool> stop_{false};
  std::atomic<bool> cancel_{false};
  std::atomic<bool> pause_{false};
  std::atomic<bool> checkpoint_{false};
  std::atomic<bool> reregister_{false};
};

}  // namespace lathe::worker

#endif  // LATHE_WORKER_AGENT_AGENT_H_
