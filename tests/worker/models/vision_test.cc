// ViT and lathe-cnn against independent references: each test writes a model
// directory in the published layout (ViTConfig key names, the tensor names
// and shapes ViTForImageClassification / ViTModel save), loads it with
// LoadModel and compares the forward pass with plain torch ops that follow
// Hugging Face's modeling_vit.py, reading the weights by their published
// names.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "worker/models/model.h"

namespace lathe {
namespace {

using nlohmann::json;
using Weights = std::map<std::string, torch::Tensor>;

constexpr int64_t kImage = 12;
constexpr int64_t kPatch = 4;
constexpr int64_t kHidden = 16;
constexpr int64_t kHeads = 4;
constexpr int64_t kInter = 24;
constexpr int64_t kLayers = 2;
constexpr int64_t kLabels = 3;
constexpr int64_t kTokens = (kImage / kPatch) * (kImage / kPatch) + 1;

std::string FreshDir(const std::string& name) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / "lathe_vision" / name)
          .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

json VitConfigJson(bool qkv_bias, const std::string& act) {
  return {{"model_type", "vit"},
          {"architectures", {"ViTForImageClassification"}},
          {"hidden_size", kHidden},
          {"num_hidden_layers", kLayers},
          {"num_attention_heads", kHeads},
          {"intermediate_size", kInter},
          {"hidden_act", act},
          {"hidden_dropout_prob", 0.0},
          {"attention_probs_dropout_prob", 0.0},
          {"initializer_range", 0.02},
          {"layer_norm_eps", 1e-12},
          {"image_size", kImage},
          {"patch_size", kPatch},
          {"num_channels", 3},
          {"qkv_bias", qkv_bias},
          {"encoder_stride", kPatch},
          {"id2label", {{"0", "cat"}, {"1", "dog"}, {"2", "fox"}}},
          {"label2id", {{"cat", 0}, {"dog", 1}, {"fox", 2}}}};
}

torch::Tensor Rand(std::vector<int64_t> shape, double scale = 0.3) {
  return torch::randn(shape) * scale;
}

void AddLinear(Weights& w, const std::string& name, int64_t in, int64_t out,
               bool bias = true) {
  w[name + ".weight"] = Rand({out, in});
  if (bias) w[name + ".bias"] = Rand({out}, 0.1);
}

void AddNorm(Weights& w, const std::string& name) {
  w[name + ".weight"] = 1.0 + Rand({kHidden}, 0.1);
  w[name + ".bias"] = Rand({kHidden}, 0.1);
}

// The tensors ViTModel (p = "", with its pooler) or
// ViTForImageClassification (p = "vit.", classifier) saves.
Weights VitWeights(const std::string& p, bool qkv_bias, bool classifier) {
  Weights w;
  w[p + "embeddings.cls_token"] = Rand({1, 1, kHidden});
  w[p + "embeddings.position_embeddings"] = Rand({1, kTokens, kHidden});
  w[p + "embeddings.patch_embeddings.projection.weight"] =
      Rand({kHidden, 3, kPatch, kPatch}, 0.1);
  w[p + "embeddings.patch_embeddings.projection.bias"] = Rand({kHidden}, 0.1);
  for (int i = 0; i < kLayers; ++i) {
    const std::string l = p + "encoder.layer." + std::to_string(i) + ".";
    AddNorm(w, l + "layernorm_before");
    AddLinear(w, l + "attention.attention.query", kHidden, kHidden, qkv_bias);
    AddLinear(w, l + "attention.attention.key", kHidden, kHidden, qkv_bias);
    AddLinear(w, l + "attention.attention.value", kHidden, kHidden, qkv_bias);
    AddLinear(w, l + "attention.output.dense", kHidden, kHidden);
    AddNorm(w, l + "layernorm_after");
    AddLinear(w, l + "intermediate.dense", kHidden, kInter);
    AddLinear(w, l + "output.dense", kInter, kHidden);
  }
  AddNorm(w, p + "layernorm");
  if (classifier) {
    AddLinear(w, "classifier", kHidden, kLabels);
  } else {
    AddLinear(w, p + "pooler.dense", kHidden, kHidden);
  }
  return w;
}

void WriteModelDir(const std::string& dir, const json& config,
                   const Weights& w) {
  ASSERT_TRUE(WriteFileAtomic(dir + "/config.json", config.dump(2)).ok());
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  for (const auto& [name, t] : w) {
    keep.push_back(t.contiguous());
    views.push_back({name, "F32", t.sizes().vec(), keep.back().data_ptr(),
                     static_cast<size_t>(t.numel()) * sizeof(float)});
  }
  ASSERT_TRUE(
      WriteSafetensors(dir + "/model.safetensors", views, {{"format", "pt"}})
          .ok());
}

torch::Tensor Act(const std::string& act, const torch::Tensor& x) {
  if (act == "gelu_new") {
    return 0.5 * x *
           (1.0 + torch::tanh(std::sqrt(2.0 / M_PI) *
                              (x + 0.044715 * torch::pow(x, 3))));
  }
  return torch::gelu(x);
}

torch::Tensor Linear(const Weights& w, const std::string& name,
                     const torch::Tensor& x) {
  auto bias = w.find(name + ".bias");
  return torch::nn::functional::linear(
      x, w.at(name + ".weight"),
      bias == w.end() ? torch::Tensor() : bias->second);
}

torch::Tensor Norm(const Weights& w, const std::string& name,
                   const torch::Tensor& x) {
  return torch::layer_norm(x, {kHidden}, w.at(name + ".weight"),
                           w.at(name + ".bias"), 1e-12);
}

// ViTModel's forward (embeddings, pre-norm layers, final layernorm) from
// modeling_vit.py, in plain ops: the last hidden states [B, T, H].
torch::Tensor VitReference(const Weights& w, const std::string& p,
                           const std::string& act, const torch::Tensor& px) {
  torch::Tensor x = torch::conv2d(
      px, w.at(p + "embeddings.patch_embeddings.projection.weight"),
      w.at(p + "embeddings.patch_embeddings.projection.bias"),
      {kPatch, kPatch});
  const int64_t b = px.size(0);
  x = x.flatten(2).transpose(1, 2);
  x = torch::cat({w.at(p + "embeddings.cls_token").expand({b, 1, kHidden}), x},
                 1);
  x = x + w.at(p + "embeddings.position_embeddings");
  const int64_t d = kHidden / kHeads;
  for (int i = 0; i < kLayers; ++i) {
    const std::string l = p + "encoder.layer." + std::to_string(i) + ".";
    torch::Tensor h = Norm(w, l + "layernorm_before", x);
    auto heads = [&](const std::string& n) {
      return Linear(w, l + "attention.attention." + n, h)
          .view({b, kTokens, kHeads, d})
          .permute({0, 2, 1, 3});
    };
    torch::Tensor q = heads("query"), k = heads("key"), v = heads("value");
    torch::Tensor probs = torch::softmax(
        torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(d), -1);
    torch::Tensor ctx = torch::matmul(probs, v)
                            .permute({0, 2, 1, 3})
                            .reshape({b, kTokens, kHidden});
    x = Linear(w, l + "attention.output.dense", ctx) + x;
    torch::Tensor y = Norm(w, l + "layernorm_after", x);
    y = Act(act, Linear(w, l + "intermediate.dense", y));
    x = Linear(w, l + "output.dense", y) + x;
  }
  return Norm(w, p + "layernorm", x);
}

TaskModel MustLoad(const std::string& dir, HeadKind head,
                   std::vector<std::string>* log = nullptr) {
  auto m = LoadModel(dir, head, {}, [log](const std::string& line) {
    if (log != nullptr) log->push_back(line);
  });
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  (*m)->eval();
  return *m;
}

void ExpectClose(const torch::Tensor& a, const torch::Tensor& b,
                 double tol = 1e-5) {
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_LT((a - b).abs().max().item<double>(), tol);
}

TEST(VisionTest, VitClassifierMatchesReference) {
  for (bool qkv_bias : {true, false}) {
    for (std::string act : {"gelu", "gelu_new"}) {
      SCOPED_TRACE(act + (qkv_bias ? " with q/k/v biases" : " without"));
      torch::manual_seed(qkv_bias ? 1 : 2);
      const std::string dir = FreshDir("vit_cls");
      const Weights w = VitWeights("vit.", qkv_bias, /*classifier=*/true);
      WriteModelDir(dir, VitConfigJson(qkv_bias, act), w);
      std::vector<std::string> log;
      TaskModel model = MustLoad(dir, HeadKind::kSequenceClassification, &log);
      ASSERT_NE(model, nullptr);
      EXPECT_TRUE(log.empty()) << log[0];  // Every tensor was used.
      EXPECT_EQ(model->architecture_class(), "ViTForImageClassification");
      EXPECT_EQ(model->config().id2label,
                (std::vector<std::string>{"cat", "dog", "fox"}));
      const torch::Tensor px = torch::randn({2, 3, kImage, kImage});
      ModelInputs in;
      in.pixel_values = px;
      torch::NoGradGuard no_grad;
      const torch::Tensor hidden = VitReference(w, "vit.", act, px);
      const torch::Tensor expected =
          Linear(w, "classifier", hidden.select(1, 0));
      ExpectClose(model->forward(in), expected);
      // The parameter list is exactly the checkpoint's.
      EXPECT_EQ(model->named_parameters().size(), w.size());
    }
  }
}

TEST(VisionTest, VitBaseCheckpointForBothHeads) {
  torch::manual_seed(3);
  const std::string dir = FreshDir("vit_base");
  const Weights w = VitWeights("", true, /*classifier=*/false);
  json config = VitConfigJson(true, "gelu");
  config["architectures"] = {"ViTModel"};
  config.erase("id2label");
  config.erase("label2id");
  WriteModelDir(dir, config, w);
  const torch::Tensor px = torch::randn({1, 3, kImage, kImage});
  ModelInputs in;
  in.pixel_values = px;
  torch::NoGradGuard no_grad;
  TaskModel base = MustLoad(dir, HeadKind::kNone);
  ASSERT_NE(base, nullptr);
  EXPECT_EQ(base->architecture_class(), "ViTModel");
  ExpectClose(base->forward(in), VitReference(w, "", "gelu", px));

  // As a classifier: the backbone loads, the pooler is dropped and the
  // classifier starts fresh, as Hugging Face does.
  std::vector<std::string> log;
  auto cls = LoadModel(dir, HeadKind::kSequenceClassification, {"a", "b"},
                       [&](const std::string& l) { log.push_back(l); });
  ASSERT_TRUE(cls.ok()) << cls.status();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(absl::StrContains(log[0], "classifier.weight")) << log[0];
  (*cls)->eval();
  EXPECT_EQ((*cls)->forward(in).sizes(), (std::vector<int64_t>{1, 2}));
}

TEST(VisionTest, SaveLoadRoundTrip) {
  for (const char* preset : {"preset:vit-tiny", "preset:cnn-small"}) {
    SCOPED_TRACE(preset);
    auto p = FindPreset(preset);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->tokenizer_dir, "");
    ModelConfig config = p->config;
    config.id2label = {"x", "y", "z"};
    torch::manual_seed(4);
    auto made = CreateModel(config, HeadKind::kSequenceClassification);
    ASSERT_TRUE(made.ok()) << made.status();
    const std::string dir = FreshDir("round_trip");
    ASSERT_TRUE(SaveModel(**made, dir).ok());
    TaskModel loaded = MustLoad(dir, HeadKind::kSequenceClassification);
    ASSERT_NE(loaded, nullptr);
    (*made)->eval();
    const torch::Tensor px = torch::randn({2, 3, 32, 32});
    ModelInputs in;
    in.pixel_values = px;
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal((*made)->forward(in), loaded->forward(in)));
    const auto a = (*made)->named_parameters();
    const auto b = loaded->named_parameters();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& item : a) {
      ASSERT_TRUE(b.contains(item.key())) << item.key();
      EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
    }
    // Saved again, the files are the same.
    const std::string dir2 = FreshDir("round_trip2");
    ASSERT_TRUE(SaveModel(*loaded, dir2).ok());
    EXPECT_EQ(*ReadFile(dir + "/model.safetensors"),
              *ReadFile(dir2 + "/model.safetensors"));
    EXPECT_EQ(*ReadFile(dir + "/config.json"),
              *ReadFile(dir2 + "/config.json"));
    const json saved = json::parse(*ReadFile(dir + "/config.json"));
    EXPECT_EQ(saved["image_size"], 32);
    EXPECT_EQ(saved["id2label"]["2"], "z");
  }
  auto vit = FindPreset("preset:vit-tiny");
  const json j = vit->config.ToJson("ViTForImageClassification");
  EXPECT_EQ(j["model_type"], "vit");
  EXPECT_EQ(j["patch_size"], 8);
  EXPECT_EQ(j["hidden_size"], 64);
  EXPECT_EQ(j["qkv_bias"], true);
}

