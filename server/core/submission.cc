#include "server/core/submission.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/params.h"
#include "common/status.h"

namespace lathe::server {

namespace {

using lathe::v1::Job;
using lathe::v1::JobSpec;

constexpr char kFilePrefix[] = "file://";
constexpr char kPresetPrefix[] = "preset:";
constexpr char kJobPrefix[] = "job:";
// The task types the training child implements (worker/tasks/task.cc).
const char* const kTasks[] = {"text-classification",
                              "text-regression",
                              "token-classification",
                              "question-answering",
                              "causal-lm",
                              "masked-lm",
                              "image-classification",
                              "audio-classification",
                              "speech-recognition"};
constexpr size_t kMaxText = 4096;
// Most submits committed in one transaction.
constexpr size_t kMaxBatch = 256;

std::string PresetNames() {
  std::vector<std::string> names;
  for (const auto& p : ModelPresets()) names.push_back(p.name());
  return absl::StrJoin(names, ", ");
}

// Splits "job:ID" or "job:ID@STEP"; false when malformed.
bool ParseJobRef(const std::string& ref, std::string* id,
                 std::optional<int64_t>* step) {
  static const std::regex kRef("job:([A-Za-z0-9_-]{1,128})(@([0-9]{1,18}))?");
  std::smatch m;
  if (!std::regex_match(ref, m, kRef)) return false;
  *id = m[1].str();
  step->reset();
  if (m[3].matched) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(m[3].str(), &v)) return false;
    *step = v;
  }
  return true;
}

}  // namespace

absl::Status Submission::CheckModel(JobSpec* spec) {
  const std::string& model = spec->model();
  if (model.empty()) return Invalid("spec.model", "is required");
  if (model.size() > kMaxText) return Invalid("spec.model", "too long");
  if (absl::StartsWith(model, kPresetPrefix)) {
    for (const auto& p : ModelPresets()) {
      if (p.name() == model) return absl::OkStatus();
    }
    return Invalid("spec.model",
                   absl::StrCat("unknown preset \"", model.substr(0, 64),
                                "\"; known: ", PresetNames()));
  }
  if (absl::StartsWith(model, kJobPrefix)) {
    std::string id;
    std::optional<int64_t> step;
    if (!ParseJobRef(model, &id, &step)) {
      return Invalid("spec.model",
                     absl::StrCat("\"", model.substr(0, 64),
                                  "\" is not job:ID or job:ID@STEP"));
    }
    return absl::OkStatus();
  }
  if (IsRemoteUri(model)) return absl::OkStatus();  // FetchRemoteModel
  if (model[0] == '/' || absl::StartsWith(model, kFilePrefix)) {
    ASSIGN_OR_RETURN(std::string dir,
                     parts_.roots->Resolve("spec.model", model));
    if (!PathExists(dir + "/config.json") ||
        !(PathExists(dir + "/model.safetensors") ||
          PathExists(dir + "/model.safetensors.index.json"))) {
      return Invalid("spec.model",
                     absl::StrCat("\"", dir,
                                  "\" is not a model directory (it needs "
                                  "config.json and model.safetensors)"));
    }
    spec->set_model(dir);
    return absl::OkStatus();
  }
  if (!CheckModelName(model, "spec.model").ok()) {
    return Invalid("spec.model",
                   absl::StrCat("\"", model.substr(0, 64),
                                "\" is not a model reference; use a stored "
                                "model's name, job:ID, job:ID@STEP, one of ",
                                PresetNames(),
                                ", or the absolute path of a model "
                                "directory"));
  }
  return absl::OkStatus();
}

