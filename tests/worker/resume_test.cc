// Exact resume: checkpoints carry the training state, a run resumed from any
// of them ends bitwise where the uninterrupted run ends, and "checkpoint now"
// (SIGUSR1) adds a checkpoint without changing the trajectory.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "tests/worker/tiny_task.h"
#include "worker/train/trainer.h"

namespace lathe {
namespace {

using ::lathe::testing::FreshDir;
using ::lathe::testing::RunResult;
using ::lathe::testing::TinySpec;
using ::lathe::testing::TrainRun;
using ::lathe::testing::WriteTinyTask;

std::string Bytes(const std::string& path) {
  auto bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

// 48 rows, a quarter held out: 36 training rows, batches of 8, so 5 steps per
// epoch (the last one of 4 rows) and 15 in 3 epochs. Dropout is on, so the
// generator state matters.
TrainSpec ResumeSpec(const std::string& dir) {
  TrainSpec spec = TinySpec(dir);
  spec.params["num_threads"] = "2";
  spec.params["epochs"] = "3";
  spec.params["batch_size"] = "8";
  spec.params["learning_rate"] = "0.002";
  spec.params["validation_split"] = "0.25";
  spec.params["eval_steps"] = "4";
  spec.params["logging_steps"] = "3";
  return spec;
}

class ResumeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(FreshDir("resume"));
    WriteTinyTask(*dir_, 48);
    TrainSpec spec = ResumeSpec(*dir_);
    spec.params["save_steps"] = "1";
    full_ = new RunResult(TrainRun(spec, *dir_ + "/full"));
  }
  static void TearDownTestSuite() {
    delete full_;
    delete dir_;
  }
  static std::string Ckpt(const std::string& run, int step) {
    return absl::StrCat(*dir_, "/", run, "/checkpoint-", step);
  }
  static std::string* dir_;
  static RunResult* full_;
};
std::string* ResumeTest::dir_ = nullptr;
RunResult* ResumeTest::full_ = nullptr;

TEST_F(ResumeTest, CheckpointsHoldTheTrainingState) {
  ASSERT_TRUE(full_->status.ok()) << full_->status;
  ASSERT_EQ(full_->OfType("checkpoint").size(), 15u);
  const std::string ckpt = Ckpt("full", 7);
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt",
                        "tokenizer_config.json", "special_tokens_map.json",
                        "trainer_state.json", "training_state.safetensors"}) {
    EXPECT_TRUE(PathExists(ckpt + "/" + f)) << f;
  }
  const auto state = nlohmann::json::parse(Bytes(ckpt + "/trainer_state.json"));
  EXPECT_EQ(state["format_version"], 1);
  EXPECT_EQ(state["global_step"], 7);
  EXPECT_EQ(state["total_steps"], 15);
  EXPECT_EQ(state["epoch"], 1);
  EXPECT_EQ(state["position"], 16);  // Two batches of 8 into epoch 1.
  EXPECT_EQ(state["seed"], 3);
  EXPECT_EQ(state["adam_step"], 7);
  EXPECT_FALSE(state.contains("adam_steps"));
  EXPECT_EQ(state["labels"], (nlohmann::json{"neg", "pos"}));
  EXPECT_EQ(state["hyperparameters"]["batch_size"], 8);
  const auto boundary =
      nlohmann::json::parse(Bytes(Ckpt("full", 5) + "/trainer_state.json"));
  EXPECT_EQ(boundary["epoch"], 1);
  EXPECT_EQ(boundary["position"], 0);

  auto file = SafetensorsFile::Open(ckpt + "/training_state.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const auto* m =
      (*file)->Find("exp_avg.bert.embeddings.word_embeddings.weight");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->dtype, "F32");
  EXPECT_EQ(m->shape, (std::vector<int64_t>{25, 32}));
  ASSERT_NE((*file)->Find("exp_avg_sq.classifier.bias"), nullptr);
  const auto* rng = (*file)->Find("rng.torch_cpu");
  ASSERT_NE(rng, nullptr);
  EXPECT_EQ(rng->dtype, "U8");
}

