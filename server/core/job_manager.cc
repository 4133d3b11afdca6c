#include "server/core/job_manager.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <memory>
#include <random>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/params.h"
#include "common/status.h"

namespace lathe::server {
namespace {

using lathe::v1::Assignment;
using lathe::v1::Checkpoint;
using lathe::v1::Dataset;
using lathe::v1::Event;
using lathe::v1::Job;
using lathe::v1::JobSpec;
using lathe::v1::JobState;

constexpr char kDatasetPrefix[] = "dataset:";
constexpr char kFilePrefix[] = "file://";
constexpr char kPresetPrefix[] = "preset:";
constexpr char kJobPrefix[] = "job:";
// The task types the training child implements (worker/tasks/task.cc).
const char* const kTasks[] = {
    "text-classification", "text-regression", "token-classification",
    "question-answering",  "causal-lm",       "masked-lm",
    "image-classification"};
constexpr size_t kMaxText = 4096;
// Most submits committed in one transaction.
constexpr size_t kMaxSubmitBatch = 256;
// Checkpoint files that hold training state, not the model.
const char* const kTrainingStateFiles[] = {"trainer_state.json",
                                           "training_state.safetensors"};

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

std::string RandomId(const char* prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%s%012x", prefix, rng() & 0xffffffffffffULL);
}

Event StateEvent(JobState state, const std::string& message) {
  Event e;
  e.set_type(lathe::v1::EVENT_TYPE_STATE);
  e.set_state(state);
  e.set_message(message);
  return e;
}

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// The metric that ranks checkpoints: the one the trainer named (negated
// when lower is better), else higher accuracy, else lower loss.
std::optional<double> Score(const Checkpoint& c) {
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

}  // namespace

bool HoldsWorker(JobState state) {
  return state == lathe::v1::RUNNING || state == lathe::v1::CANCELLING ||
         state == lathe::v1::PAUSING;
}

bool IsFinal(JobState state) {
  return state == lathe::v1::SUCCEEDED || state == lathe::v1::FAILED ||
         state == lathe::v1::CANCELLED;
}

JobManager::JobManager(JobManagerOptions options, Store* store,
                       ArtifactStore* artifacts, Metrics* metrics, Clock clock)
    : options_(std::move(options)),
      store_(store),
      artifacts_(artifacts),
      metrics_(metrics),
      clock_(clock ? std::move(clock) : Clock(NowMs)),
      models_(std::make_unique<ModelStore>(options_.models, store, artifacts,
                                           metrics, clock_)) {}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(
    JobManagerOptions options, Store* store, ArtifactStore* artifacts,
    Metrics* metrics, Clock clock) {
  for (std::string& root : options.allowed_roots) {
    if (root.empty() || root[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("allowed root \"", root, "\" is not an absolute path"));
    }
    root = CanonicalPath(root);
  }
  if (options.heartbeat_timeout <= options.heartbeat_interval) {
    return absl::InvalidArgumentError(
        "heartbeat timeout must be longer than the heartbeat interval");
  }
  const EventTailOptions& tail = options.event_tail;
  if (tail.events < 1 || tail.final_events < 0 || tail.jobs < 1 ||
      tail.final_jobs < 0) {
    return absl::InvalidArgumentError(
        "event tail: events and jobs must be positive, final_events and "
        "final_jobs not negative");
  }
  auto manager = std::unique_ptr<JobManager>(new JobManager(
      std::move(options), store, artifacts, metrics, std::move(clock)));
  RETURN_IF_ERROR(manager->Init());
  manager->notifier_ = std::thread([m = manager.get()] { m->NotifyLoop(); });
  return manager;
}

JobManager::~JobManager() {
  {
    absl::MutexLock lock(&notify_mu_);
    notify_stop_ = true;
  }
  if (notifier_.joinable()) notifier_.join();
}

void JobManager::NotifyLoop() {
  std::vector<std::weak_ptr<EventListener>> batch;
  while (true) {
    {
      absl::MutexLock lock(&notify_mu_);
      const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(notify_mu_) {
        return notify_stop_ || !to_notify_.empty();
      };
      notify_mu_.Await(absl::Condition(&ready));
      if (notify_stop_) return;
      batch.swap(to_notify_);
    }
    for (const auto& weak : batch) {
      if (auto listener = weak.lock()) listener->OnJobChanged();
    }
    batch.clear();
  }
}

absl::Status JobManager::Init() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(counts_, store_->CountJobsByState());
  // Jobs that were running keep running: their workers reconnect, their
  // heartbeats keep a placeholder alive and their reports carry on. A worker
  // that does not come back within the heartbeat timeout loses its job to
  // the queue as usual.
  for (JobState s :
       {lathe::v1::RUNNING, lathe::v1::CANCELLING, lathe::v1::PAUSING}) {
    ASSIGN_OR_RETURN(auto jobs, store_->JobsInState(s));
    for (const Job& job : jobs) {
      WorkerState& w = workers_[job.worker_id()];
      w.name = "(reconnecting)";
      w.last_seen_ms = clock_();
      w.placeholder = true;
      w.jobs.insert(job.id());
    }
  }
  PublishCounts();
  metrics_->SetWorkers(static_cast<double>(workers_.size()));
  PublishStoredBytes();
  return absl::OkStatus();
}

void JobManager::PublishCounts() {
  for (int s = lathe::v1::QUEUED; s <= lathe::v1::PAUSED; ++s) {
    metrics_->SetJobsInState(JobState_Name(static_cast<JobState>(s)),
                             static_cast<double>(counts_[s]));
  }
  metrics_->SetQueueDepth(static_cast<double>(counts_[lathe::v1::QUEUED]));
}

void JobManager::Transition(Job* job, JobState state,
                            const std::string& message,
                            std::vector<Event>* events) {
  if (job->state() != lathe::v1::JOB_STATE_UNSPECIFIED) {
    counts_[job->state()]--;
  }
  counts_[state]++;
  if (HoldsWorker(job->state()) && !HoldsWorker(state)) {
    metrics_->ClearRunningJob(job->id());
  }
  job->set_state(state);
  if (IsFinal(state)) job->set_end_time_ms(clock_());
  events->push_back(StateEvent(state, message));
  PublishCounts();
}

absl::Status JobManager::Save(Job* job, std::vector<Event>* events) {
  absl::Status s = store_->UpdateJob(job, events);
  if (s.ok()) {
    PublishTail(*job, events != nullptr ? *events : std::vector<Event>());
  } else {
    // What the store holds now is uncertain; watchers read it from there.
    DropTail(job->id());
  }
  changed_.SignalAll();
  if (s.ok() && IsFinal(job->state())) {
    // A finished job never runs again: its model files may go once nothing
    // else refers to them.
    auto released = store_->ReleaseJobModel(job->id());
    if (released.ok() && !released->empty()) {
      models_->Collect(*released);
      PublishStoredBytes();
    }
  }
  return s;
}

absl::StatusOr<std::string> JobManager::ResolveLocalPath(
    const std::string& field, const std::string& value) {
  std::string path = value;
  if (absl::StartsWith(path, kFilePrefix))
    path = path.substr(strlen(kFilePrefix));
  if (path.empty() || path[0] != '/') {
    return Invalid(field, absl::StrCat("\"", value,
                                       "\" is not an absolute path or "
                                       "file:// URI"));
  }
  const std::string canonical = CanonicalPath(path);
  for (const std::string& root : options_.allowed_roots) {
    if (PathWithin(canonical, root)) return canonical;
  }
  return Invalid(
      field,
      absl::StrCat("\"", value, "\" is outside the server's allowed roots (",
                   options_.allowed_roots.empty()
                       ? std::string("none configured; see "
                                     "--allow-root")
                       : absl::StrJoin(options_.allowed_roots, ", "),
                   ")"));
}

absl::StatusOr<Dataset> JobManager::ResolveData(const std::string& field,
                                                const std::string& value) {
  if (value.size() > kMaxText) return Invalid(field, "too long");
  if (absl::StartsWith(value, kDatasetPrefix)) {
    const std::string sha = value.substr(strlen(kDatasetPrefix));
    if (!IsSha256Hex(sha)) {
      return Invalid(field, absl::StrCat("\"", value,
                                         "\" is not a dataset reference "
                                         "(dataset:<sha256>)"));
    }
    ASSIGN_OR_RETURN(auto ds, store_->GetDataset(sha));
    if (!ds.has_value() || !artifacts_->Has(sha, ds->size())) {
      return Invalid(field, absl::StrCat("dataset ", value, " does not exist"));
    }
    return *ds;
  }
  if (absl::StartsWith(value, kFilePrefix) || absl::StartsWith(value, "/")) {
    ASSIGN_OR_RETURN(std::string path, ResolveLocalPath(field, value));
    // Import the file so that every worker, local or not, fetches the same
    // bytes by digest.
    auto size = FileSize(path);
    if (!size.ok()) {
      return Invalid(field, absl::StrCat("cannot read \"", value,
                                         "\": ", size.status().message()));
    }
    if (*size > options_.max_upload_bytes) {
      return Invalid(field, absl::StrCat("\"", value, "\" is larger than ",
                                         options_.max_upload_bytes, " bytes"));
    }
    ASSIGN_OR_RETURN(auto writer,
                     artifacts_->NewWriter(options_.max_upload_bytes));
    auto data = ReadFile(path);
    if (!data.ok()) {
      return Invalid(field, absl::StrCat("cannot read \"", value,
                                         "\": ", data.status().message()));
    }
    RETURN_IF_ERROR(writer->Append(*data));
    ASSIGN_OR_RETURN(std::string sha, writer->Commit());
    std::string name = path.substr(path.rfind('/') + 1);
    return AddDataset(name, sha, static_cast<int64_t>(data->size()));
  }
  return Invalid(field, absl::StrCat("\"", value,
                                     "\" is not a dataset reference or "
                                     "file:// URI (the CLI uploads local "
                                     "files)"));
}

absl::Status JobManager::CheckModel(JobSpec* spec) {
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
  if (model[0] == '/' || absl::StartsWith(model, kFilePrefix)) {
    ASSIGN_OR_RETURN(std::string dir, ResolveLocalPath("spec.model", model));
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

absl::StatusOr<lathe::v1::ResolvedModel> JobManager::ResolveModel(
    const std::string& model) {
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
  if (absl::StartsWith(model, kJobPrefix)) return ResolveJobModel(model);
  ASSIGN_OR_RETURN(auto stored, store_->GetModel(model));
  if (!stored.has_value()) {
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

absl::StatusOr<lathe::v1::ResolvedModel> JobManager::ResolveJobModel(
    const std::string& model) {
  std::string id;
  std::optional<int64_t> step;
  if (!ParseJobRef(model, &id, &step)) {
    return Invalid("spec.model", "is not job:ID or job:ID@STEP");
  }
  auto source = store_->GetJob(id);
  if (absl::IsNotFound(source.status())) {
    return absl::NotFoundError(
        absl::StrCat("spec.model: job ", id, " not found"));
  }
  RETURN_IF_ERROR(source.status());
  ASSIGN_OR_RETURN(auto listing, CheckpointsAndBest(id));
  const auto& [cps, best_step] = listing;
  if (cps.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "spec.model: job ", id, " (", JobState_Name(source->state()),
        ") has no checkpoint yet"));
  }
  // Without a step: the best by evaluation metric, else the latest.
  const int64_t want = step.has_value()
                           ? *step
                           : (best_step != 0 ? best_step : cps.back().step());
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
    for (const char* t : kTrainingStateFiles) state |= f.name() == t;
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
  out.set_origin(absl::StrCat(kJobPrefix, id, "@", want));
  return out;
}

absl::Status JobManager::ValidateSpec(JobSpec* spec, Job* job) {
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
  // Data last: resolving a file:// dataset copies it.
  ASSIGN_OR_RETURN(*job->mutable_train_dataset(),
                   ResolveData("spec.train_data", spec->train_data()));
  if (!spec->validation_data().empty()) {
    ASSIGN_OR_RETURN(
        *job->mutable_validation_dataset(),
        ResolveData("spec.validation_data", spec->validation_data()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Job> JobManager::Submit(JobSpec spec,
                                       const std::string& request_id) {
  if (request_id.size() > 128) return Invalid("request_id", "too long");
  if (!request_id.empty()) {
    ASSIGN_OR_RETURN(auto existing, store_->JobIdForRequest(request_id));
    if (existing.has_value()) return store_->GetJob(*existing);
  }
  PendingSubmit submit;
  Job& job = submit.job;
  RETURN_IF_ERROR(ValidateSpec(&spec, &job));
  job.set_id(RandomId("job-"));
  *job.mutable_spec() = std::move(spec);
  job.set_create_time_ms(clock_());
  job.mutable_train_metrics();  // present (zero) in every view from the start
  submit.request_id = request_id;

  // Group commit: submits that arrive while one batch is being committed
  // queue up, and the first of them commits them all in the next batch;
  // each returns once its own batch is on disk.
  submit_mu_.Lock();
  submit_queue_.push_back(&submit);
  while (!submit.done) {
    if (committing_) {
      submit_done_.Wait(&submit_mu_);
      continue;
    }
    committing_ = true;
    const size_t n = std::min(submit_queue_.size(), kMaxSubmitBatch);
    std::vector<PendingSubmit*> batch(submit_queue_.begin(),
                                      submit_queue_.begin() + n);
    submit_queue_.erase(submit_queue_.begin(), submit_queue_.begin() + n);
    submit_mu_.Unlock();
    CommitSubmits(batch);
    submit_mu_.Lock();
    for (PendingSubmit* p : batch) p->done = true;
    committing_ = false;
    submit_done_.SignalAll();
  }
  submit_mu_.Unlock();

  if (absl::IsAlreadyExists(submit.status) && !request_id.empty()) {
    // The same request_id was committed first, earlier or in this batch.
    ASSIGN_OR_RETURN(auto existing, store_->JobIdForRequest(request_id));
    if (existing.has_value()) return store_->GetJob(*existing);
  }
  RETURN_IF_ERROR(submit.status);
  return std::move(job);
}

void JobManager::CommitSubmits(const std::vector<PendingSubmit*>& batch) {
  // Shared: no model-store collection between resolving and pinning.
  absl::ReaderMutexLock pin_lock(models_->pin_mutex());
  absl::MutexLock lock(&mu_);
  std::vector<Store::NewJob> rows;
  std::vector<PendingSubmit*> resolved;
  for (PendingSubmit* p : batch) {
    Job& job = p->job;
    auto source = ResolveModel(job.spec().model());
    if (!source.ok()) {
      p->status = source.status();
      continue;
    }
    *job.mutable_model_source() = *std::move(source);
    std::string submitted = "job submitted";
    if (job.model_source().kind() == lathe::v1::MODEL_SOURCE_KIND_MANIFEST) {
      absl::StrAppend(&submitted, "; model ", job.model_source().origin(),
                      " pinned as ", job.model_source().digest());
    }
    Transition(&job, lathe::v1::QUEUED, submitted, &p->events);
    rows.push_back(Store::NewJob{&job, p->request_id, &p->events, {}});
    resolved.push_back(p);
  }
  if (rows.empty()) return;
  store_->InsertJobs(&rows);
  bool any = false;
  for (size_t i = 0; i < rows.size(); ++i) {
    PendingSubmit* p = resolved[i];
    p->status = rows[i].status;
    if (!p->status.ok()) {
      counts_[lathe::v1::QUEUED]--;
      continue;
    }
    PublishTail(p->job, p->events);
    any = true;
  }
  PublishCounts();
  if (any) changed_.SignalAll();
}

absl::StatusOr<Job> JobManager::Get(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
  std::vector<Job> one = {std::move(job)};
  Annotate(&one);
  return std::move(one[0]);
}

void JobManager::Annotate(std::vector<Job>* jobs) {
  bool any_queued = false;
  for (const Job& j : *jobs) any_queued |= j.state() == lathe::v1::QUEUED;
  if (!any_queued) return;
  auto queued = store_->JobsInState(lathe::v1::QUEUED);
  if (!queued.ok()) return;
  // The order a free worker would take them in, fair share aside.
  std::stable_sort(queued->begin(), queued->end(),
                   [](const Job& a, const Job& b) {
                     return a.spec().priority() > b.spec().priority();
                   });
  std::map<std::string, int64_t> position;
  for (size_t i = 0; i < queued->size(); ++i) {
    position[(*queued)[i].id()] = static_cast<int64_t>(i) + 1;
  }
  // Estimate: queue slots ahead, divided among live workers, each taking as
  // long as recent successful attempts took on average.
  int64_t avg_ms = 0;
  auto recent = store_->RecentRunTimesMs(20);
  if (recent.ok() && !recent->empty()) {
    for (int64_t t : *recent) avg_ms += t;
    avg_ms /= static_cast<int64_t>(recent->size());
  }
  int64_t workers = 0;
  {
    absl::MutexLock lock(&mu_);
    workers = static_cast<int64_t>(workers_.size());
  }
  const int64_t now = clock_();
  for (Job& j : *jobs) {
    auto it = position.find(j.id());
    if (j.state() != lathe::v1::QUEUED || it == position.end()) continue;
    j.set_queue_position(it->second);
    if (avg_ms > 0 && workers > 0) {
      const int64_t rounds = (it->second - 1) / workers;
      j.set_estimated_start_time_ms(
          std::max(now + rounds * avg_ms, j.not_before_ms()));
    }
  }
}

absl::StatusOr<std::pair<std::vector<Job>, std::string>> JobManager::List(
    const std::vector<int>& states, const std::string& owner, int page_size,
    const std::string& page_token) {
  if (page_size < 0 || page_size > 1000) {
    return Invalid("page_size", "must be in [0, 1000]");
  }
  if (page_size == 0) page_size = 100;
  int64_t before = 0;
  if (!page_token.empty() &&
      (!absl::SimpleAtoi(page_token, &before) || before <= 0)) {
    return Invalid("page_token", "is not a token from a previous response");
  }
  for (int s : states) {
    if (!lathe::v1::JobState_IsValid(s) ||
        s == lathe::v1::JOB_STATE_UNSPECIFIED) {
      return Invalid("states", absl::StrCat(s, " is not a job state"));
    }
  }
  ASSIGN_OR_RETURN(JobPage page,
                   store_->ListJobs(states, owner, page_size, before));
  Annotate(&page.jobs);
  std::string next =
      page.next_before_seq > 0 ? absl::StrCat(page.next_before_seq) : "";
  return std::make_pair(std::move(page.jobs), next);
}

absl::StatusOr<Job> JobManager::Cancel(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
  std::vector<Event> events;
  switch (job.state()) {
    case lathe::v1::QUEUED:
    case lathe::v1::PAUSED:
      job.set_error("cancelled by request");
      Transition(&job, lathe::v1::CANCELLED,
                 absl::StrCat("cancelled while ", JobState_Name(job.state())),
                 &events);
      break;
    case lathe::v1::RUNNING:
    case lathe::v1::PAUSING:
      Transition(&job, lathe::v1::CANCELLING, "cancel requested", &events);
      break;
    default:
      return job;  // already final or cancelling
  }
  RETURN_IF_ERROR(Save(&job, &events));
  return job;
}

absl::StatusOr<Job> JobManager::Pause(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
  std::vector<Event> events;
  switch (job.state()) {
    case lathe::v1::QUEUED:
      Transition(&job, lathe::v1::PAUSED, "paused while queued", &events);
      break;
    case lathe::v1::RUNNING:
      Transition(&job, lathe::v1::PAUSING,
                 "pause requested: checkpointing, then releasing the worker",
                 &events);
      break;
    case lathe::v1::PAUSING:
    case lathe::v1::PAUSED:
      return job;
    default:
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", id, " is ", JobState_Name(job.state()), "; cannot pause"));
  }
  RETURN_IF_ERROR(Save(&job, &events));
  return job;
}

absl::StatusOr<Job> JobManager::Resume(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
  if (job.state() == lathe::v1::QUEUED || job.state() == lathe::v1::RUNNING) {
    return job;
  }
  if (job.state() != lathe::v1::PAUSED) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", JobState_Name(job.state()),
                     "; only a PAUSED job "
                     "can be resumed"));
  }
  std::vector<Event> events;
  job.set_not_before_ms(0);
  Transition(&job, lathe::v1::QUEUED,
             "resumed; the next attempt continues from the latest checkpoint",
             &events);
  RETURN_IF_ERROR(Save(&job, &events));
  return job;
}

absl::StatusOr<Job> JobManager::RequestCheckpoint(const std::string& id) {
  if (id.empty()) return Invalid("id", "is required");
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
  if (job.state() != lathe::v1::RUNNING) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", JobState_Name(job.state()),
                     "; only a RUNNING job can checkpoint"));
  }
  if (job.checkpoint_requested()) return job;
  job.set_checkpoint_requested(true);
  Event e;
  e.set_type(lathe::v1::EVENT_TYPE_LOG);
  e.set_message("checkpoint requested");
  std::vector<Event> events = {e};
  RETURN_IF_ERROR(Save(&job, &events));
  return job;
}

void JobManager::PublishTail(const Job& job, const std::vector<Event>& events) {
  auto snapshot = std::make_shared<const Job>(job);
  const bool final = IsFinal(job.state());
  const int64_t before =
      job.last_event_seq() - static_cast<int64_t>(events.size());
  absl::MutexLock lock(&tail_mu_);
  auto it = tails_.find(job.id());
  if (it == tails_.end()) {
    auto tail = std::make_shared<EventTail>();
    tail->base_seq = before;
    live_tails_.push_back(job.id());
    tail->order = std::prev(live_tails_.end());
    it = tails_.emplace(job.id(), std::move(tail)).first;
  }
  EventTail& tail = *it->second;
  const int64_t held_last =
      tail.base_seq + static_cast<int64_t>(tail.events.size());
  if (held_last != before) {
    // Not a continuation of what is held (only after a failed write): start
    // over from the new events, so a watcher never sees a gap.
    tail.events.clear();
    tail.base_seq = before;
  }
  tail.job = std::move(snapshot);
  tail.events.insert(tail.events.end(), events.begin(), events.end());
  if (final && !tail.final) {
    final_tails_.splice(final_tails_.end(), live_tails_, tail.order);
    tail.final = true;
  } else {
    std::list<std::string>& order = tail.final ? final_tails_ : live_tails_;
    order.splice(order.end(), order, tail.order);
  }
  const size_t keep = static_cast<size_t>(
      final ? options_.event_tail.final_events : options_.event_tail.events);
  while (tail.events.size() > keep) {
    tail.base_seq = tail.events.front().seq();
    tail.events.pop_front();
  }
  if (!events.empty() || final) SignalTailLocked(&tail);
  EvictTailsLocked();
}

void JobManager::InstallTail(const Job& job) {
  if (IsFinal(job.state())) return;
  auto snapshot = std::make_shared<const Job>(job);
  absl::MutexLock lock(&tail_mu_);
  if (tails_.count(job.id()) > 0) return;
  auto tail = std::make_shared<EventTail>();
  tail->job = std::move(snapshot);
  tail->base_seq = job.last_event_seq();
  live_tails_.push_back(job.id());
  tail->order = std::prev(live_tails_.end());
  tails_.emplace(job.id(), std::move(tail));
  EvictTailsLocked();
}

void JobManager::DropTail(const std::string& job_id) {
  absl::MutexLock lock(&tail_mu_);
  auto it = tails_.find(job_id);
  if (it != tails_.end()) DropTailLocked(it);
}

void JobManager::DropTailLocked(
    std::unordered_map<std::string, std::shared_ptr<EventTail>>::iterator it) {
  EventTail& tail = *it->second;
  (tail.final ? final_tails_ : live_tails_).erase(tail.order);
  tail.dropped = true;
  SignalTailLocked(&tail);
  tails_.erase(it);
}

void JobManager::SignalTailLocked(EventTail* tail) {
  tail->changed.SignalAll();
  if (tail->listeners.empty()) return;
  absl::MutexLock lock(&notify_mu_);
  if (to_notify_.empty()) {
    to_notify_.swap(tail->listeners);
  } else {
    to_notify_.insert(to_notify_.end(), tail->listeners.begin(),
                      tail->listeners.end());
    tail->listeners.clear();
  }
  tail->purge_at = 64;
}

void JobManager::EvictTailsLocked() {
  const auto drop_oldest = [this](std::list<std::string>* order) {
    DropTailLocked(tails_.find(order->front()));
  };
  while (final_tails_.size() >
         static_cast<size_t>(options_.event_tail.final_jobs)) {
    drop_oldest(&final_tails_);
  }
  while (tails_.size() > static_cast<size_t>(options_.event_tail.jobs)) {
    drop_oldest(final_tails_.empty() ? &live_tails_ : &final_tails_);
  }
}

absl::StatusOr<std::pair<Job, std::vector<Event>>> JobManager::WaitForEvents(
    const std::string& id, int64_t after_seq, int limit,
    absl::Duration max_wait) {
  return NextEvents(id, after_seq, limit, absl::Now() + max_wait, nullptr);
}

absl::StatusOr<std::pair<Job, std::vector<Event>>> JobManager::PollEvents(
    const std::string& id, int64_t after_seq, int limit,
    std::weak_ptr<EventListener> listener) {
  return NextEvents(id, after_seq, limit, absl::InfinitePast(), &listener);
}

absl::StatusOr<std::pair<Job, std::vector<Event>>> JobManager::NextEvents(
    const std::string& id, int64_t after_seq, int limit, absl::Time deadline,
    const std::weak_ptr<EventListener>* listener) {
  if (id.empty()) return Invalid("id", "is required");
  if (limit < 0) limit = 0;
  const auto shutting_down = [] {
    return absl::UnavailableError("the server is shutting down");
  };
  while (true) {
    std::shared_ptr<const Job> held;
    std::vector<Event> events;
    bool shutdown = false;
    {
      absl::MutexLock lock(&tail_mu_);
      while (true) {
        auto it = tails_.find(id);
        if (it == tails_.end() || after_seq < it->second->base_seq) break;
        // Keeps the tail (and its condition variable) alive while waiting,
        // even if it is dropped meanwhile.
        std::shared_ptr<EventTail> tail = it->second;
        const int64_t last = tail->job->last_event_seq();
        if (last > after_seq) {
          const auto from = tail->events.begin() + (after_seq - tail->base_seq);
          events.assign(from,
                        from + std::min<int64_t>(limit, last - after_seq));
          held = tail->job;
          break;
        }
        shutdown = tail_shutdown_;
        if (IsFinal(tail->job->state()) || shutdown ||
            (listener == nullptr && absl::Now() >= deadline)) {
          held = tail->job;
          break;
        }
        if (listener != nullptr) {
          // Registered under the same lock as the check above: no change
          // can slip between them unnoticed.
          if (tail->listeners.size() >= tail->purge_at) {
            auto& ls = tail->listeners;
            ls.erase(std::remove_if(ls.begin(), ls.end(),
                                    [](const auto& l) { return l.expired(); }),
                     ls.end());
            tail->purge_at = std::max<size_t>(64, 2 * tail->listeners.size());
          }
          tail->listeners.push_back(*listener);
          held = tail->job;
          break;
        }
        tail->changed.WaitWithDeadline(&tail_mu_, deadline);
      }
    }
    if (held != nullptr) {
      if (shutdown && listener != nullptr && !IsFinal(held->state())) {
        return shutting_down();
      }
      // The copy happens outside the lock: snapshots are immutable.
      return std::make_pair(Job(*held), std::move(events));
    }

    // Older than the tail, or a job not held: the store has it.
    ASSIGN_OR_RETURN(auto stored, store_->EventsAfter(id, after_seq, limit));
    if (!stored.empty()) {
      // Read after the events, the job is at least as new as they are.
      ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
      return std::make_pair(std::move(job), std::move(stored));
    }
    absl::MutexLock lock(&mu_);
    // Under mu_ no commit lands between this read and the tail it starts.
    ASSIGN_OR_RETURN(Job job, store_->GetJob(id));
    if (job.last_event_seq() > after_seq) {  // written meanwhile
      ASSIGN_OR_RETURN(stored, store_->EventsAfter(id, after_seq, limit));
      return std::make_pair(std::move(job), std::move(stored));
    }
    if (shutdown_ && listener != nullptr && !IsFinal(job.state())) {
      return shutting_down();
    }
    if (IsFinal(job.state()) || shutdown_ ||
        (listener == nullptr && absl::Now() >= deadline)) {
      return std::make_pair(std::move(job), std::vector<Event>());
    }
    // Waits (or registers the listener) on a tail from here on.
    InstallTail(job);
  }
}

absl::StatusOr<std::pair<std::vector<Checkpoint>, int64_t>>
JobManager::ListCheckpoints(const std::string& job_id) {
  if (job_id.empty()) return Invalid("job_id", "is required");
  RETURN_IF_ERROR(store_->GetJob(job_id).status());
  return CheckpointsAndBest(job_id);
}

absl::StatusOr<std::pair<std::vector<Checkpoint>, int64_t>>
JobManager::CheckpointsAndBest(const std::string& job_id) {
  ASSIGN_OR_RETURN(auto cps, store_->Checkpoints(job_id));
  int64_t best_step = 0;
  std::optional<double> best;
  for (const Checkpoint& c : cps) {
    auto s = Score(c);
    // Later checkpoints win ties: they trained longer for the same score.
    if (s.has_value() && (!best.has_value() || *s >= *best)) {
      best = s;
      best_step = c.step();
    }
  }
  return std::make_pair(std::move(cps), best_step);
}

absl::StatusOr<ResolvedFile> JobManager::ResolveCheckpointFile(
    const std::string& job_id, const std::string& selector,
    const std::string& file) {
  if (file.empty()) return Invalid("file", "is required");
  ASSIGN_OR_RETURN(auto listing, ListCheckpoints(job_id));
  auto& [cps, best_step] = listing;
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
      step = best_step;
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

absl::StatusOr<Dataset> JobManager::AddDataset(const std::string& name,
                                               const std::string& sha256,
                                               int64_t size) {
  Dataset ds;
  ds.set_ref(absl::StrCat(kDatasetPrefix, sha256));
  ds.set_name(name);
  ds.set_size(size);
  ds.set_sha256(sha256);
  RETURN_IF_ERROR(store_->PutDataset(ds));
  PublishStoredBytes();
  return ds;
}

absl::StatusOr<std::string> JobManager::DatasetPath(const std::string& ref) {
  if (!absl::StartsWith(ref, kDatasetPrefix)) {
    return Invalid("ref", "is not a dataset reference");
  }
  const std::string sha = ref.substr(strlen(kDatasetPrefix));
  if (!IsSha256Hex(sha)) return Invalid("ref", "is not a dataset reference");
  ASSIGN_OR_RETURN(auto ds, store_->GetDataset(sha));
  if (!ds.has_value()) {
    return absl::NotFoundError(absl::StrCat("dataset ", ref, " not found"));
  }
  return artifacts_->PathFor(sha);
}

absl::StatusOr<WorkerRegistration> JobManager::RegisterWorker(
    const std::string& name, const std::vector<lathe::v1::Device>& devices,
    const std::string& hostname) {
  if (name.empty() || name.size() > 128) {
    return Invalid("name", "must have 1 to 128 characters");
  }
  if (devices.empty() || devices.size() > 64) {
    return Invalid("devices", "must list 1 to 64 devices");
  }
  static const std::regex kDevice("cpu|cuda:[0-9]{1,2}");
  std::vector<std::string> names;
  for (const auto& d : devices) {
    if (!std::regex_match(d.name(), kDevice) || d.memory_mb() < 0) {
      return Invalid("devices", absl::StrCat("\"", d.name().substr(0, 64),
                                             "\" is not cpu or cuda:N"));
    }
    names.push_back(d.name());
  }
  const std::string id = RandomId("worker-");
  RETURN_IF_ERROR(store_->PutWorker(id, name, hostname.substr(0, 256),
                                    absl::StrJoin(names, ","), clock_()));
  absl::MutexLock lock(&mu_);
  WorkerState& w = workers_[id];
  w.name = name;
  w.last_seen_ms = clock_();
  w.devices = devices;
  metrics_->SetWorkers(static_cast<double>(workers_.size()));
  changed_.SignalAll();
  return WorkerRegistration{id, options_.heartbeat_interval,
                            options_.heartbeat_timeout};
}

absl::StatusOr<WorkerCommands> JobManager::Heartbeat(
    const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker ", worker_id, " is not registered"));
  }
  it->second.last_seen_ms = clock_();
  WorkerCommands out;
  for (const std::string& job_id : it->second.jobs) {
    auto job = store_->GetJob(job_id);
    if (!job.ok() || !HoldsWorker(job->state()) ||
        job->worker_id() != worker_id ||
        job->state() == lathe::v1::CANCELLING) {
      out.cancel.push_back(job_id);
    } else if (job->state() == lathe::v1::PAUSING) {
      out.pause.push_back(job_id);
    } else if (job->checkpoint_requested()) {
      out.checkpoint.push_back(job_id);
    }
  }
  return out;
}

bool JobManager::Fits(const WorkerState& worker, const JobSpec& spec) {
  const auto& res = spec.resources();
  const std::string kind =
      res.device_kind().empty() ? "cpu" : res.device_kind();
  int matching = 0;
  for (const auto& d : worker.devices) {
    const std::string dkind =
        absl::StartsWith(d.name(), "cuda") ? "cuda" : "cpu";
    if (dkind != kind) continue;
    if (res.min_device_memory_mb() > 0 &&
        d.memory_mb() < res.min_device_memory_mb()) {
      continue;
    }
    ++matching;
  }
  return matching >= std::max(1, res.device_count());
}

absl::Duration JobManager::Backoff(int attempt) const {
  absl::Duration d = options_.retry_backoff_base;
  for (int i = 1; i < attempt && d < options_.retry_backoff_max; ++i) d *= 2;
  return std::min(d, options_.retry_backoff_max);
}

absl::StatusOr<std::optional<Assignment>> JobManager::AcquireJob(
    const std::string& worker_id, absl::Duration max_wait) {
  const absl::Time deadline = absl::Now() + max_wait;
  absl::MutexLock lock(&mu_);
  while (true) {
    auto w = workers_.find(worker_id);
    if (w == workers_.end()) {
      return absl::NotFoundError(
          absl::StrCat("worker ", worker_id, " is not registered"));
    }
    const int64_t now = clock_();
    w->second.last_seen_ms = now;
    ASSIGN_OR_RETURN(auto queued, store_->JobsInState(lathe::v1::QUEUED));
    // Running jobs per owner, for limits and fair share.
    std::map<std::string, int> running;
    for (JobState st :
         {lathe::v1::RUNNING, lathe::v1::CANCELLING, lathe::v1::PAUSING}) {
      ASSIGN_OR_RETURN(auto held, store_->JobsInState(st));
      for (const Job& j : held) running[j.spec().owner()]++;
    }
    const Job* best = nullptr;
    int64_t next_ready_ms = 0;
    for (const Job& j : queued) {  // oldest first
      if (j.not_before_ms() > now) {
        if (next_ready_ms == 0 || j.not_before_ms() < next_ready_ms) {
          next_ready_ms = j.not_before_ms();
        }
        continue;
      }
      if (!Fits(w->second, j.spec())) continue;
      const int owner_running = running[j.spec().owner()];
      if (options_.max_running_per_owner > 0 &&
          owner_running >= options_.max_running_per_owner) {
        continue;
      }
      if (best == nullptr || j.spec().priority() > best->spec().priority() ||
          (j.spec().priority() == best->spec().priority() &&
           owner_running < running[best->spec().owner()])) {
        best = &j;
      }
    }
    if (best != nullptr) {
      Job job = *best;
      ASSIGN_OR_RETURN(auto checkpoints, store_->Checkpoints(job.id()));
      job.set_attempt(job.attempt() + 1);
      job.set_worker_id(worker_id);
      job.set_not_before_ms(0);
      job.set_checkpoint_requested(false);
      if (job.start_time_ms() == 0) {
        job.set_start_time_ms(now);
        metrics_->ObserveStartLatency(
            static_cast<double>(now - job.create_time_ms()) / 1000.0);
      }
      std::vector<Event> events;
      std::string message =
          absl::StrCat("attempt ", job.attempt(), " started on worker ",
                       w->second.name, " (", worker_id, ")");
      if (!checkpoints.empty()) {
        absl::StrAppend(&message, ", continuing from the checkpoint at step ",
                        checkpoints.back().step());
      }
      Transition(&job, lathe::v1::RUNNING, message, &events);
      RETURN_IF_ERROR(Save(&job, &events));
      RETURN_IF_ERROR(
          store_->RecordAttemptStart(job.id(), job.attempt(), worker_id, now));
      w->second.jobs.insert(job.id());
      Assignment a;
      a.set_job_id(job.id());
      a.set_attempt(job.attempt());
      *a.mutable_spec() = job.spec();
      *a.mutable_train_dataset() = job.train_dataset();
      if (job.has_validation_dataset()) {
        *a.mutable_validation_dataset() = job.validation_dataset();
      }
      if (!checkpoints.empty()) {
        *a.mutable_resume_checkpoint() = checkpoints.back();
      }
      if (job.has_model_source()) *a.mutable_model() = job.model_source();
      return std::optional<Assignment>(std::move(a));
    }
    if (shutdown_ || absl::Now() >= deadline) {
      return std::optional<Assignment>();
    }
    absl::Time wake = deadline;
    if (next_ready_ms > 0) {
      wake =
          std::min(wake, absl::Now() + absl::Milliseconds(next_ready_ms - now));
    }
    changed_.WaitWithDeadline(&mu_, wake);
  }
}

absl::StatusOr<Job> JobManager::LoadRunning(const std::string& job_id,
                                            int attempt) {
  ASSIGN_OR_RETURN(Job job, store_->GetJob(job_id));
  if (job.attempt() != attempt) {
    return absl::FailedPreconditionError(
        absl::StrCat("attempt ", attempt, " of job ", job_id,
                     " is stale; the current attempt is ", job.attempt()));
  }
  if (!HoldsWorker(job.state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " is ", JobState_Name(job.state()), ", not running"));
  }
  return job;
}