TEST(VisionTest, CnnMatchesReference) {
  auto p = FindPreset("preset:cnn-small");
  ASSERT_TRUE(p.ok());
  ModelConfig config = p->config;
  config.id2label = {"a", "b"};
  // The average-pooled head (configs without "pooling").
  config.cnn_pooling = "mean";
  torch::manual_seed(5);
  auto model = CreateModel(config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->eval();
  std::map<std::string, torch::Tensor> w;
  for (const auto& item : (*model)->named_parameters()) {
    w[item.key()] = item.value();
  }
  ASSERT_EQ(w.size(), 8u);  // 3 convs (weight, bias) + classifier.
  torch::NoGradGuard no_grad;
  // 20x20: pools to 10, 5, then 2 (floor), exercising odd sizes.
  const torch::Tensor px = torch::randn({2, 3, 20, 20});
  torch::Tensor x = px;
  for (int i = 0; i < 3; ++i) {
    const std::string c = "cnn.encoder." + std::to_string(i) + ".conv.";
    x = torch::relu(
        torch::conv2d(x, w.at(c + "weight"), w.at(c + "bias"), 1, 1));
    x = torch::max_pool2d(x, {2, 2});
  }
  const torch::Tensor expected = torch::nn::functional::linear(
      x.mean({2, 3}), w.at("classifier.weight"), w.at("classifier.bias"));
  ModelInputs in;
  in.pixel_values = px;
  ExpectClose((*model)->forward(in), expected);
  // Tiny inputs skip pooling instead of failing.
  in.pixel_values = torch::randn({1, 3, 3, 3});
  EXPECT_EQ((*model)->forward(in).sizes(), (std::vector<int64_t>{1, 2}));
}

TEST(VisionTest, CnnSmallFlattensItsLastFeatureMap) {
  auto p = FindPreset("preset:cnn-small");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->config.cnn_pooling, "flatten");
  EXPECT_GT(p->default_learning_rate, 0.0);
  ModelConfig config = p->config;
  config.id2label = {"a", "b", "c"};
  torch::manual_seed(6);
  auto model = CreateModel(config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->eval();
  std::map<std::string, torch::Tensor> w;
  for (const auto& item : (*model)->named_parameters()) {
    w[item.key()] = item.value();
  }
  // 32x32 pools to 16, 8, 4: 64 channels x 16 positions per class.
  EXPECT_EQ(w.at("classifier.weight").sizes(),
            (std::vector<int64_t>{3, 64 * 4 * 4}));
  torch::NoGradGuard no_grad;
  const torch::Tensor px = torch::randn({2, 3, 32, 32});
  torch::Tensor x = px;
  for (int i = 0; i < 3; ++i) {
    const std::string c = "cnn.encoder." + std::to_string(i) + ".conv.";
    x = torch::max_pool2d(torch::relu(torch::conv2d(x, w.at(c + "weight"),
                                                    w.at(c + "bias"), 1, 1)),
                          {2, 2});
  }
  // PyTorch's flatten order: channel, then row, then column.
  const torch::Tensor expected = torch::nn::functional::linear(
      x.reshape({2, -1}), w.at("classifier.weight"), w.at("classifier.bias"));
  ModelInputs in;
  in.pixel_values = px;
  ExpectClose((*model)->forward(in), expected);
  // Another image size does not fit the classifier: a clear error.
  in.pixel_values = torch::randn({1, 3, 16, 16});
  EXPECT_THROW((*model)->forward(in), c10::Error);
  // The choice survives config.json, and older configs read as "mean".
  const json j = config.ToJson("LatheCnnForImageClassification");
  EXPECT_EQ(j["pooling"], "flatten");
  auto back = ModelConfig::FromJson(j);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->cnn_pooling, "flatten");
  json old = j;
  old.erase("pooling");
  EXPECT_EQ(ModelConfig::FromJson(old)->cnn_pooling, "mean");
  old["pooling"] = "max";
  EXPECT_TRUE(absl::StrContains(ModelConfig::FromJson(old).status().message(),
                                "pooling"));
}