TEST_F(ResumeTest, ResumedRunsEndBitwiseEqual) {
  ASSERT_TRUE(full_->status.ok()) << full_->status;
  const std::string final_weights =
      Bytes(Ckpt("full", 15) + "/model.safetensors");
  const std::string final_state =
      Bytes(Ckpt("full", 15) + "/training_state.safetensors");
  ASSERT_FALSE(final_weights.empty());
  // Mid-epoch (3, 7, 12), at epoch boundaries (5, 10) and one step before
  // the end (14).
  for (int at : {3, 5, 7, 10, 12, 14}) {
    SCOPED_TRACE(at);
    TrainSpec spec = ResumeSpec(*dir_);
    spec.params["save_steps"] = "1";
    spec.resume_from = Ckpt("full", at);
    spec.model = "ignored when resuming";
    const std::string run_name = absl::StrCat("resumed-", at);
    const RunResult run = TrainRun(spec, *dir_ + "/" + run_name);
    ASSERT_TRUE(run.status.ok()) << run.status;
    EXPECT_TRUE(
        run.Logged(absl::StrCat("resumed from checkpoint at step ", at)));
    const auto ckpts = run.OfType("checkpoint");
    ASSERT_EQ(ckpts.size(), static_cast<size_t>(15 - at));
    EXPECT_EQ(ckpts.front()["step"], at + 1);
    EXPECT_TRUE(ckpts.back()["final"].get<bool>());
    EXPECT_TRUE(Bytes(Ckpt(run_name, 15) + "/model.safetensors") ==
                final_weights)
        << "weights differ after resuming at step " << at;
    EXPECT_TRUE(Bytes(Ckpt(run_name, 15) + "/training_state.safetensors") ==
                final_state)
        << "optimizer state differs after resuming at step " << at;
    EXPECT_EQ(Bytes(Ckpt(run_name, 15) + "/trainer_state.json"),
              Bytes(Ckpt("full", 15) + "/trainer_state.json"));
    // Reported numbers continue as if uninterrupted.
    for (const auto& e : run.OfType("train")) {
      for (const auto& f : full_->OfType("train")) {
        if (f["step"] == e["step"]) {
          EXPECT_EQ(e["loss"], f["loss"]) << e.dump();
          EXPECT_EQ(e["learning_rate"], f["learning_rate"]) << e.dump();
        }
      }
    }
    EXPECT_EQ(run.OfType("eval").back(), full_->OfType("eval").back());
  }
}

TEST_F(ResumeTest, ResumingWithGradientAccumulationEndsBitwiseEqual) {
  // Micro-batches of 4 rows, 2 per step: 8 rows a step, as above, so the
  // position in an epoch counts rows of whole steps.
  TrainSpec spec = ResumeSpec(*dir_);
  spec.params["batch_size"] = "4";
  spec.params["gradient_accumulation_steps"] = "2";
  spec.params["save_steps"] = "1";
  const RunResult full = TrainRun(spec, *dir_ + "/ga-full");
  ASSERT_TRUE(full.status.ok()) << full.status;
  for (int at : {3, 7}) {
    SCOPED_TRACE(at);
    TrainSpec resumed = spec;
    resumed.resume_from = Ckpt("ga-full", at);
    resumed.model = "ignored when resuming";
    const std::string run_name = absl::StrCat("ga-resumed-", at);
    const RunResult run = TrainRun(resumed, *dir_ + "/" + run_name);
    ASSERT_TRUE(run.status.ok()) << run.status;
    EXPECT_TRUE(Bytes(Ckpt(run_name, 15) + "/model.safetensors") ==
                Bytes(Ckpt("ga-full", 15) + "/model.safetensors"))
        << "weights differ after resuming at step " << at;
  }
}

TEST_F(ResumeTest, ResumingAFinishedRunReportsItsFinalCheckpoint) {
  ASSERT_TRUE(full_->status.ok()) << full_->status;
  TrainSpec spec = ResumeSpec(*dir_);
  spec.resume_from = Ckpt("full", 15);
  const RunResult run = TrainRun(spec, *dir_ + "/resumed-end");
  ASSERT_TRUE(run.status.ok()) << run.status;
  EXPECT_TRUE(run.OfType("train").empty());
  const auto ckpts = run.OfType("checkpoint");
  ASSERT_EQ(ckpts.size(), 1u);
  EXPECT_EQ(ckpts[0]["step"], 15);
  EXPECT_TRUE(ckpts[0]["final"].get<bool>());
  EXPECT_EQ(Bytes(Ckpt("resumed-end", 15) + "/model.safetensors"),
            Bytes(Ckpt("full", 15) + "/model.safetensors"));
}