absl::Status JobManager::CheckAttempt(const std::string& job_id, int attempt) {
  absl::MutexLock lock(&mu_);
  return LoadRunning(job_id, attempt).status();
}

absl::Status JobManager::ApplyCheckpoint(Job* job, Event* event) {
  Checkpoint* cp = event->mutable_checkpoint();
  if (cp->step() < 0) return Invalid("events.checkpoint.step", "is negative");
  if (cp->files().empty())
    return Invalid("events.checkpoint.files", "is empty");
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
  RETURN_IF_ERROR(store_->PutCheckpoint(job->id(), *cp));
  job->set_checkpoint_requested(false);
  ApplyRetention(job->id());
  PublishStoredBytes();
  return absl::OkStatus();
}

void JobManager::ApplyRetention(const std::string& job_id) {
  if (options_.keep_checkpoints <= 0) return;
  auto listing = CheckpointsAndBest(job_id);
  if (!listing.ok()) return;
  const auto& [cps, best_step] = *listing;
  const size_t keep = static_cast<size_t>(options_.keep_checkpoints);
  if (cps.size() <= keep) return;
  for (size_t i = 0; i + keep < cps.size(); ++i) {
    const Checkpoint& c = cps[i];
    if (c.step() == best_step) continue;
    if (!store_->DeleteCheckpoint(job_id, c.step()).ok()) continue;
    for (const auto& f : c.files()) {
      auto referenced = store_->BlobReferenced(f.sha256());
      if (referenced.ok() && !*referenced) artifacts_->Remove(f.sha256());
    }
  }
}

