// Unit tests of the model store and of model references at submit: push
// validation, idempotent pushes, replace and delete semantics, resolution of
// each reference form with its status code, and pinning. Real SQLite and real
// files in a temporary directory; the only fake is the clock.
#include "server/core/models.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "common/files.h"
#include "common/status.h"
#include "server/core/job_manager.h"
#include "tests/support/fake_clock.h"
#include "tests/support/temp_dir.h"

namespace lathe::server {
namespace {

using lathe::v1::Event;
using lathe::v1::JobSpec;
using lathe::v1::ModelFile;
using ::testing::HasSubstr;

using Files = std::map<std::string, std::string>;

ModelFile FileOf(const std::string& path, const std::string& content) {
  ModelFile f;
  f.set_path(path);
  f.set_size(static_cast<int64_t>(content.size()));
  f.set_sha256(Sha256Hex(content));
  return f;
}

Files BertFiles(const std::string& weights = "weights-v1") {
  return {{"config.json", "{\"model_type\":\"bert\"}"},
          {"model.safetensors", weights},
          {"tokenizer/vocab.txt", "[PAD]\n[UNK]\n"}};
}

class ModelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *Store::Open(dir_.path() + "/lathe.db");
    artifacts_ = *ArtifactStore::Open(dir_.path() + "/artifacts");
    JobManagerOptions opts;
    opts.allowed_roots = {dir_.path()};
    opts.heartbeat_timeout = absl::Seconds(10);
    opts.keep_checkpoints = 0;
    opts.models.max_model_bytes = 1 << 20;
    opts.models.max_files = 8;
    manager_ = *JobManager::Create(opts, store_.get(), artifacts_.get(),
                                   &metrics_, clock_.AsClock());
    auto w = artifacts_->NewWriter(1 << 20);
    ASSERT_TRUE((*w)->Append("{\"text\":\"a\",\"label\":\"x\"}\n").ok());
    auto sha = (*w)->Commit();
    ASSERT_TRUE(sha.ok());
    dataset_ = *manager_->AddDataset("train.jsonl", *sha, (*w)->size());
  }

  // Pushes `files` (in map order, each in two chunks) as `name`.
  absl::StatusOr<PushResult> Push(const std::string& name, const Files& files,
                                  bool replace = false) {
    ASSIGN_OR_RETURN(auto push, manager_->models()->StartPush(name, replace));
    for (const auto& [path, content] : files) {
      RETURN_IF_ERROR(push->BeginFile(FileOf(path, content)));
      const size_t half = content.size() / 2;
      RETURN_IF_ERROR(push->Append(content.substr(0, half)));
      RETURN_IF_ERROR(push->Append(content.substr(half)));
    }
    return push->Finish();
  }

  JobSpec Spec(const std::string& model) {
    JobSpec spec;
    spec.set_task("text-classification");
    spec.set_model(model);
    spec.set_train_data(dataset_.ref());
    return spec;
  }

  std::string RegisterWorker() {
    lathe::v1::Device d;
    d.set_name("cpu");
    auto reg = manager_->RegisterWorker("w", {d}, "host");
    EXPECT_TRUE(reg.ok()) << reg.status();
    return reg->worker_id;
  }

  // A job that ran and reported checkpoints at `steps` with `accuracies`;
  // each checkpoint holds config.json, model.safetensors and training state.
  std::string JobWithCheckpoints(const std::vector<int64_t>& steps,
                                 const std::vector<double>& accuracies) {
    auto job = manager_->Submit(Spec("preset:bert-tiny"), "");
    EXPECT_TRUE(job.ok()) << job.status();
    const std::string worker = RegisterWorker();
    auto a = manager_->AcquireJob(worker, absl::ZeroDuration());
    EXPECT_TRUE(a.ok() && a->has_value());
    for (size_t i = 0; i < steps.size(); ++i) {
      Event e;
      e.set_type(lathe::v1::EVENT_TYPE_CHECKPOINT);
      e.mutable_checkpoint()->set_step(steps[i]);
      (*e.mutable_checkpoint()->mutable_metrics())["accuracy"] = accuracies[i];
      for (const auto& [name, content] :
           Files{{"config.json", "{}"},
                 {"model.safetensors", "w" + std::to_string(steps[i])},
                 {"trainer_state.json", "s" + std::to_string(steps[i])}}) {
        auto w = artifacts_->NewWriter(1 << 20);
        EXPECT_TRUE((*w)->Append(content).ok());
        lathe::v1::FileInfo f;
        f.set_name(name);
        f.set_size((*w)->size());
        f.set_sha256(*(*w)->Commit());
        *e.mutable_checkpoint()->add_files() = f;
      }
      EXPECT_TRUE(manager_->ReportEvents(job->id(), 1, {e}).ok());
    }
    return job->id();
  }