absl::StatusOr<lathe::v1::ResolvedModel> Submission::ResolveModel(
    const std::string& model, const std::string& team, bool admin) {
  lathe::v1::ResolvedModel out;
  if (absl::StartsWith(model, kPresetPrefix)) {
    out.set_kind(lathe::v1::MODEL_SOURCE_KIND_PRESET);
    out.set_preset(model);
    out.set_origin(model);
    return out;
  }
  if (model[0] == '/') {  // made canonical by CheckModel
    out.set_kind(lathe::v1::MODEL_SOURCE_KIND_LOCAL_PATH);
    out.set_local_path(model);
    out.set_origin(model);
    return out;
  }
  if (absl::StartsWith(model, kJobPrefix)) {
    std::string id;
    std::optional<int64_t> step;
    if (!ParseJobRef(model, &id, &step)) {
      return Invalid("spec.model", "is not job:ID or job:ID@STEP");
    }
    if (!admin) {
      auto source = parts_.store->GetJob(id);
      if (source.ok() && source->team() != team) {
        return absl::NotFoundError(
            absl::StrCat("spec.model: job ", id, " not found"));
      }
    }
    return parts_.checkpoints->ModelFrom(id, step);
  }
  ASSIGN_OR_RETURN(auto stored, parts_.store->GetModel(model));
  if (!stored.has_value() || (!admin && stored->team() != team)) {
    return absl::NotFoundError(absl::StrCat(
        "spec.model: no model named \"", model,
        "\" in the model store (lathe models list shows the stored models "
        "and the presets)"));
  }
  out.set_kind(lathe::v1::MODEL_SOURCE_KIND_MANIFEST);
  out.set_digest(stored->digest());
  *out.mutable_files() = stored->files();
  out.set_origin(absl::StrCat("model ", model));
  return out;
}

absl::StatusOr<lathe::v1::ResolvedModel> Submission::FetchRemoteModel(
    const std::string& model) {
  if (parts_.remote == nullptr || parts_.artifacts == nullptr) {
    return Invalid("spec.model", "this server does not fetch remote URIs");
  }
  std::string uri = model, expected;
  if (const size_t hash = model.find('#'); hash != std::string::npos) {
    uri = model.substr(0, hash);
    expected = model.substr(hash + 1);
    if (!absl::StartsWith(expected, "sha256=") ||
        !IsSha256Hex(expected.substr(7))) {
      return Invalid("spec.model",
                     "a model URI's fragment may only be #sha256=<the model "
                     "digest, 64 lower-case hex digits>");
    }
    expected = expected.substr(7);
  }
  ASSIGN_OR_RETURN(auto fetched, parts_.remote->FetchModel(
                                     "spec.model", uri, parts_.artifacts,
                                     parts_.model_limits.max_model_bytes,
                                     parts_.model_limits.max_files));
  std::vector<lathe::v1::ModelFile> files;
  bool config = false, weights = false;
  for (const auto& f : fetched) {
    lathe::v1::ModelFile file;
    file.set_path(f.path);
    file.set_sha256(f.sha256);
    file.set_size(f.size);
    files.push_back(file);
    config |= f.path == "config.json";
    weights |= f.path == "model.safetensors" ||
               f.path == "model.safetensors.index.json";
  }
  if (!config || !weights) {
    return Invalid("spec.model",
                   absl::StrCat(uri,
                                " is not a model directory (it needs "
                                "config.json and model.safetensors)"));
  }
  std::sort(files.begin(), files.end(),
            [](const lathe::v1::ModelFile& a, const lathe::v1::ModelFile& b) {
              return a.path() < b.path();
            });
  lathe::v1::ResolvedModel out;
  out.set_kind(lathe::v1::MODEL_SOURCE_KIND_MANIFEST);
  out.set_digest(ModelDigest(files));
  if (!expected.empty() && expected != out.digest()) {
    return Invalid("spec.model",
                   absl::StrCat("the model at ", uri, " has digest ",
                                out.digest(), ", not the #sha256= given"));
  }
  for (auto& f : files) *out.add_files() = std::move(f);
  out.set_origin(uri);
  return out;
}

