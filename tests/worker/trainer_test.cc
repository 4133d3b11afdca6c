#include "worker/train/trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/safetensors.h"
#include "tests/worker/tiny_task.h"

namespace lathe {
namespace {

using ::lathe::testing::FreshDir;
using ::lathe::testing::RunResult;
using ::lathe::testing::TinySpec;
using ::lathe::testing::TrainRun;
using ::lathe::testing::WriteTinyTask;

TEST(TrainerTest, LearnsSeparableTask) {
  const std::string dir = FreshDir("learns");
  WriteTinyTask(dir, 240);
  TrainSpec spec = TinySpec(dir);
  spec.params["epochs"] = "6";
  spec.params["batch_size"] = "16";
  spec.params["learning_rate"] = "0.002";
  spec.params["validation_split"] = "0.2";
  spec.params["eval_steps"] = "30";
  spec.params["save_steps"] = "40";
  const RunResult run = TrainRun(spec, dir + "/out");
  ASSERT_TRUE(run.status.ok()) << run.status;

  const auto train = run.OfType("train");
  ASSERT_GE(train.size(), 3u);
  EXPECT_EQ(train.front()["step"], 1);
  const int64_t total = train.front()["total_steps"];
  EXPECT_EQ(total, 6 * 12);  // 192 training rows / 16.
  EXPECT_EQ(train.back()["step"], total);
  EXPECT_LT(train.back()["loss"].get<double>(),
            train.front()["loss"].get<double>());
  for (const auto& e : train) {
    EXPECT_GT(e["samples_per_second"].get<double>(), 0);
    EXPECT_GE(e["learning_rate"].get<double>(), 0);
  }

  const auto evals = run.OfType("eval");
  ASSERT_EQ(evals.size(), 3u);  // Steps 30, 60 and the end (72).
  EXPECT_GE(evals.back()["metrics"]["accuracy"].get<double>(), 0.9);
  EXPECT_GE(evals.back()["metrics"]["f1"].get<double>(), 0.85);

  const auto ckpts = run.OfType("checkpoint");
  ASSERT_EQ(ckpts.size(), 2u);  // Step 40 and the final step.
  EXPECT_EQ(ckpts[0]["step"], 40);
  EXPECT_FALSE(ckpts[0]["final"].get<bool>());
  EXPECT_TRUE(ckpts[1]["final"].get<bool>());
  EXPECT_EQ(ckpts[1]["metrics"], evals.back()["metrics"]);
  const std::string last = ckpts[1]["dir"];
  EXPECT_EQ(last, dir + "/out/checkpoint-72");
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt",
                        "tokenizer_config.json", "special_tokens_map.json"}) {
    EXPECT_TRUE(PathExists(last + "/" + f)) << f;
  }
  auto config = nlohmann::json::parse(*ReadFile(last + "/config.json"));
  EXPECT_EQ(config["id2label"]["0"], "neg");
  EXPECT_EQ(config["label2id"]["pos"], 1);
  EXPECT_EQ(config["architectures"][0], "BertForSequenceClassification");
  auto weights = SafetensorsFile::Open(last + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_NE((*weights)->Find("bert.encoder.layer.1.output.LayerNorm.weight"),
            nullptr);
  EXPECT_EQ((*weights)->Find("classifier.weight")->shape,
            (std::vector<int64_t>{2, 32}));
}

TEST(TrainerTest, SameSeedGivesBitwiseEqualWeights) {
  const std::string dir = FreshDir("determinism");
  WriteTinyTask(dir, 64);
  TrainSpec spec = TinySpec(dir);
  spec.params["max_steps"] = "4";
  spec.params["batch_size"] = "8";
  spec.params["learning_rate"] = "0.001";
  spec.params["num_threads"] = "2";
  ASSERT_TRUE(TrainRun(spec, dir + "/a").status.ok());
  ASSERT_TRUE(TrainRun(spec, dir + "/b").status.ok());
  spec.params["seed"] = "4";
  ASSERT_TRUE(TrainRun(spec, dir + "/c").status.ok());
  const auto a = ReadFile(dir + "/a/checkpoint-4/model.safetensors");
  const auto b = ReadFile(dir + "/b/checkpoint-4/model.safetensors");
  const auto c = ReadFile(dir + "/c/checkpoint-4/model.safetensors");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(*a == *b) << "same seed, different weights";
  EXPECT_FALSE(*a == *c) << "different seeds, same weights";
}

// group_by_length: batches of rows of similar length. The tiny rows have 6
// to 11 tokens; an epoch of 64 rows fits in one sorted run, so each grouped
// batch of 8 spans at most a couple of lengths, and padding shrinks.
TEST(TrainerTest, GroupByLengthPadsLess) {
  const std::string dir = FreshDir("group_by_length");
  WriteTinyTask(dir, 64);
  TrainSpec spec = TinySpec(dir);
  spec.params["epochs"] = "1";
  spec.params["batch_size"] = "8";
  spec.params["validation_split"] = "0";
  spec.params["logging_steps"] = "8";
  spec.params["save_steps"] = "0";
  const RunResult plain = TrainRun(spec, dir + "/plain");
  ASSERT_TRUE(plain.status.ok()) << plain.status;
  spec.params["group_by_length"] = "1";
  const RunResult grouped = TrainRun(spec, dir + "/grouped");
  ASSERT_TRUE(grouped.status.ok()) << grouped.status;
  const RunResult again = TrainRun(spec, dir + "/again");
  ASSERT_TRUE(again.status.ok()) << again.status;

  const double plain_eff =
      plain.OfType("train").back()["padding_efficiency"].get<double>();
  const double grouped_eff =
      grouped.OfType("train").back()["padding_efficiency"].get<double>();
  EXPECT_GT(grouped_eff, plain_eff);
  EXPECT_GE(grouped_eff, 0.9);
  EXPECT_LE(grouped_eff, 1.0);
  // The same rows are trained on, in another order: the epoch's tokens agree.
  const auto first = grouped.OfType("train").front();
  EXPECT_EQ(first["train_tokens"],
            plain.OfType("train").front()["train_tokens"]);
  EXPECT_GE(first["prepare_seconds"].get<double>(), 0);
  const double share =
      grouped.OfType("train").back()["data_time_share"].get<double>();
  EXPECT_GT(share, 0);
  EXPECT_LT(share, 1);
  // The grouped order is a function of the seed: a second run is identical.
  const auto a = ReadFile(dir + "/grouped/checkpoint-8/model.safetensors");
  const auto b = ReadFile(dir + "/again/checkpoint-8/model.safetensors");
  const auto c = ReadFile(dir + "/plain/checkpoint-8/model.safetensors");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(*a == *b);
  EXPECT_FALSE(*a == *c);
}

// bf16 autocast trains (on CPU here) and the job says it is applied.
TEST(TrainerTest, Bf16AutocastTrains) {
  const std::string dir = FreshDir("bf16");
  WriteTinyTask(dir, 64);
  TrainSpec spec = TinySpec(dir);
  spec.params["max_steps"] = "6";
  spec.params["batch_size"] = "8";
  spec.params["learning_rate"] = "0.002";
  spec.params["validation_split"] = "0.25";
  spec.params["bf16"] = "1";
  const RunResult run = TrainRun(spec, dir + "/out");
  ASSERT_TRUE(run.status.ok()) << run.status;
  bool said = false;
  for (const auto& e : run.OfType("log")) {
    said |=
        e["message"].get<std::string>().rfind("bf16 autocast on cpu", 0) == 0;
  }
  EXPECT_TRUE(said);
  for (const auto& e : run.OfType("train")) {
    EXPECT_TRUE(std::isfinite(e["loss"].get<double>()));
  }
  const auto evals = run.OfType("eval");
  ASSERT_FALSE(evals.empty());
  EXPECT_TRUE(std::isfinite(evals.back()["metrics"]["loss"].get<double>()));
  // What stays in float32 under bf16 autocast: the weights (the master copy
  // the optimizer updates) and both Adam moments, as the checkpoint holds
  // them.
  const auto checkpoints = run.OfType("checkpoint");
  ASSERT_FALSE(checkpoints.empty());
  const std::string ckpt = checkpoints.back()["dir"].get<std::string>();
  auto weights = SafetensorsFile::Open(ckpt + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_FALSE((*weights)->tensors().empty());
  for (const auto& [name, t] : (*weights)->tensors()) {
    EXPECT_EQ(t.dtype, "F32") << name;
  }
  auto state = SafetensorsFile::Open(ckpt + "/training_state.safetensors");
  ASSERT_TRUE(state.ok()) << state.status();
  int moments = 0;
  for (const auto& [name, t] : (*state)->tensors()) {
    if (name.rfind("exp_avg", 0) != 0) continue;
    ++moments;
    EXPECT_EQ(t.dtype, "F32") << name;
  }
  EXPECT_GT(moments, 0);
}

TEST(TrainerTest, InvalidInputsAreInvalidArgument) {
  const std::string dir = FreshDir("invalid");
  WriteTinyTask(dir, 16);
  {
    TrainSpec spec = TinySpec(dir);
    spec.params["epochs"] = "0";
    const RunResult run = TrainRun(spec, dir + "/out");
    EXPECT_EQ(run.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ExitCodeForStatus(run.status), 2);
  }
  {
    TrainSpec spec = TinySpec(dir);
    spec.model_config.reset();
    spec.model = "preset:bert-huge";
    const RunResult run = TrainRun(spec, dir + "/out");
    EXPECT_EQ(run.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(run.status.message()).find("bert-huge"),
              std::string::npos);
  }
  {
    TrainSpec spec = TinySpec(dir);
    spec.model_config.reset();
    spec.model = dir + "/no-such-model";
    EXPECT_EQ(TrainRun(spec, dir + "/out").status.code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    std::ofstream(dir + "/bad.jsonl")
        << "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": 1}\n";
    TrainSpec spec = TinySpec(dir);
    spec.train_data = dir + "/bad.jsonl";
    spec.train_name = "bad.jsonl";
    const RunResult run = TrainRun(spec, dir + "/out");
    EXPECT_EQ(run.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(run.status.message()),
              "bad.jsonl:2: field \"text\" is not a string");
  }
  {
    std::ofstream(dir + "/val.jsonl")
        << "{\"text\": \"a\", \"label\": \"meh\"}\n";
    TrainSpec spec = TinySpec(dir);
    spec.validation_data = dir + "/val.jsonl";
    spec.validation_name = "val.jsonl";
    const RunResult run = TrainRun(spec, dir + "/out");
    EXPECT_EQ(run.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(run.status.message()).find("\"meh\""),
              std::string::npos);
  }
  {
    TrainSpec spec = TinySpec(dir);
    spec.device = "cuda:0";
    spec.params["max_steps"] = "1";
    const RunResult run = TrainRun(spec, dir + "/out");
    // A CPU LibTorch refuses with a clear message; a CUDA build may train.
    if (!run.status.ok()) {
      EXPECT_NE(std::string(run.status.message()).find("CUDA"),
                std::string::npos)
          << run.status;
    }
  }
}

TEST(TrainerTest, SpecFromJson) {
  auto spec =
      TrainSpec::FromJson(R"({"job_id": "j", "model": "preset:bert-tiny",
      "train_data": "/d/t.jsonl", "params": {"epochs": "2", "seed": 5}})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->task, "text-classification");
  EXPECT_EQ(spec->device, "cpu");
  EXPECT_EQ(spec->params.at("epochs"), "2");
  EXPECT_EQ(spec->params.at("seed"), "5");
  EXPECT_FALSE(
      TrainSpec::FromJson("{\"model\": 1, \"train_data\": \"x\"}").ok());
  EXPECT_FALSE(TrainSpec::FromJson("{\"train_data\": \"x\"}").ok());
  EXPECT_FALSE(TrainSpec::FromJson("nope").ok());
}

}  // namespace
}  // namespace lathe
