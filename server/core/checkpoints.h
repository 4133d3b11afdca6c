// The checkpoint catalogue: the checkpoints each job's workers reported, which
// one is best (by the metric the trainer named), which file a download or a
// chained job (job:ID, job:ID@STEP) means, and retention (the last K plus the
// best; blobs nothing else refers to are deleted).
//
// Thread safety: no state of its own beyond the store and artifact store,
// which are thread-safe. Record and ApplyRetention for one job are called
// under the lifecycle's commit lock, so a job's checkpoints change in one
// order.
#ifndef LATHE_SERVER_CORE_CHECKPOINTS_H_
#define LATHE_SERVER_CORE_CHECKPOINTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/artifacts.h"
#include "server/core/job_states.h"
#include "server/core/metrics.h"
#include "server/core/store.h"

namespace lathe::server {

struct ResolvedFile {
  std::string path;  // the blob on disk
  lathe::v1::FileInfo info;
};

// Checkpoints ordered by step, and the step of the best one (0 if none has
// the metric that ranks them).
struct CheckpointListing {
  std::vector<lathe::v1::Checkpoint> checkpoints;
  int64_t best_step = 0;
};

// True for the checkpoint files that hold training state (the optimizer's,
// the trainer's), which a checkpoint used as a model leaves out.
bool IsTrainingStateFile(const std::string& path);

// The score that ranks checkpoints (higher is better): the metric the
// trainer named (negated when lower is better), else accuracy, else minus
// the loss; none when the checkpoint has none of them.
std::optional<double> CheckpointScore(const lathe::v1::Checkpoint& c);

class CheckpointCatalogue {
 public:
  // Every pointer must outlive the catalogue. `keep` checkpoints are kept
  // per job besides the best (0: all).
  CheckpointCatalogue(Store* store, ArtifactStore* artifacts, Metrics* metrics,
                      Clock clock, int keep)
      : store_(store),
        artifacts_(artifacts),
        metrics_(metrics),
        clock_(std::move(clock)),
        keep_(keep) {}

  // NOT_FOUND for an unknown job.
  absl::StatusOr<CheckpointListing> List(const std::string& job_id);
  // List without checking that the job exists.
  absl::StatusOr<CheckpointListing> Listing(const std::string& job_id);
  // `selector` is "latest" (or empty), "best" or a step number.
  absl::StatusOr<ResolvedFile> ResolveFile(const std::string& job_id,
                                           const std::string& selector,
                                           const std::string& file);
  // The model files of a job's checkpoint for a chained job: the best (else
  // the latest) without `step`. Training-state files are left out. Errors
  // name spec.model: NOT_FOUND for an unknown job or step,
  // FAILED_PRECONDITION for a job without checkpoints or a missing file.
  absl::StatusOr<lathe::v1::ResolvedModel> ModelFrom(
      const std::string& job_id, std::optional<int64_t> step);
  // Checks a checkpoint a worker reported (clean relative names, every file
  // uploaded), stores it and applies retention.
  absl::Status Record(const std::string& job_id,
                      lathe::v1::Checkpoint* checkpoint);

 private:
  void ApplyRetention(const std::string& job_id);

  Store* const store_;
  ArtifactStore* const artifacts_;
  Metrics* const metrics_;
  const Clock clock_;
  const int keep_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_CHECKPOINTS_H_
