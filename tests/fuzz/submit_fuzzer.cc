// Feeds: SubmitJob requests to the server core's submission path,
// JobManager::Submit (server/core/submission.h), on a real SQLite store,
// artifact store and metrics in a scratch directory, with an allowed root
// that holds a dataset file, a model directory and a symbolic link out of
// the root. The fixture also holds datasets and stored models of two teams
// and two jobs, one with checkpoints (steps 10 and 20).
//
// The input is a SubmitJobRequest in protobuf wire format when its first
// byte is 0x0a or 0x12 (the tags of spec and request_id), submitted as the
// system (an admin); otherwise lines FIELD=VALUE, which reach deeper:
//   task model train_data validation_data device owner request_id
//   priority max_attempts kind device_kind device_count min_memory_mb
//   param.NAME label.KEY   (a hyperparameter, a label)
//   as=USER/TEAM[/admin]   (the caller, a member unless admin; an empty
//                          user or team is alice or team-a; default:
//                          the system)
// Line inputs that are not UTF-8 are dropped, as the protobuf runtime
// refuses such strings before a request reaches the server.
// In both forms $ROOT, $DATASET, $DATASET_B, $JOB and $JOB_B in the model
// and data fields become the allowed root, the dataset references of teams
// a and b and the ids of team a's job (with checkpoints) and team b's job
// (without); the stored models are model-a (team a) and model-b (team b).
//
// Checks: no crash or sanitizer report. An error is INVALID_ARGUMENT,
// NOT_FOUND, PERMISSION_DENIED or FAILED_PRECONDITION naming the field
// (spec.FIELD or request_id). An accepted job is QUEUED, can be read back,
// has a validated spec (task, device, priority, attempts, resources,
// hyperparameters that parse and apply, labels), a stored training
// dataset, a resolved model whose files exist, a local model path inside
// the allowed root, and, for a caller who is not an admin, the caller's
// team, owner, datasets, stored model and source job only. A request_id
// the caller's team used before returns that job (or an error), never
// another.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/params.h"
#include "google/protobuf/stubs/logging.h"
#include "server/core/job_manager.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using lathe::server::ArtifactStore;
using lathe::server::JobManager;
using lathe::server::JobManagerOptions;
using lathe::server::Metrics;
using lathe::server::Principal;
using lathe::server::Store;
using lathe::v1::Job;
using lathe::v1::JobSpec;

// The fixture is rebuilt after this many inputs, so the database stays
// small and every input sees much the same state.
constexpr int kRunsPerFixture = 2000;

Principal Member(const std::string& user, const std::string& team) {
  return Principal{user, team, lathe::v1::ROLE_MEMBER, ""};
}

template <typename T>
T OrDie(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "fixture: %s: %s\n", what,
                 v.status().ToString().c_str());
    std::abort();
  }
  return *std::move(v);
}

void OkOrDie(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "fixture: %s: %s\n", what, s.ToString().c_str());
    std::abort();
  }
}

