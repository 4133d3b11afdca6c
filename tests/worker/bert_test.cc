#include "worker/models/bert.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <string>

#include "common/files.h"
#include "common/safetensors.h"
#include "tests/worker/tiny_task.h"
#include "worker/train/trainer.h"

namespace lathe {
namespace {

using ::lathe::testing::FreshDir;
using ::lathe::testing::TinyConfig;

BertConfig TinyWithLabels(int n) {
  BertConfig c = TinyConfig();
  c.id2label.clear();
  for (int i = 0; i < n; ++i) c.id2label.push_back("l" + std::to_string(i));
  return c;
}

TEST(BertTest, HuggingFaceParameterNames) {
  torch::manual_seed(0);
  BertForSequenceClassification model(TinyWithLabels(3));
  std::set<std::string> names;
  for (const auto& item : model->named_parameters()) names.insert(item.key());
  for (const char* name : {
           "bert.embeddings.word_embeddings.weight",
           "bert.embeddings.position_embeddings.weight",
           "bert.embeddings.token_type_embeddings.weight",
           "bert.embeddings.LayerNorm.weight",
           "bert.embeddings.LayerNorm.bias",
           "bert.encoder.layer.0.attention.self.query.weight",
           "bert.encoder.layer.0.attention.self.key.bias",
           "bert.encoder.layer.1.attention.self.value.weight",
           "bert.encoder.layer.1.attention.output.dense.weight",
           "bert.encoder.layer.1.attention.output.LayerNorm.bias",
           "bert.encoder.layer.0.intermediate.dense.weight",
           "bert.encoder.layer.0.output.dense.bias",
           "bert.encoder.layer.1.output.LayerNorm.weight",
           "bert.pooler.dense.weight",
           "bert.pooler.dense.bias",
           "classifier.weight",
           "classifier.bias",
       }) {
    EXPECT_TRUE(names.count(name)) << name;
  }
  // 5 embedding tensors, 16 per layer, 2 pooler, 2 classifier.
  EXPECT_EQ(names.size(), 5u + 2 * 16 + 2 + 2);
}

TEST(BertTest, ForwardShapesAndGradientsForEveryParameter) {
  torch::manual_seed(0);
  BertForSequenceClassification model(TinyWithLabels(3));
  model->train();
  torch::Tensor ids =
      torch::tensor({5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, torch::kLong)
          .view({2, 5});
  torch::Tensor types = torch::zeros({2, 5}, torch::kLong);
  types[1][4] = 1;
  torch::Tensor mask = torch::ones({2, 5}, torch::kLong);
  mask[1][3] = 0;
  mask[1][4] = 0;
  torch::Tensor logits = model(ids, types, mask);
  EXPECT_EQ(logits.sizes().vec(), (std::vector<int64_t>{2, 3}));
  torch::nn::functional::cross_entropy(logits,
                                       torch::tensor({0, 2}, torch::kLong))
      .backward();
  for (const auto& item : model->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    if (item.key() == "bert.embeddings.token_type_embeddings.weight" ||
        item.key() == "bert.embeddings.word_embeddings.weight" ||
        item.key() == "bert.embeddings.position_embeddings.weight") {
      continue;  // Only the rows used get gradients.
    }
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0) << item.key();
  }
}

TEST(BertTest, PaddingDoesNotChangeOutputs) {
  torch::manual_seed(0);
  BertForSequenceClassification model(TinyWithLabels(2));
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::tensor({{2, 5, 7, 3}}, torch::kLong);
  torch::Tensor padded = torch::tensor({{2, 5, 7, 3, 0, 0}}, torch::kLong);
  torch::Tensor a = model(ids, torch::zeros_like(ids), torch::ones_like(ids));
  torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 0, 0}}, torch::kLong);
  torch::Tensor b = model(padded, torch::zeros_like(padded), mask);
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-5));
}

