#include "server/core/checkpoints.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "server/core/models.h"

namespace lathe::server {

namespace {
using lathe::v1::Checkpoint;

// Checkpoint files that hold training state, not the model.
const char* const kTrainingStateFiles[] = {"trainer_state.json",
                                           "training_state.safetensors"};
}  // namespace

bool IsTrainingStateFile(const std::string& path) {
  for (const char* t : kTrainingStateFiles) {
    if (path == t) return true;
  }
  return false;
}

std::optional<double> CheckpointScore(const Checkpoint& c) {
  if (!c.metric_for_best_model().empty()) {
    auto m = c.metrics().find(c.metric_for_best_model());
    if (m == c.metrics().end()) return std::nullopt;
    return c.greater_is_better() ? m->second : -m->second;
  }
  auto acc = c.metrics().find("accuracy");
  if (acc != c.metrics().end()) return acc->second;
  auto loss = c.metrics().find("loss");
  if (loss != c.metrics().end()) return -loss->second;
  return std::nullopt;
}

absl::StatusOr<CheckpointListing> CheckpointCatalogue::List(
    const std::string& job_id) {
  if (job_id.empty()) return Invalid("job_id", "is required");
  RETURN_IF_ERROR(store_->GetJob(job_id).status());
  return Listing(job_id);
}

absl::StatusOr<CheckpointListing> CheckpointCatalogue::Listing(
    const std::string& job_id) {
  CheckpointListing out;
  ASSIGN_OR_RETURN(out.checkpoints, store_->Checkpoints(job_id));
  std::optional<double> best;
  for (const Checkpoint& c : out.checkpoints) {
    auto s = CheckpointScore(c);
    // Later checkpoints win ties: they trained longer for the same score.
    if (s.has_value() && (!best.has_value() || *s >= *best)) {
      best = s;
      out.best_step = c.step();
    }
  }
  return out;
}

absl::StatusOr<ResolvedFile> CheckpointCatalogue::ResolveFile(
    const std::string& job_id, const std::string& selector,
    const std::string& file) {
  if (file.empty()) return Invalid("file", "is required");
  ASSIGN_OR_RETURN(CheckpointListing listing, List(job_id));
  const auto& cps = listing.checkpoints;
  if (cps.empty()) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " has no checkpoints"));
  }
  const Checkpoint* chosen = nullptr;
  if (selector.empty() || selector == "latest") {
    chosen = &cps.back();
  } else {
    int64_t step = 0;
    if (selector == "best") {
      step = listing.best_step;
      if (step == 0) step = cps.back().step();
    } else if (!absl::SimpleAtoi(selector, &step)) {
      return Invalid("checkpoint", "must be latest, best or a step number");
    }
    for (const Checkpoint& c : cps) {
      if (c.step() == step) chosen = &c;
    }
  }
  if (chosen == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " has no checkpoint ", selector));
  }
  for (const auto& f : chosen->files()) {
    if (f.name() == file) {
      return ResolvedFile{artifacts_->PathFor(f.sha256()), f};
    }
  }
  return absl::NotFoundError(absl::StrCat("checkpoint at step ", chosen->step(),
                                          " has no file ", file));
}

absl::StatusOr<lathe::v1::ResolvedModel> CheckpointCatalogue::ModelFrom(
    const std::string& id, std::optional<int64_t> step) {
  auto source = store_->GetJob(id);
  if (absl::IsNotFound(source.status())) {
    return absl::NotFoundError(
        absl::StrCat("spec.model: job ", id, " not found"));
  }
  RETURN_IF_ERROR(source.status());
  ASSIGN_OR_RETURN(CheckpointListing listing, Listing(id));
  const auto& cps = listing.checkpoints;
  if (cps.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spec.model: job ", id, " (", JobState_Name(source->state()),
        ") has no checkpoint yet"));
  }
  // Without a step: the best by evaluation metric, else the latest.
  const int64_t want =
      step.has_value()
          ? *step
          : (listing.best_step != 0 ? listing.best_step : cps.back().step());
  const Checkpoint* chosen = nullptr;
  for (const Checkpoint& c : cps) {
    if (c.step() == want) chosen = &c;
  }
  if (chosen == nullptr) {
    std::vector<int64_t> steps;
    for (const Checkpoint& c : cps) steps.push_back(c.step());
    return absl::NotFoundError(
        absl::StrCat("spec.model: job ", id, " has no checkpoint at step ",
                     want, "; it has steps ", absl::StrJoin(steps, ", ")));
  }
  lathe::v1::ResolvedModel out;
  out.set_kind(lathe::v1::MODEL_SOURCE_KIND_MANIFEST);
  for (const auto& f : chosen->files()) {
    bool state = false;
    state |= IsTrainingStateFile(f.name());
    // The run's TensorBoard log (runs/) is a record of training, not model.
    state |= absl::StartsWith(f.name(), "runs/");
    if (state) continue;
    if (!artifacts_->Has(f.sha256(), f.size())) {
      return absl::FailedPreconditionError(
          absl::StrCat("spec.model: file ", f.name(), " of job ", id,
                       "'s checkpoint at step ", want, " is missing"));
    }
    auto* mf = out.add_files();
    mf->set_path(f.name());
    mf->set_size(f.size());
    mf->set_sha256(f.sha256());
  }
  std::vector<lathe::v1::ModelFile> files(out.files().begin(),
                                          out.files().end());
  out.set_digest(ModelDigest(files));
  out.set_origin(absl::StrCat("job:", id, "@", want));
  return out;
}

absl::Status CheckpointCatalogue::Record(const std::string& job_id,
                                         Checkpoint* cp) {
  if (cp->step() < 0) return Invalid("events.checkpoint.step", "is negative");
  if (cp->files().empty()) {
    return Invalid("events.checkpoint.files", "is empty");
  }
  for (const auto& f : cp->files()) {
    // A relative, clean path: a file name, or names under a sub-folder.
    RETURN_IF_ERROR(CheckModelPath(f.name(), "events.checkpoint.files.name"));
    if (!artifacts_->Has(f.sha256(), f.size())) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint file ", f.name(), " (", f.sha256(),
                       ") was not uploaded"));
    }
  }
  cp->set_create_time_ms(clock_());
  RETURN_IF_ERROR(store_->PutCheckpoint(job_id, *cp));
  ApplyRetention(job_id);
  PublishStoredBytes(store_, metrics_);
  return absl::OkStatus();
}

void CheckpointCatalogue::ApplyRetention(const std::string& job_id) {
  if (keep_ <= 0) return;
  auto listing = Listing(job_id);
  if (!listing.ok()) return;
  const auto& cps = listing->checkpoints;
  const size_t keep = static_cast<size_t>(keep_);
  if (cps.size() <= keep) return;
  for (size_t i = 0; i + keep < cps.size(); ++i) {
    const Checkpoint& c = cps[i];
    if (c.step() == listing->best_step) continue;
    if (!store_->DeleteCheckpoint(job_id, c.step()).ok()) continue;
    for (const auto& f : c.files()) {
      auto referenced = store_->BlobReferenced(f.sha256());
      if (referenced.ok() && !*referenced) artifacts_->Remove(f.sha256());
    }
  }
}

}  // namespace lathe::server