class Fixture {
 public:
  Fixture() {
    dir_ = lathe::fuzz::ScratchDir() + "/submit";
    lathe::fuzz::RemoveAll(dir_);
    root_ = dir_ + "/root";
    std::filesystem::create_directories(root_ + "/model");
    std::filesystem::create_directories(dir_ + "/state");
    lathe::fuzz::WriteFileOrDie(root_ + "/train.jsonl",
                                "{\"text\":\"a\",\"label\":\"x\"}\n"
                                "{\"text\":\"b\",\"label\":\"y\"}\n");
    lathe::fuzz::WriteFileOrDie(root_ + "/model/config.json",
                                "{\"model_type\":\"bert\"}");
    lathe::fuzz::WriteFileOrDie(root_ + "/model/model.safetensors", "w");
    std::filesystem::create_directory_symlink("../state", root_ + "/outside");
    root_ = lathe::CanonicalPath(root_);

    store_ = OrDie(Store::Open(dir_ + "/state/lathe.db"), "store");
    artifacts_ =
        OrDie(ArtifactStore::Open(dir_ + "/state/artifacts"), "artifacts");
    JobManagerOptions opts;
    opts.allowed_roots = {root_};
    opts.max_upload_bytes = 1 << 20;
    // Wire-format inputs that are not UTF-8 make protobuf log an error
    // each; they are refused all the same.
    google::protobuf::SetLogHandler(nullptr);
    manager_ = OrDie(JobManager::Create(opts, store_.get(), artifacts_.get(),
                                        &metrics_, [this] { return ++now_; }),
                     "manager");

    dataset_a_ =
        AddDataset("a.jsonl", "{\"text\":\"a\",\"label\":\"x\"}\n", "team-a");
    dataset_b_ =
        AddDataset("b.jsonl", "{\"text\":\"b\",\"label\":\"y\"}\n", "team-b");
    PushModel("model-a", Member("alice", "team-a"));
    PushModel("model-b", Member("bob", "team-b"));

    // Team a's job, held by a worker that reported two checkpoints.
    JobSpec spec;
    spec.set_task("text-classification");
    spec.set_model("preset:bert-tiny");
    spec.set_train_data(dataset_a_);
    job_a_ =
        OrDie(manager_->Submit(spec, "", Member("alice", "team-a")), "submit a")
            .id();
    lathe::v1::Device cpu;
    cpu.set_name("cpu");
    const std::string worker =
        OrDie(manager_->RegisterWorker("w", {cpu}, "host"), "worker").worker_id;
    auto assignment =
        OrDie(manager_->AcquireJob(worker, absl::ZeroDuration()), "acquire");
    if (!assignment.has_value() || assignment->job_id() != job_a_) {
      std::fprintf(stderr, "fixture: the worker did not get job a\n");
      std::abort();
    }
    for (int step : {10, 20}) {
      lathe::v1::Event e;
      e.set_type(lathe::v1::EVENT_TYPE_CHECKPOINT);
      e.mutable_checkpoint()->set_step(step);
      (*e.mutable_checkpoint()->mutable_metrics())["accuracy"] = step / 100.0;
      *e.mutable_checkpoint()->add_files() =
          PutFile("model.safetensors", absl::StrCat("weights ", step));
      *e.mutable_checkpoint()->add_files() =
          PutFile("config.json", "{\"model_type\":\"bert\"}");
      OkOrDie(manager_->ReportEvents(job_a_, 1, {e}).status(), "checkpoint");
    }
    spec.set_train_data(dataset_b_);
    job_b_ =
        OrDie(manager_->Submit(spec, "", Member("bob", "team-b")), "submit b")
            .id();
  }

  ~Fixture() {
    manager_.reset();
    store_.reset();
    artifacts_.reset();
    lathe::fuzz::RemoveAll(dir_);
  }

  // Replaces the $NAMES of the fixture's objects in a model or data field.
  std::string Expand(const std::string& value) const {
    if (value.find('$') == std::string::npos) return value;
    return absl::StrReplaceAll(value, {{"$DATASET_B", dataset_b_},
                                       {"$DATASET", dataset_a_},
                                       {"$JOB_B", job_b_},
                                       {"$JOB", job_a_},
                                       {"$ROOT", root_}});
  }

  // The job each (team, request_id) submitted so far created.
  std::map<std::pair<std::string, std::string>, std::string>& request_ids() {
    return request_ids_;
  }
  JobManager* manager() { return manager_.get(); }
  Store* store() { return store_.get(); }
  ArtifactStore* artifacts() { return artifacts_.get(); }
  const std::string& root() const { return root_; }

 private:
  std::string AddDataset(const std::string& name, const std::string& content,
                         const std::string& team) {
    auto w = OrDie(artifacts_->NewWriter(1 << 20), "writer");
    OkOrDie(w->Append(content), "append");
    const std::string sha = OrDie(w->Commit(), "commit");
    return OrDie(manager_->AddDataset(name, sha, w->size(), team), "dataset")
        .ref();
  }

  lathe::v1::FileInfo PutFile(const std::string& name,
                              const std::string& content) {
    auto w = OrDie(artifacts_->NewWriter(1 << 20), "writer");
    OkOrDie(w->Append(content), "append");
    lathe::v1::FileInfo f;
    f.set_name(name);
    f.set_size(w->size());
    f.set_sha256(OrDie(w->Commit(), "commit"));
    return f;
  }

  void PushModel(const std::string& name, const Principal& who) {
    auto push = OrDie(manager_->models()->StartPush(name, false, who), "push");
    for (const auto& [path, content] :
         std::vector<std::pair<std::string, std::string>>{
             {"config.json", "{\"model_type\":\"bert\"}"},
             {"model.safetensors", "weights of " + name}}) {
      lathe::v1::ModelFile f;
      f.set_path(path);
      f.set_size(static_cast<int64_t>(content.size()));
      f.set_sha256(lathe::Sha256Hex(content));
      OkOrDie(push->BeginFile(f), "begin file");
      OkOrDie(push->Append(content), "append");
    }
    OrDie(push->Finish(), "finish");
  }

  std::string dir_;
  std::string root_;
  Metrics metrics_;
  int64_t now_ = 1700000000000;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<JobManager> manager_;
  std::string dataset_a_, dataset_b_, job_a_, job_b_;
  std::map<std::pair<std::string, std::string>, std::string> request_ids_;
};

