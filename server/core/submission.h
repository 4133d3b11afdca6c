// Submission: checks a JobSpec (INVALID_ARGUMENT names the field as
// spec.FIELD), resolves what it names (the model: a preset, a directory in
// the allowed roots, a stored model, or an earlier job's checkpoint; the
// data: a stored dataset or an imported file) and stores the job as QUEUED.
// Submits that arrive while one batch is being committed are committed
// together in the next batch (group commit), so a burst costs one sync to
// disk per batch, not per job.
//
// Thread safety: every method may be called concurrently. `mu_` guards the
// batch being gathered; it is never held while a batch commits.
#ifndef LATHE_SERVER_CORE_SUBMISSION_H_
#define LATHE_SERVER_CORE_SUBMISSION_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/uri_policy.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/allowed_roots.h"
#include "server/core/checkpoints.h"
#include "server/core/datasets.h"
#include "server/core/lifecycle.h"
#include "server/core/models.h"
#include "server/core/principal.h"
#include "server/core/remote_data.h"
#include "server/core/store.h"

namespace lathe::server {

// The parts submission uses; each must outlive it.
struct SubmissionParts {
  const AllowedRoots* roots = nullptr;
  Store* store = nullptr;
  DatasetCatalogue* datasets = nullptr;
  CheckpointCatalogue* checkpoints = nullptr;
  JobLifecycle* lifecycle = nullptr;
  // The hosts spec.webhooks may name.
  const UriPolicy* uri_policy = nullptr;
  // Fetches https:// and s3:// models (null: refused), into `artifacts`,
  // within the model store's limits.
  RemoteData* remote = nullptr;
  ArtifactStore* artifacts = nullptr;
  ModelStoreOptions model_limits;
};

class Submission {
 public:
  Submission(SubmissionParts parts, Clock clock)
      : parts_(parts), clock_(std::move(clock)) {}

  // Validates `spec`, stores the job as QUEUED and returns it. A repeated
  // non-empty `request_id` returns the job of the first submit. spec.model
  // is resolved and pinned in Job.model_source: a store name to its
  // manifest, "job:ID" to that job's best checkpoint, "job:ID@STEP" to that
  // step's; NOT_FOUND for an unknown name, job or step,
  // FAILED_PRECONDITION for a job without checkpoints, INVALID_ARGUMENT
  // ("spec.model: ...") for a malformed one.
  // The job belongs to `who`: spec.owner is who.user (an admin may name
  // another owner; anyone else naming one gets PERMISSION_DENIED) and
  // Job.team is who.team. A job, dataset or stored model of another team
  // reads as NOT_FOUND, as if it did not exist, except to an admin.
  // request_id is scoped to the team.
  absl::StatusOr<lathe::v1::Job> Submit(
      lathe::v1::JobSpec spec, const std::string& request_id,
      const Principal& who = Principal::System()) ABSL_LOCKS_EXCLUDED(mu_);

  // Checks `spec` and fills in its defaults; resolves its data into `job`.
  absl::Status Validate(lathe::v1::JobSpec* spec, lathe::v1::Job* job);

 private:
  // A validated submit waiting for its group commit; owned by the calling
  // Submit, filled by the committing one.
  struct Pending {
    JobLifecycle::NewJob row;
    bool admin = false;  // the submitter sees every team's models
    bool done = false;   // guarded by mu_
  };

  // Checks the form of spec.model; presets and local directories are
  // validated (and a path made canonical) here, names and job references
  // by Resolve when the job is stored.
  absl::Status CheckModel(lathe::v1::JobSpec* spec);
  // What a checked spec.model names, now. Called with the model store's pin
  // lock held shared until the job is stored.
  // An https:// or s3:// model directory, fetched into blobs and resolved
  // to their manifest (#sha256= checks the model digest).
  absl::StatusOr<lathe::v1::ResolvedModel> FetchRemoteModel(
      const std::string& model);
  absl::StatusOr<lathe::v1::ResolvedModel> ResolveModel(
      const std::string& model, const std::string& team, bool admin);
  // NOT_FOUND, as for an unknown dataset, when `who` may not use `dataset`;
  // else gives `dataset` the name `who`'s team uploaded it under (its
  // extension selects the format).
  absl::Status CheckDatasetTeam(const std::string& field,
                                lathe::v1::Dataset* dataset,
                                const std::string& value, const Principal& who);
  void Commit(const std::vector<Pending*>& batch) ABSL_LOCKS_EXCLUDED(mu_);

  const SubmissionParts parts_;
  const Clock clock_;

  absl::Mutex mu_;
  absl::CondVar done_;
  std::vector<Pending*> queue_ ABSL_GUARDED_BY(mu_);
  bool committing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_SUBMISSION_H_