void JobManager::PublishStoredBytes() {
  auto bytes = store_->StoredBytes();
  if (bytes.ok()) metrics_->SetStoredBytes(static_cast<double>(*bytes));
}

absl::StatusOr<JobCommands> JobManager::ReportEvents(
    const std::string& job_id, int attempt, std::vector<Event> events) {
  if (events.size() > 1000) return Invalid("events", "at most 1000 per call");
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, LoadRunning(job_id, attempt));
  for (Event& e : events) {
    e.set_seq(0);
    e.set_time_ms(0);
    if (e.message().size() > 16384) e.mutable_message()->resize(16384);
    switch (e.type()) {
      case lathe::v1::EVENT_TYPE_LOG:
        break;
      case lathe::v1::EVENT_TYPE_TRAIN_METRICS:
        *job.mutable_train_metrics() = e.train();
        metrics_->SetRunningJob(job.id(), e.train().loss(),
                                e.train().samples_per_second());
        break;
      case lathe::v1::EVENT_TYPE_EVAL_METRICS:
        for (const auto& [k, v] : e.eval())
          (*job.mutable_eval_metrics())[k] = v;
        break;
      case lathe::v1::EVENT_TYPE_CHECKPOINT:
        RETURN_IF_ERROR(ApplyCheckpoint(&job, &e));
        break;
      default:
        return Invalid(
            "events.type",
            "workers report log, metrics and checkpoint events only");
    }
  }
  RETURN_IF_ERROR(Save(&job, &events));
  JobCommands commands;
  commands.cancel = job.state() == lathe::v1::CANCELLING;
  commands.pause = job.state() == lathe::v1::PAUSING;
  commands.checkpoint = job.checkpoint_requested();
  return commands;
}