TEST_F(ResumeTest, BadResumeDirectoriesAreInvalidArgument) {
  ASSERT_TRUE(full_->status.ok()) << full_->status;
  auto copy = [&](int step, const std::string& name) {
    const std::string to = *dir_ + "/" + name;
    std::filesystem::remove_all(to);
    std::filesystem::copy(Ckpt("full", step), to);
    return to;
  };
  auto resume_status = [&](const std::string& from, TrainSpec spec) {
    spec.resume_from = from;
    return TrainRun(spec, *dir_ + "/bad-out").status;
  };
  const TrainSpec spec = ResumeSpec(*dir_);
  {
    const std::string d = copy(7, "corrupt");
    std::ofstream(d + "/trainer_state.json") << "{\"format\": \"lathe-tr";
    const absl::Status s = resume_status(d, spec);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(std::string(s.message()).find("trainer_state.json"),
              std::string::npos)
        << s;
    EXPECT_EQ(ExitCodeForStatus(s), 2);
  }
  {
    const std::string d = copy(7, "inconsistent");
    auto j = nlohmann::json::parse(Bytes(d + "/trainer_state.json"));
    j["position"] = 3;  // Not where step 7 leaves the data.
    std::ofstream(d + "/trainer_state.json") << j.dump();
    EXPECT_EQ(resume_status(d, spec).code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    const std::string d = copy(7, "missing");
    std::filesystem::remove(d + "/trainer_state.json");
    const absl::Status s = resume_status(d, spec);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(std::string(s.message()).find("missing"), std::string::npos);
  }
  {
    const std::string d = copy(7, "no-optimizer");
    std::filesystem::remove(d + "/training_state.safetensors");
    EXPECT_EQ(resume_status(d, spec).code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(resume_status(*dir_ + "/no-such-dir", spec).code(),
            absl::StatusCode::kInvalidArgument);
  {
    TrainSpec other = spec;
    other.params["batch_size"] = "4";
    const absl::Status s = resume_status(Ckpt("full", 7), other);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(s.message()).find("batch_size"), std::string::npos)
        << s;
  }
  {
    // Different labels in the data.
    std::ofstream data(*dir_ + "/three.jsonl");
    for (int i = 0; i < 48; ++i) {
      data << nlohmann::json{{"text", "good movie"},
                             {"label", i % 3 == 0 ? "a" : (i % 3 ? "b" : "c")}}
                  .dump()
           << "\n";
    }
    data.close();
    TrainSpec other = spec;
    other.train_data = *dir_ + "/three.jsonl";
    const absl::Status s = resume_status(Ckpt("full", 7), other);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(s.message()).find("labels"), std::string::npos) << s;
  }
}

TEST(CheckpointNowTest, SignalAddsACheckpointWithoutChangingWeights) {
  const std::string dir = FreshDir("checkpoint_now");
  WriteTinyTask(dir, 48);
  TrainSpec spec = ResumeSpec(dir);
  spec.params["save_steps"] = "0";
  spec.params["logging_steps"] = "1";
  const RunResult plain = TrainRun(spec, dir + "/plain");
  ASSERT_TRUE(plain.status.ok()) << plain.status;
  ASSERT_EQ(plain.OfType("checkpoint").size(), 1u);

  InstallCheckpointSignalHandler();
  const RunResult signalled =
      TrainRun(spec, dir + "/signalled", [](const nlohmann::json& e) {
        if (e["type"] == "train" && e["step"] == 6) std::raise(SIGUSR1);
      });
  ASSERT_TRUE(signalled.status.ok()) << signalled.status;
  const auto ckpts = signalled.OfType("checkpoint");
  ASSERT_EQ(ckpts.size(), 2u);
  EXPECT_EQ(ckpts[0]["step"], 6);
  EXPECT_TRUE(ckpts[0]["requested"].get<bool>());
  EXPECT_FALSE(ckpts[0]["final"].get<bool>());
  EXPECT_FALSE(ckpts[1].contains("requested"));
  EXPECT_TRUE(PathExists(dir + "/signalled/checkpoint-6/trainer_state.json"));
  EXPECT_EQ(Bytes(dir + "/signalled/checkpoint-15/model.safetensors"),
            Bytes(dir + "/plain/checkpoint-15/model.safetensors"));

  // A request before the first step is served at the first step boundary,
  // and the requested checkpoint resumes exactly too.
  RequestCheckpoint();
  const RunResult early = TrainRun(spec, dir + "/early");
  ASSERT_TRUE(early.status.ok()) << early.status;
  ASSERT_GE(early.OfType("checkpoint").size(), 1u);
  EXPECT_EQ(early.OfType("checkpoint")[0]["step"], 1);
  EXPECT_TRUE(early.OfType("checkpoint")[0]["requested"].get<bool>());
  TrainSpec resumed = spec;
  resumed.resume_from = dir + "/signalled/checkpoint-6";
  ASSERT_TRUE(TrainRun(resumed, dir + "/resumed").status.ok());
  EXPECT_EQ(Bytes(dir + "/resumed/checkpoint-15/model.safetensors"),
            Bytes(dir + "/plain/checkpoint-15/model.safetensors"));
}

TEST(ExitCodeTest, MapsStatusCodes) {
  EXPECT_EQ(ExitCodeForStatus(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeForStatus(absl::InvalidArgumentError("x")), 2);
  EXPECT_EQ(ExitCodeForStatus(absl::NotFoundError("x")), 2);
  EXPECT_EQ(ExitCodeForStatus(absl::ResourceExhaustedError("x")), 3);
  EXPECT_EQ(ExitCodeForStatus(absl::InternalError("x")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::FailedPreconditionError("x")), 1);
}

TEST(ResumeSpecTest, ResumeFromIsReadFromJson) {
  auto spec = TrainSpec::FromJson(
      R"({"model": "preset:bert-tiny", "train_data": "/d/t.jsonl",
          "resume_from": "/w/job/checkpoint-40"})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->resume_from, "/w/job/checkpoint-40");
  EXPECT_FALSE(TrainSpec::FromJson(
                   R"({"model": "m", "train_data": "t", "resume_from": 3})")
                   .ok());
}

}  // namespace
}  // namespace lathe