absl::Status Submission::Validate(JobSpec* spec, Job* job) {
  if (spec->kind() == lathe::v1::JOB_KIND_PREDICT) {
    if (absl::StartsWith(spec->model(), kPresetPrefix)) {
      return Invalid("spec.model",
                     "a prediction needs a trained model (job:ID, job:ID@STEP, "
                     "a stored model or a directory), not a preset");
    }
    if (!spec->validation_data().empty()) {
      return Invalid("spec.validation_data",
                     "must be empty for a prediction (the input is "
                     "spec.train_data)");
    }
  } else if (spec->kind() != lathe::v1::JOB_KIND_UNSPECIFIED &&
             spec->kind() != lathe::v1::JOB_KIND_TRAIN) {
    return Invalid("spec.kind", "must be JOB_KIND_TRAIN or JOB_KIND_PREDICT");
  }
  bool task_ok = false;
  for (const char* t : kTasks) task_ok |= spec->task() == t;
  if (spec->task().empty()) return Invalid("spec.task", "is required");
  if (!task_ok) {
    return Invalid(
        "spec.task",
        absl::StrCat("unknown task \"", spec->task().substr(0, 64),
                     "\"; supported: ", absl::StrJoin(kTasks, ", ")));
  }
  RETURN_IF_ERROR(CheckModel(spec));
  if (spec->train_data().empty()) {
    return Invalid("spec.train_data", "is required");
  }
  std::map<std::string, std::string> params(spec->params().begin(),
                                            spec->params().end());
  auto parsed = ParseTrainParams(params);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.", parsed.status().message()));
  }
  // A hyperparameter the job's method or task does not use is refused, not
  // quietly ignored (lora_r without method=lora trained a full fine-tune).
  if (absl::Status applies = CheckParamsApply(spec->task(), params);
      !applies.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("spec.", applies.message()));
  }
  if (spec->device().empty()) spec->set_device("cpu");
  static const std::regex kDevice("cpu|cuda(:[0-9]{1,2})?");
  if (!std::regex_match(spec->device(), kDevice)) {
    return Invalid("spec.device",
                   absl::StrCat("\"", spec->device().substr(0, 64),
                                "\" is not cpu, cuda or cuda:N"));
  }
  if (spec->priority() < -1000 || spec->priority() > 1000) {
    return Invalid("spec.priority", "must be in [-1000, 1000]");
  }
  if (spec->max_attempts() < 0 || spec->max_attempts() > 10) {
    return Invalid("spec.max_attempts", "must be in [1, 10] (0: 3)");
  }
  if (spec->max_attempts() == 0) spec->set_max_attempts(3);
  auto* res = spec->mutable_resources();
  if (res->device_kind().empty()) {
    res->set_device_kind(absl::StartsWith(spec->device(), "cuda") ? "cuda"
                                                                  : "cpu");
  }
  if (res->device_kind() != "cpu" && res->device_kind() != "cuda") {
    return Invalid("spec.resources.device_kind", "must be cpu or cuda");
  }
  if (res->device_count() < 0 || res->device_count() > 64) {
    return Invalid("spec.resources.device_count", "must be in [1, 64]");
  }
  if (res->device_count() == 0) res->set_device_count(1);
  if (res->min_device_memory_mb() < 0) {
    return Invalid("spec.resources.min_device_memory_mb", "is negative");
  }
  if (spec->owner().size() > 128) return Invalid("spec.owner", "too long");
  if (spec->labels_size() > 64) return Invalid("spec.labels", "too many");
  for (const auto& [k, v] : spec->labels()) {
    if (k.size() > 128 || v.size() > 1024) {
      return Invalid("spec.labels", "key or value too long");
    }
  }
  if (spec->webhooks_size() > 8) {
    return Invalid("spec.webhooks", "at most 8 URLs");
  }
  for (int i = 0; i < spec->webhooks_size(); ++i) {
    const std::string field = absl::StrCat("spec.webhooks[", i, "]");
    ASSIGN_OR_RETURN(HttpUrl url, ParseHttpUrl(spec->webhooks(i), field));
    const UriPolicy none;
    const UriPolicy& policy =
        parts_.uri_policy != nullptr ? *parts_.uri_policy : none;
    if (absl::Status s = policy.Check(url, field); !s.ok()) {
      // A URL the server will not call is a mistake in the spec.
      return absl::InvalidArgumentError(s.message());
    }
  }
  if (IsRemoteUri(spec->model())) {
    ASSIGN_OR_RETURN(*job->mutable_model_source(),
                     FetchRemoteModel(spec->model()));
  }
  // Data last: resolving a file:// dataset copies it.
  ASSIGN_OR_RETURN(
      *job->mutable_train_dataset(),
      parts_.datasets->Resolve("spec.train_data", spec->train_data()));
  if (!spec->validation_data().empty()) {
    ASSIGN_OR_RETURN(*job->mutable_validation_dataset(),
                     parts_.datasets->Resolve("spec.validation_data",
                                              spec->validation_data()));
  }
  return absl::OkStatus();
}

absl::Status Submission::CheckDatasetTeam(const std::string& field,
                                          lathe::v1::Dataset* dataset,
                                          const std::string& value,
                                          const Principal& who) {
  // Imported files come from the allowed roots, which every team may read.
  if (who.admin() || !absl::StartsWith(value, "dataset:")) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(auto mine,
                   parts_.store->GetTeamDataset(dataset->sha256(), who.team));
  if (!mine.has_value()) {
    return absl::NotFoundError(
        absl::StrCat(field, ": dataset ", value, " not found"));
  }
  dataset->set_name(mine->name());
  return absl::OkStatus();
}