Fixture& TheFixture() {
  static std::unique_ptr<Fixture> fixture;
  static int runs = 0;
  if (fixture == nullptr || ++runs % kRunsPerFixture == 0) {
    fixture.reset();
    fixture = std::make_unique<Fixture>();
  }
  return *fixture;
}

int32_t Int32(absl::string_view v) {
  int32_t out = 0;
  return absl::SimpleAtoi(v, &out) ? out : 0;
}

// Decodes the line form into a request and a caller.
void DecodeLines(absl::string_view input, lathe::v1::SubmitJobRequest* req,
                 Principal* who) {
  JobSpec* spec = req->mutable_spec();
  for (absl::string_view line : absl::StrSplit(input, '\n')) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits('=', 1));
    const absl::string_view key = kv.first;
    const std::string value(kv.second);
    if (key == "task") {
      spec->set_task(value);
    } else if (key == "model") {
      spec->set_model(value);
    } else if (key == "train_data") {
      spec->set_train_data(value);
    } else if (key == "validation_data") {
      spec->set_validation_data(value);
    } else if (key == "device") {
      spec->set_device(value);
    } else if (key == "owner") {
      spec->set_owner(value);
    } else if (key == "request_id") {
      req->set_request_id(value);
    } else if (key == "priority") {
      spec->set_priority(Int32(value));
    } else if (key == "max_attempts") {
      spec->set_max_attempts(Int32(value));
    } else if (key == "kind") {
      spec->set_kind(static_cast<lathe::v1::JobKind>(Int32(value)));
    } else if (key == "device_kind") {
      spec->mutable_resources()->set_device_kind(value);
    } else if (key == "device_count") {
      spec->mutable_resources()->set_device_count(Int32(value));
    } else if (key == "min_memory_mb") {
      int64_t mb = 0;
      if (absl::SimpleAtoi(value, &mb)) {
        spec->mutable_resources()->set_min_device_memory_mb(mb);
      }
    } else if (absl::ConsumePrefix(&kv.first, "param.")) {
      (*spec->mutable_params())[std::string(kv.first)] = value;
    } else if (absl::ConsumePrefix(&kv.first, "label.")) {
      (*spec->mutable_labels())[std::string(kv.first)] = value;
    } else if (key == "as") {
      const std::vector<std::string> parts =
          absl::StrSplit(value, absl::MaxSplits('/', 2));
      // Every member has a user name and a team (identities.cc).
      *who =
          Member(parts[0].empty() ? "alice" : parts[0],
                 parts.size() > 1 && !parts[1].empty() ? parts[1] : "team-a");
      if (parts.size() > 2 && parts[2] == "admin") {
        who->role = lathe::v1::ROLE_ADMIN;
      }
    }
  }
}

void CheckError(const absl::Status& status) {
  FUZZ_CHECK(absl::IsInvalidArgument(status) || absl::IsNotFound(status) ||
             absl::IsPermissionDenied(status) ||
             absl::IsFailedPrecondition(status));
  FUZZ_CHECK(absl::StartsWith(status.message(), "spec.") ||
             absl::StartsWith(status.message(), "request_id"));
}

bool IsTask(const std::string& task) {
  for (const char* t : {"text-classification", "text-regression",
                        "token-classification", "question-answering",
                        "causal-lm", "masked-lm", "image-classification"}) {
    if (task == t) return true;
  }
  return false;
}