  TempDir dir_;
  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<JobManager> manager_;
  lathe::v1::Dataset dataset_;
};

TEST_F(ModelsTest, PushStoresFilesByContentAndTheDigestOfTheManifest) {
  auto pushed = Push("my-bert", BertFiles());
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_TRUE(pushed->created);
  const lathe::v1::Model& m = pushed->model;
  EXPECT_EQ(m.name(), "my-bert");
  ASSERT_EQ(m.files_size(), 3);
  EXPECT_EQ(m.files(0).path(), "config.json");
  EXPECT_EQ(m.files(2).path(), "tokenizer/vocab.txt");
  std::vector<ModelFile> files(m.files().begin(), m.files().end());
  EXPECT_EQ(m.digest(), ModelDigest(files));
  std::reverse(files.begin(), files.end());
  EXPECT_EQ(m.digest(), ModelDigest(files)) << "order must not matter";
  int64_t size = 0;
  for (const auto& f : m.files()) {
    size += f.size();
    EXPECT_TRUE(artifacts_->Has(f.sha256(), f.size())) << f.path();
    auto data = ReadFile(artifacts_->PathFor(f.sha256()));
    ASSERT_TRUE(data.ok());
    EXPECT_EQ(*data, BertFiles()[f.path()]);
  }
  EXPECT_EQ(m.size(), size);
  auto listed = manager_->models()->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].digest(), m.digest());
  EXPECT_EQ(manager_->models()->Get("my-bert")->digest(), m.digest());
  EXPECT_EQ(manager_->models()->Get("other").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ModelsTest, RepushIsIdempotentAndOtherContentNeedsReplace) {
  auto first = Push("m", BertFiles());
  ASSERT_TRUE(first.ok()) << first.status();
  clock_.Advance(1000);
  auto again = Push("m", BertFiles());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->model.digest(), first->model.digest());
  EXPECT_EQ(again->model.create_time_ms(), first->model.create_time_ms());

  auto other = Push("m", BertFiles("weights-v2"));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(other.status().message()), HasSubstr("replace"));

  auto replaced = Push("m", BertFiles("weights-v2"), /*replace=*/true);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_TRUE(replaced->created);
  EXPECT_NE(replaced->model.digest(), first->model.digest());
  // The old weights are unreferenced now and gone; shared files stay.
  const std::string old_weights = Sha256Hex("weights-v1");
  EXPECT_FALSE(artifacts_->Has(old_weights, 10));
  EXPECT_TRUE(artifacts_->Has(Sha256Hex("[PAD]\n[UNK]\n"), 12));
}

TEST_F(ModelsTest, PushRefusesUnsafeOrIncompleteModels) {
  struct Case {
    std::string name;
    Files files;
    absl::StatusCode code;
    std::string text;
  };
  Files traversal = BertFiles();
  traversal["../escape.txt"] = "x";
  Files absolute = BertFiles();
  absolute["/etc/passwd"] = "x";
  Files empty_part = BertFiles();
  empty_part["a//b"] = "x";
  Files dot = BertFiles();
  dot["./config2.json"] = "x";
  Files long_path = BertFiles();
  long_path[std::string(600, 'a')] = "x";
  Files pickle_only = {{"config.json", "{}"}, {"pytorch_model.bin", "PK"}};
  Files pt = BertFiles();
  pt["extra/weights.pt"] = "PK";
  Files no_weights = {{"config.json", "{}"}, {"vocab.txt", "a"}};
  Files no_config = {{"model.safetensors", "w"}};
  Files sharded = {{"config.json", "{}"},
                   {"model.safetensors.index.json", "{}"},
                   {"model-00001-of-00001.safetensors", "w"}};
  Files too_many;
  too_many["config.json"] = "{}";
  too_many["model.safetensors"] = "w";
  for (int i = 0; i < 8; ++i) too_many["f" + std::to_string(i)] = "x";
  Files too_big = BertFiles(std::string((1 << 20) + 1, 'w'));
  const std::vector<Case> cases = {
      {"m", traversal, absl::StatusCode::kInvalidArgument, "file.path"},
      {"m", absolute, absl::StatusCode::kInvalidArgument, "absolute"},
      {"m", empty_part, absl::StatusCode::kInvalidArgument, "file.path"},
      {"m", dot, absl::StatusCode::kInvalidArgument, "file.path"},
      {"m", long_path, absl::StatusCode::kInvalidArgument, "file.path"},
      {"m", pickle_only, absl::StatusCode::kInvalidArgument, "safetensors"},
      {"m", pt, absl::StatusCode::kInvalidArgument, "pickle"},
      {"m", no_weights, absl::StatusCode::kInvalidArgument,
       "model.safetensors"},
      {"m", no_config, absl::StatusCode::kInvalidArgument, "config.json"},
      {"m", too_many, absl::StatusCode::kResourceExhausted, "files"},
      {"m", too_big, absl::StatusCode::kResourceExhausted, "--max-model-mb"},
      {"", BertFiles(), absl::StatusCode::kInvalidArgument, "name"},
      {"a/b", BertFiles(), absl::StatusCode::kInvalidArgument, "name"},
      {"..", BertFiles(), absl::StatusCode::kInvalidArgument, "name"},
  };
  for (const Case& c : cases) {
    auto r = Push(c.name, c.files);
    EXPECT_EQ(r.status().code(), c.code) << c.text << ": " << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.text));
  }
  EXPECT_TRUE(Push("sharded", sharded).ok());
  auto listed = manager_->models()->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u) << "only the sharded model is stored";
}