absl::Status JobManager::FinishAttempt(const std::string& job_id, int attempt,
                                       JobState outcome,
                                       const std::string& error,
                                       lathe::v1::FailureKind failure) {
  if (outcome != lathe::v1::SUCCEEDED && outcome != lathe::v1::FAILED &&
      outcome != lathe::v1::CANCELLED && outcome != lathe::v1::QUEUED &&
      outcome != lathe::v1::PAUSED) {
    return Invalid("outcome",
                   "must be SUCCEEDED, FAILED, CANCELLED, PAUSED or QUEUED");
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job job, LoadRunning(job_id, attempt));
  // A stop that the server asked for wins over how the worker stopped.
  if (outcome == lathe::v1::QUEUED || outcome == lathe::v1::PAUSED) {
    if (job.state() == lathe::v1::CANCELLING) outcome = lathe::v1::CANCELLED;
    if (job.state() == lathe::v1::PAUSING) outcome = lathe::v1::PAUSED;
  }
  std::string message;
  std::string attempt_outcome = JobState_Name(outcome);
  const int max_attempts =
      job.spec().max_attempts() > 0 ? job.spec().max_attempts() : 3;
  if (outcome == lathe::v1::SUCCEEDED) {
    message = "training finished";
  } else if (outcome == lathe::v1::QUEUED) {
    message = absl::StrCat("worker gave the job back (", error, "); requeued");
  } else if (outcome == lathe::v1::PAUSED) {
    message = "paused; resume continues from the latest checkpoint";
  } else if (outcome == lathe::v1::CANCELLED) {
    message = "training stopped";
    job.set_error("cancelled by request");
  } else if ((failure == lathe::v1::FAILURE_KIND_CRASH ||
              failure == lathe::v1::FAILURE_KIND_UNSPECIFIED) &&
             job.state() == lathe::v1::RUNNING && attempt < max_attempts) {
    const absl::Duration wait = Backoff(attempt);
    job.set_not_before_ms(clock_() + absl::ToInt64Milliseconds(wait));
    outcome = lathe::v1::QUEUED;
    message = absl::StrCat("attempt ", attempt, " of ", max_attempts,
                           " failed: ", error, "; retrying in ",
                           absl::FormatDuration(wait));
  } else {
    const char* kind = failure == lathe::v1::FAILURE_KIND_OUT_OF_MEMORY
                           ? " (out of memory; not retried)"
                       : failure == lathe::v1::FAILURE_KIND_INVALID_INPUT
                           ? " (invalid input; not retried)"
                       : attempt >= max_attempts ? " (no attempts left)"
                                                 : "";
    message = absl::StrCat("attempt ", attempt, " of ", max_attempts, " failed",
                           kind, ": ", error);
    job.set_error(error.substr(0, 16384));
  }
  std::vector<Event> events;
  Transition(&job, outcome, message, &events);
  RETURN_IF_ERROR(Save(&job, &events));
  RETURN_IF_ERROR(store_->RecordAttemptEnd(job_id, attempt, attempt_outcome,
                                           error, clock_()));
  auto w = workers_.find(job.worker_id());
  if (w != workers_.end()) w->second.jobs.erase(job_id);
  return absl::OkStatus();
}