void CheckJob(Fixture& fx, const Job& job, const Principal& who) {
  FUZZ_CHECK(absl::StartsWith(job.id(), "job-"));
  FUZZ_CHECK(job.state() == lathe::v1::QUEUED);
  auto again = fx.manager()->Get(job.id());
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->id() == job.id() && again->team() == job.team());

  const JobSpec& spec = job.spec();
  FUZZ_CHECK(IsTask(spec.task()));
  static const std::regex kDevice("cpu|cuda(:[0-9]{1,2})?");
  FUZZ_CHECK(std::regex_match(spec.device(), kDevice));
  FUZZ_CHECK(spec.priority() >= -1000 && spec.priority() <= 1000);
  FUZZ_CHECK(spec.max_attempts() >= 1 && spec.max_attempts() <= 10);
  FUZZ_CHECK(spec.resources().device_kind() == "cpu" ||
             spec.resources().device_kind() == "cuda");
  FUZZ_CHECK(spec.resources().device_count() >= 1 &&
             spec.resources().device_count() <= 64);
  FUZZ_CHECK(spec.resources().min_device_memory_mb() >= 0);
  FUZZ_CHECK(!spec.owner().empty() && spec.owner().size() <= 128);
  FUZZ_CHECK(spec.labels_size() <= 64);
  const std::map<std::string, std::string> params(spec.params().begin(),
                                                  spec.params().end());
  FUZZ_CHECK(lathe::ParseTrainParams(params).ok());
  FUZZ_CHECK(lathe::CheckParamsApply(spec.task(), params).ok());
  if (spec.kind() == lathe::v1::JOB_KIND_PREDICT) {
    FUZZ_CHECK(!absl::StartsWith(spec.model(), "preset:"));
    FUZZ_CHECK(spec.validation_data().empty());
  } else {
    FUZZ_CHECK(spec.kind() == lathe::v1::JOB_KIND_UNSPECIFIED ||
               spec.kind() == lathe::v1::JOB_KIND_TRAIN);
  }

  const auto& train = job.train_dataset();
  FUZZ_CHECK(fx.artifacts()->Has(train.sha256(), train.size()));
  FUZZ_CHECK(spec.validation_data().empty() == !job.has_validation_dataset());

  const auto& source = job.model_source();
  switch (source.kind()) {
    case lathe::v1::MODEL_SOURCE_KIND_PRESET:
      FUZZ_CHECK(source.preset() == spec.model());
      break;
    case lathe::v1::MODEL_SOURCE_KIND_LOCAL_PATH:
      FUZZ_CHECK(lathe::PathWithin(source.local_path(), fx.root()));
      FUZZ_CHECK(lathe::CanonicalPath(source.local_path()) ==
                 source.local_path());
      break;
    case lathe::v1::MODEL_SOURCE_KIND_MANIFEST:
      FUZZ_CHECK(source.files_size() > 0);
      for (const auto& f : source.files()) {
        FUZZ_CHECK(fx.artifacts()->Has(f.sha256(), f.size()));
      }
      break;
    default:
      FUZZ_CHECK(source.kind() != lathe::v1::MODEL_SOURCE_KIND_UNSPECIFIED);
      FUZZ_CHECK(lathe::v1::ModelSourceKind_IsValid(source.kind()));
  }

  if (who.admin()) return;
  // Nothing of another team.
  FUZZ_CHECK(job.team() == who.team);
  FUZZ_CHECK(spec.owner() == who.user);
  for (const std::string& ref : {spec.train_data(), spec.validation_data()}) {
    if (!absl::StartsWith(ref, "dataset:")) continue;
    auto mine = fx.store()->GetTeamDataset(ref.substr(8), who.team);
    FUZZ_CHECK(mine.ok() && mine->has_value());
  }
  if (absl::StartsWith(spec.model(), "job:")) {
    std::string id = spec.model().substr(4);
    id = id.substr(0, id.find('@'));
    auto from = fx.store()->GetJob(id);
    FUZZ_CHECK(from.ok() && from->team() == who.team);
  } else if (source.kind() == lathe::v1::MODEL_SOURCE_KIND_MANIFEST) {
    auto stored = fx.store()->GetModel(spec.model());
    FUZZ_CHECK(stored.ok() && stored->has_value());
    FUZZ_CHECK((*stored)->team() == who.team);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& fx = TheFixture();
  lathe::v1::SubmitJobRequest req;
  Principal who = Principal::System();
  if (size > 0 && (data[0] == 0x0a || data[0] == 0x12)) {
    if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  } else {
    const absl::string_view input(reinterpret_cast<const char*>(data), size);
    if (!lathe::fuzz::IsValidUtf8({input.data(), input.size()})) return 0;
    DecodeLines(input, &req, &who);
  }
  JobSpec* spec = req.mutable_spec();
  spec->set_model(fx.Expand(spec->model()));
  spec->set_train_data(fx.Expand(spec->train_data()));
  spec->set_validation_data(fx.Expand(spec->validation_data()));

  const absl::StatusOr<Job> job =
      fx.manager()->Submit(*spec, req.request_id(), who);
  if (!job.ok()) {
    CheckError(job.status());
    return 0;
  }
  // A request_id seen before in the caller's team returns that job (once
  // the caller may submit at all), whatever the rest of the request says.
  const std::pair<std::string, std::string> key(who.team, req.request_id());
  auto earlier = fx.request_ids().find(key);
  if (!req.request_id().empty() && earlier != fx.request_ids().end()) {
    FUZZ_CHECK(job->id() == earlier->second);
    FUZZ_CHECK(job->team() == who.team);
    return 0;
  }
  CheckJob(fx, *job, who);
  if (!req.request_id().empty()) {
    fx.request_ids()[key] = job->id();
    const absl::StatusOr<Job> repeated =
        fx.manager()->Submit(*spec, req.request_id(), who);
    FUZZ_CHECK(repeated.ok() && repeated->id() == job->id());
  }
  return 0;
}