absl::StatusOr<Job> Submission::Submit(JobSpec spec,
                                       const std::string& client_request_id,
                                       const Principal& who) {
  if (client_request_id.size() > 128) {
    return Invalid("request_id", "too long");
  }
  if (spec.owner().empty()) {
    spec.set_owner(who.user);
  } else if (spec.owner() != who.user && !who.admin()) {
    return absl::PermissionDeniedError(
        "spec.owner: a job's owner is the user of its token; only an admin "
        "may submit for another owner");
  }
  // Another team's request ids are another namespace.
  const std::string request_id =
      client_request_id.empty()
          ? ""
          : absl::StrCat(who.team, "/", client_request_id);
  Store* store = parts_.store;
  if (!request_id.empty()) {
    ASSIGN_OR_RETURN(auto existing, store->JobIdForRequest(request_id));
    if (existing.has_value()) return store->GetJob(*existing);
  }
  Job job;
  RETURN_IF_ERROR(Validate(&spec, &job));
  RETURN_IF_ERROR(CheckDatasetTeam(
      "spec.train_data", job.mutable_train_dataset(), spec.train_data(), who));
  if (!spec.validation_data().empty()) {
    RETURN_IF_ERROR(CheckDatasetTeam("spec.validation_data",
                                     job.mutable_validation_dataset(),
                                     spec.validation_data(), who));
  }
  job.set_id(RandomId("job-"));
  job.set_team(who.team);
  *job.mutable_spec() = std::move(spec);
  job.set_create_time_ms(clock_());
  job.mutable_train_metrics();  // present (zero) in every view from the start
  Pending pending;
  pending.row.job = &job;
  pending.row.request_id = request_id;
  pending.admin = who.admin();

  // Group commit: submits that arrive while one batch is being committed
  // queue up, and the first of them commits them all in the next batch;
  // each returns once its own batch is on disk.
  mu_.Lock();
  queue_.push_back(&pending);
  while (!pending.done) {
    if (committing_) {
      done_.Wait(&mu_);
      continue;
    }
    committing_ = true;
    const size_t n = std::min(queue_.size(), kMaxBatch);
    std::vector<Pending*> batch(queue_.begin(), queue_.begin() + n);
    queue_.erase(queue_.begin(), queue_.begin() + n);
    mu_.Unlock();
    Commit(batch);
    mu_.Lock();
    for (Pending* p : batch) p->done = true;
    committing_ = false;
    done_.SignalAll();
  }
  mu_.Unlock();

  const absl::Status& status = pending.row.status;
  if (absl::IsAlreadyExists(status) && !request_id.empty()) {
    // The same request_id was committed first, earlier or in this batch.
    ASSIGN_OR_RETURN(auto existing, store->JobIdForRequest(request_id));
    if (existing.has_value()) return store->GetJob(*existing);
  }
  RETURN_IF_ERROR(status);
  return job;
}

void Submission::Commit(const std::vector<Pending*>& batch) {
  std::vector<JobLifecycle::NewJob*> rows;
  rows.reserve(batch.size());
  std::map<const Job*, bool> admin;
  for (Pending* p : batch) {
    rows.push_back(&p->row);
    admin[p->row.job] = p->admin;
  }
  parts_.lifecycle->Insert(
      &rows, [this, &admin](Job* job) -> absl::StatusOr<std::string> {
        if (IsRemoteUri(job->spec().model())) {
          // Fetched by Validate; its blobs must still be there to pin.
          for (const auto& f : job->model_source().files()) {
            if (!parts_.artifacts->Has(f.sha256(), f.size())) {
              return absl::UnavailableError(
                  "spec.model: a fetched file was collected before the job "
                  "was stored; submit again");
            }
          }
        } else {
          ASSIGN_OR_RETURN(
              *job->mutable_model_source(),
              ResolveModel(job->spec().model(), job->team(), admin[job]));
        }
        std::string submitted = "job submitted";
        if (job->model_source().kind() ==
            lathe::v1::MODEL_SOURCE_KIND_MANIFEST) {
          absl::StrAppend(&submitted, "; model ", job->model_source().origin(),
                          " pinned as ", job->model_source().digest());
        }
        return submitted;
      });
}

}  // namespace lathe::server