TEST(BertTest, ConfigJsonRoundTrip) {
  BertConfig c = TinyWithLabels(2);
  auto back = BertConfig::FromJson(c.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->hidden_size, 32);
  EXPECT_EQ(back->id2label, c.id2label);
  nlohmann::json j = c.ToJson();
  j["model_type"] = "gpt2";
  EXPECT_FALSE(BertConfig::FromJson(j).ok());
  j = c.ToJson();
  j["hidden_size"] = 33;
  EXPECT_FALSE(BertConfig::FromJson(j).ok());
  EXPECT_TRUE(BertConfig::Preset("preset:bert-mini").ok());
  EXPECT_FALSE(BertConfig::Preset("preset:nope").ok());
}

// Trains briefly through RunTraining, then loads the checkpoint back as a
// base model: every tensor must match.
TEST(BertTest, CheckpointLoadsBackAsBaseModel) {
  const std::string dir = FreshDir("reload");
  testing::WriteTinyTask(dir, 32);
  TrainSpec spec = testing::TinySpec(dir);
  spec.params["max_steps"] = "2";
  spec.params["batch_size"] = "8";
  ASSERT_TRUE(
      RunTraining(spec, dir + "/out", [](const nlohmann::json&) {}).ok());
  const std::string ckpt = dir + "/out/checkpoint-2";

  std::vector<std::string> logs;
  auto loaded = LoadBertForClassification(
      ckpt, {"neg", "pos"}, [&](const std::string& m) { logs.push_back(m); });
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(logs.empty());
  // Save it again and compare bytes: the round trip is exact.
  const std::string again = dir + "/again";
  ASSERT_TRUE(MakeDirs(again).ok());
  ASSERT_TRUE(SaveBertWeights(*loaded, again).ok());
  EXPECT_TRUE(*ReadFile(ckpt + "/model.safetensors") ==
              *ReadFile(again + "/model.safetensors"));

  // A different label count gets a fresh classifier, and says so.
  logs.clear();
  auto three = LoadBertForClassification(
      ckpt, {"a", "b", "c"}, [&](const std::string& m) { logs.push_back(m); });
  ASSERT_TRUE(three.ok()) << three.status();
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_NE(logs[0].find("classifier initialised fresh"), std::string::npos);

  // Chained fine-tuning: the checkpoint works as a base model directory.
  TrainSpec chained = testing::TinySpec(dir);
  chained.model_config.reset();
  chained.model = ckpt;
  chained.params["max_steps"] = "1";
  const absl::Status s =
      RunTraining(chained, dir + "/out2", [](const nlohmann::json&) {});
  EXPECT_TRUE(s.ok()) << s;
}

TEST(BertTest, LoadRefusesPickleAndUnexpectedTensors) {
  const std::string dir = FreshDir("refuse");
  ASSERT_TRUE(
      WriteFileAtomic(dir + "/config.json", TinyWithLabels(2).ToJson().dump())
          .ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/pytorch_model.bin", "pickle").ok());
  auto r = LoadBertForClassification(dir, {"a", "b"}, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("safetensors"),
            std::string::npos);

  // A checkpoint missing an encoder tensor is an error naming it.
  torch::manual_seed(0);
  BertForSequenceClassification model(TinyWithLabels(2));
  ASSERT_TRUE(SaveBertWeights(model, dir).ok());
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  std::vector<TensorView> views;
  for (const auto& [name, t] : (*file)->tensors()) {
    if (name == "bert.pooler.dense.bias") continue;
    views.push_back({name, t.dtype, t.shape, t.data, t.nbytes});
  }
  float extra = 1;
  views.push_back({"bert.extra", "F32", {1}, &extra, 4});
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", views, {}).ok());
  r = LoadBertForClassification(dir, {"a", "b"}, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("bert.pooler.dense.bias"),
            std::string::npos)
      << r.status();
}

}  // namespace
}  // namespace lathe