void JobManager::ExpireWorkers() {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_();
  const int64_t timeout_ms =
      absl::ToInt64Milliseconds(options_.heartbeat_timeout);
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (now - it->second.last_seen_ms <= timeout_ms) {
      ++it;
      continue;
    }
    for (const std::string& job_id : it->second.jobs) {
      auto job = store_->GetJob(job_id);
      if (!job.ok() || job->worker_id() != it->first) continue;
      std::vector<Event> events;
      const std::string why = absl::StrCat("worker ", it->second.name,
                                           " stopped sending heartbeats");
      const int max_attempts =
          job->spec().max_attempts() > 0 ? job->spec().max_attempts() : 3;
      if (job->state() == lathe::v1::RUNNING) {
        if (job->attempt() < max_attempts) {
          Transition(&*job, lathe::v1::QUEUED, why + "; job requeued", &events);
        } else {
          job->set_error(why);
          Transition(&*job, lathe::v1::FAILED,
                     absl::StrCat(why, " on attempt ", job->attempt(), " of ",
                                  max_attempts, "; no attempts left"),
                     &events);
        }
      } else if (job->state() == lathe::v1::PAUSING) {
        Transition(&*job, lathe::v1::PAUSED,
                   why + "; paused at its latest checkpoint", &events);
      } else if (job->state() == lathe::v1::CANCELLING) {
        job->set_error("cancelled by request");
        Transition(&*job, lathe::v1::CANCELLED, why, &events);
      } else {
        continue;
      }
      store_->RecordAttemptEnd(job_id, job->attempt(), "LOST", why, now)
          .IgnoreError();
      Save(&*job, &events).IgnoreError();
    }
    it = workers_.erase(it);
  }
  metrics_->SetWorkers(static_cast<double>(workers_.size()));
}

void JobManager::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    changed_.SignalAll();
  }
  absl::MutexLock lock(&tail_mu_);
  tail_shutdown_ = true;
  for (auto& [id, tail] : tails_) SignalTailLocked(tail.get());
}

}  // namespace lathe::server