TEST(VisionTest, ContractsAndErrors) {
  auto vit = FindPreset("preset:vit-tiny");
  ModelConfig config = vit->config;
  config.id2label = {"a", "b"};
  auto model = CreateModel(config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(model.ok());
  ModelInputs wrong;
  wrong.pixel_values = torch::randn({1, 3, 16, 16});
  EXPECT_THROW((*model)->forward(wrong), c10::Error);
  wrong.pixel_values = torch::randn({1, 1, 32, 32});
  EXPECT_THROW((*model)->forward(wrong), c10::Error);
  EXPECT_EQ(CreateModel(config, HeadKind::kCausalLm).status().code(),
            absl::StatusCode::kInvalidArgument);
  config.id2label.clear();
  EXPECT_EQ(
      CreateModel(config, HeadKind::kSequenceClassification).status().code(),
      absl::StatusCode::kInvalidArgument);

  json bad = VitConfigJson(true, "gelu");
  bad["patch_size"] = kImage + 1;
  auto c = ModelConfig::FromJson(bad);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "patch_size"));
  json cnn = {{"model_type", "lathe-cnn"}, {"hidden_sizes", json::array()}};
  auto cc = ModelConfig::FromJson(cnn);
  ASSERT_FALSE(cc.ok());
  EXPECT_TRUE(absl::StrContains(cc.status().message(), "hidden_sizes"));
  cnn["hidden_sizes"] = {8, 4};
  cnn["image_size"] = 28;
  auto ok = ModelConfig::FromJson(cnn);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->hidden_sizes, (std::vector<int64_t>{8, 4}));
  EXPECT_EQ(ok->image_size, 28);
  EXPECT_EQ(ok->architecture, Architecture::kCnn);
}

}  // namespace
}  // namespace lathe