TEST_F(ModelsTest, PushVerifiesEachFilesSizeAndDigest) {
  auto push = *manager_->models()->StartPush("m", false);
  ModelFile f = FileOf("config.json", "{}");
  f.set_sha256(Sha256Hex("something else"));
  ASSERT_TRUE(push->BeginFile(f).ok());
  ASSERT_TRUE(push->Append("{}").ok());
  EXPECT_EQ(push->BeginFile(FileOf("model.safetensors", "w")).code(),
            absl::StatusCode::kDataLoss);

  auto push2 = *manager_->models()->StartPush("m", false);
  ASSERT_TRUE(push2->BeginFile(FileOf("config.json", "{}")).ok());
  EXPECT_EQ(push2->Append("{}{}").code(), absl::StatusCode::kDataLoss);

  auto push3 = *manager_->models()->StartPush("m", false);
  EXPECT_EQ(push3->Append("bytes").code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(push3->BeginFile(FileOf("config.json", "{}")).ok());
  EXPECT_EQ(push3->BeginFile(FileOf("config.json", "{}")).code(),
            absl::StatusCode::kDataLoss)
      << "the first file ended short";
}

TEST_F(ModelsTest, SubmitPinsAStoredModelAndTheWorkerGetsItsManifest) {
  auto pushed = Push("my-bert", BertFiles());
  ASSERT_TRUE(pushed.ok());
  auto job = manager_->Submit(Spec("my-bert"), "");
  ASSERT_TRUE(job.ok()) << job.status();
  const auto& src = job->model_source();
  EXPECT_EQ(src.kind(), lathe::v1::MODEL_SOURCE_KIND_MANIFEST);
  EXPECT_EQ(src.digest(), pushed->model.digest());
  EXPECT_EQ(src.files_size(), 3);
  EXPECT_EQ(src.origin(), "model my-bert");
  EXPECT_EQ(job->spec().model(), "my-bert");
  EXPECT_EQ(store_->GetJob(job->id())->model_source().digest(), src.digest());

  // Replacing the name does not change what the queued job trains from.
  ASSERT_TRUE(Push("my-bert", BertFiles("weights-v2"), true).ok());
  const std::string v1 = Sha256Hex("weights-v1");
  EXPECT_TRUE(artifacts_->Has(v1, 10)) << "pinned by the queued job";
  EXPECT_TRUE(manager_->models()->FilePath(v1).ok());

  const std::string worker = RegisterWorker();
  auto a = manager_->AcquireJob(worker, absl::ZeroDuration());
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->model().digest(), pushed->model.digest());
  EXPECT_EQ((*a)->model().kind(), lathe::v1::MODEL_SOURCE_KIND_MANIFEST);

  // Deleting the name keeps the running job's files; finishing it frees
  // the files nothing else refers to.
  auto deleted = manager_->models()->Delete("my-bert");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(manager_->models()->Delete("my-bert").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(manager_->models()->List()->empty());
  EXPECT_TRUE(artifacts_->Has(v1, 10));
  EXPECT_FALSE(artifacts_->Has(Sha256Hex("weights-v2"), 10))
      << "the replacement had no job and no name any more";
  ASSERT_TRUE(
      manager_->FinishAttempt(job->id(), 1, lathe::v1::SUCCEEDED, "").ok());
  EXPECT_FALSE(artifacts_->Has(v1, 10));
  EXPECT_EQ(manager_->models()->FilePath(v1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->models()->FilePath("nope").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelsTest, AQueuedJobKeepsItsModelThroughDeleteAndCancelFreesIt) {
  ASSERT_TRUE(Push("m", BertFiles()).ok());
  auto job = manager_->Submit(Spec("m"), "");
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(manager_->models()->Delete("m").ok());
  for (const auto& f : job->model_source().files()) {
    EXPECT_TRUE(artifacts_->Has(f.sha256(), f.size())) << f.path();
  }
  // A new submit by name fails; the queued job is unaffected.
  EXPECT_EQ(manager_->Submit(Spec("m"), "").status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(manager_->Cancel(job->id()).ok());
  for (const auto& f : job->model_source().files()) {
    EXPECT_FALSE(artifacts_->Has(f.sha256(), f.size())) << f.path();
  }
}

TEST_F(ModelsTest, JobReferencesResolveToTheBestOrTheNamedCheckpoint) {
  const std::string source = JobWithCheckpoints({10, 20, 30}, {0.7, 0.9, 0.8});
  // Both sources run before any dependant is queued.
  const std::string plain = JobWithCheckpoints({5}, {0.1});
  auto best = manager_->Submit(Spec("job:" + source), "");
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_EQ(best->model_source().origin(), "job:" + source + "@20");
  ASSERT_EQ(best->model_source().files_size(), 2)
      << "training state is not part of a base model";
  EXPECT_EQ(best->model_source().files(0).path(), "config.json");
  EXPECT_EQ(best->model_source().files(1).path(), "model.safetensors");
  EXPECT_EQ(best->model_source().files(1).sha256(), Sha256Hex("w20"));

  auto step = manager_->Submit(Spec("job:" + source + "@30"), "");
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(step->model_source().files(1).sha256(), Sha256Hex("w30"));
  EXPECT_NE(step->model_source().digest(), best->model_source().digest());

  // A single checkpoint is the best.
  auto latest = manager_->Submit(Spec("job:" + plain), "");
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->model_source().origin(), "job:" + plain + "@5");
}

TEST_F(ModelsTest, ModelReferenceErrorsHaveTheirOwnCodes) {
  const std::string ran = JobWithCheckpoints({10}, {0.5});
  auto queued = manager_->Submit(Spec("preset:bert-tiny"), "");
  ASSERT_TRUE(queued.ok());
  struct Case {
    std::string model;
    absl::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"no-such-model", absl::StatusCode::kNotFound},
      {"job:job-000000000000", absl::StatusCode::kNotFound},
      {"job:" + ran + "@11", absl::StatusCode::kNotFound},
      {"job:" + queued->id(), absl::StatusCode::kFailedPrecondition},
      {"job:", absl::StatusCode::kInvalidArgument},
      {"job:" + ran + "@", absl::StatusCode::kInvalidArgument},
      {"job:" + ran + "@x", absl::StatusCode::kInvalidArgument},
      {"job:../x", absl::StatusCode::kInvalidArgument},
      {"bad name!", absl::StatusCode::kInvalidArgument},
      {"hf:bert-base-uncased", absl::StatusCode::kInvalidArgument},
      {"preset:gpt-17", absl::StatusCode::kInvalidArgument},
      {"relative/dir", absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    auto job = manager_->Submit(Spec(c.model), "");
    EXPECT_EQ(job.status().code(), c.code) << c.model << ": " << job.status();
    EXPECT_THAT(std::string(job.status().message()), HasSubstr("spec.model"))
        << c.model;
  }
  for (const auto& p : ModelPresets()) {
    auto job = manager_->Submit(Spec(p.name()), "");
    ASSERT_TRUE(job.ok()) << p.name() << ": " << job.status();
    EXPECT_EQ(job->model_source().kind(), lathe::v1::MODEL_SOURCE_KIND_PRESET);
    EXPECT_EQ(job->model_source().preset(), p.name());
  }
  // The training child's presets (worker/models/model_config.cc).
  std::vector<std::string> names;
  for (const auto& p : ModelPresets()) names.push_back(p.name());
  EXPECT_EQ(names,
            (std::vector<std::string>{
                "preset:bert-tiny", "preset:bert-mini", "preset:gpt2-tiny",
                "preset:llama-tiny", "preset:llama-mini", "preset:vit-tiny",
                "preset:cnn-small", "preset:wav2vec2-tiny"}));
}

TEST_F(ModelsTest, ALocalDirectoryIsPinnedAsAPath) {
  const std::string model_dir = dir_.path() + "/local-model";
  ASSERT_TRUE(MakeDirs(model_dir).ok());
  ASSERT_TRUE(WriteFileAtomic(model_dir + "/config.json", "{}").ok());
  ASSERT_TRUE(WriteFileAtomic(model_dir + "/model.safetensors", "w").ok());
  auto job = manager_->Submit(Spec("file://" + model_dir), "");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->model_source().kind(),
            lathe::v1::MODEL_SOURCE_KIND_LOCAL_PATH);
  EXPECT_EQ(job->model_source().local_path(), CanonicalPath(model_dir));
}

}  // namespace
}  // namespace lathe::server
