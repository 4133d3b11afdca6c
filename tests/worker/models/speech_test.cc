// Wav2Vec2 against a functional reference written from Hugging Face's
// modelling code (plain torch ops on the named tensors, not the modules):
// both feature-encoder norms, both layer orders, padded rows; config.json
// in and out; checkpoints with either spelling of the weight-normalised
// position convolution and with pre-training tensors.
#include "worker/models/speech.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/support/temp_dir.h"
#include "worker/models/model.h"

namespace lathe {
namespace {

using nlohmann::json;
namespace F = torch::nn::functional;
using Weights = std::map<std::string, torch::Tensor>;

json TinyConfig(const std::string& norm, bool stable, int64_t kernel) {
  return {{"model_type", "wav2vec2"},
          {"vocab_size", 12},
          {"hidden_size", 16},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 2},
          {"intermediate_size", 24},
          {"hidden_act", "gelu"},
          {"conv_dim", {8, 8, 8}},
          {"conv_kernel", {10, 4, 3}},
          {"conv_stride", {5, 2, 2}},
          {"conv_bias", norm == "layer"},
          {"feat_extract_norm", norm},
          {"num_conv_pos_embeddings", kernel},
          {"num_conv_pos_embedding_groups", 4},
          {"do_stable_layer_norm", stable},
          {"layer_norm_eps", 1e-5},
          {"hidden_dropout", 0.0},
          {"attention_dropout", 0.0},
          {"activation_dropout", 0.0},
          {"final_dropout", 0.0},
          {"layerdrop", 0.0},
          {"mask_time_prob", 0.3},
          {"mask_time_length", 2},
          {"classifier_proj_size", 6}};
}

Weights Named(TaskModelImpl& model) {
  Weights w;
  for (const auto& item : model.named_parameters()) {
    w[item.key()] = item.value().detach().clone();
  }
  return w;
}

// Hugging Face's computation, step by step on the tensors.
torch::Tensor Reference(const Weights& w, const json& cfg,
                        const torch::Tensor& values,
                        const std::vector<int64_t>& lengths) {
  auto W = [&](const std::string& n) { return w.at("wav2vec2." + n); };
  const bool group = cfg["feat_extract_norm"] == "group";
  const bool stable = cfg["do_stable_layer_norm"];
  const int64_t layers = cfg["conv_dim"].size();
  torch::Tensor x = values.unsqueeze(1);
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p =
        "feature_extractor.conv_layers." + std::to_string(i) + ".";
    const int64_t stride = cfg["conv_stride"][i];
    torch::Tensor bias = w.count("wav2vec2." + p + "conv.bias")
                             ? W(p + "conv.bias")
                             : torch::Tensor();
    x = F::conv1d(x, W(p + "conv.weight"),
                  F::Conv1dFuncOptions().bias(bias).stride(stride));
    const int64_t c = x.size(1);
    if (group && i == 0) {
      x = F::group_norm(x, F::GroupNormFuncOptions(c)
                               .weight(W(p + "layer_norm.weight"))
                               .bias(W(p + "layer_norm.bias"))
                               .eps(1e-5));
    } else if (!group) {
      x = F::layer_norm(x.transpose(1, 2),
                        F::LayerNormFuncOptions({c})
                            .weight(W(p + "layer_norm.weight"))
                            .bias(W(p + "layer_norm.bias"))
                            .eps(1e-5))
              .transpose(1, 2);
    }
    x = torch::gelu(x);
  }
  x = x.transpose(1, 2);
  const int64_t b = x.size(0), t = x.size(1), h = cfg["hidden_size"];
  auto ln = [&](const torch::Tensor& y, const std::string& n) {
    return F::layer_norm(y, F::LayerNormFuncOptions({y.size(-1)})
                                .weight(W(n + ".weight"))
                                .bias(W(n + ".bias"))
                                .eps(1e-5));
  };
  auto lin = [&](const torch::Tensor& y, const std::string& n) {
    return F::linear(y, W(n + ".weight"), W(n + ".bias"));
  };
  torch::Tensor hidden = lin(ln(x, "feature_projection.layer_norm"),
                             "feature_projection.projection");
  // Frames per row: floor((n - kernel) / stride) + 1 per layer.
  torch::Tensor keep = torch::zeros({b, t});
  for (int64_t r = 0; r < b; ++r) {
    int64_t n = lengths[static_cast<size_t>(r)];
    for (int64_t i = 0; i < layers; ++i) {
      n = (n - cfg["conv_kernel"][i].get<int64_t>()) /
              cfg["conv_stride"][i].get<int64_t>() +
          1;
    }
    keep.index_put_({r, torch::indexing::Slice(0, n)}, 1.0);
  }
  hidden = hidden * keep.unsqueeze(-1);
  const torch::Tensor g = W("encoder.pos_conv_embed.conv.weight_g");
  const torch::Tensor v = W("encoder.pos_conv_embed.conv.weight_v");
  const torch::Tensor weight =
      g * v / v.pow(2).sum(std::vector<int64_t>{0, 1}, /*keepdim=*/true).sqrt();
  const int64_t kernel = cfg["num_conv_pos_embeddings"];
  torch::Tensor pos = F::conv1d(
      hidden.transpose(1, 2), weight,
      F::Conv1dFuncOptions()
          .bias(W("encoder.pos_conv_embed.conv.bias"))
          .padding(kernel / 2)
          .groups(cfg["num_conv_pos_embedding_groups"].get<int64_t>()));
  if (kernel % 2 == 0) pos = pos.narrow(2, 0, t);
  hidden = hidden + torch::gelu(pos).transpose(1, 2);
  if (!stable) hidden = ln(hidden, "encoder.layer_norm");
  const int64_t heads = cfg["num_attention_heads"], d = h / heads;
  const torch::Tensor bias =
      (1.0 - keep).mul(std::numeric_limits<float>::lowest()).view({b, 1, 1, t});
  for (int64_t l = 0; l < cfg["num_hidden_layers"].get<int64_t>(); ++l) {
    const std::string p = "encoder.layers." + std::to_string(l) + ".";
    auto attend = [&](const torch::Tensor& y) {
      auto heads_of = [&](const torch::Tensor& z) {
        return z.view({b, t, heads, d}).permute({0, 2, 1, 3});
      };
      torch::Tensor q = heads_of(lin(y, p + "attention.q_proj")) / std::sqrt(d);
      torch::Tensor k = heads_of(lin(y, p + "attention.k_proj"));
      torch::Tensor vv = heads_of(lin(y, p + "attention.v_proj"));
      torch::Tensor probs =
          torch::softmax(torch::einsum("bhqd,bhkd->bhqk", {q, k}) + bias, -1);
      torch::Tensor ctx = torch::einsum("bhqk,bhkd->bqhd", {probs, vv});
      return lin(ctx.reshape({b, t, h}), p + "attention.out_proj");
    };
    auto ff = [&](const torch::Tensor& y) {
      return lin(torch::gelu(lin(y, p + "feed_forward.intermediate_dense")),
                 p + "feed_forward.output_dense");
    };
    if (stable) {
      hidden = hidden + attend(ln(hidden, p + "layer_norm"));
      hidden = hidden + ff(ln(hidden, p + "final_layer_norm"));
    } else {
      hidden = ln(hidden + attend(hidden), p + "layer_norm");
      hidden = ln(hidden + ff(hidden), p + "final_layer_norm");
    }
  }
  if (stable) hidden = ln(hidden, "encoder.layer_norm");
  return F::linear(hidden, w.at("lm_head.weight"), w.at("lm_head.bias"));
}

void ExpectClose(const torch::Tensor& a, const torch::Tensor& b,
                 double tol = 1e-4) {
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_LT((a - b).abs().max().item<double>(), tol);
}

TEST(SpeechTest, CtcMatchesTheReferenceInEveryVariant) {
  for (const std::string norm : {"group", "layer"}) {
    for (bool stable : {false, true}) {
      for (int64_t kernel : {8, 7}) {
        SCOPED_TRACE(norm + (stable ? " stable" : " post-norm") + " kernel " +
                     std::to_string(kernel));
        const json cfg = TinyConfig(norm, stable, kernel);
        auto config = ModelConfig::FromJson(cfg);
        ASSERT_TRUE(config.ok()) << config.status();
        torch::manual_seed(3);
        auto model = CreateModel(*config, HeadKind::kCtc);
        ASSERT_TRUE(model.ok()) << model.status();
        (*model)->eval();
        torch::NoGradGuard no_grad;
        // Two rows, the second padded after 1,200 of its 1,600 samples.
        const torch::Tensor values = torch::randn({2, 1600});
        torch::Tensor mask = torch::ones({2, 1600}, torch::kLong);
        mask.index_put_({1, torch::indexing::Slice(1200, 1600)}, 0);
        ModelInputs in;
        in.input_values = values * mask;
        in.attention_mask = mask;
        const torch::Tensor out = (*model)->forward(in);
        const torch::Tensor expected =
            Reference(Named(**model), cfg, in.input_values, {1600, 1200});
        // 1600 samples: (1600-10)/5+1 = 319, (319-4)/2+1 = 158, 78.
        EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 78, 12}));
        EXPECT_EQ(Wav2Vec2FrameCount(*config, 1600), 78);
        EXPECT_EQ(Wav2Vec2FrameCount(*config, 1200), 58);
        const int64_t valid = Wav2Vec2FrameCount(*config, 1200);
        ExpectClose(out[0], expected[0]);
        ExpectClose(out[1].narrow(0, 0, valid),
                    expected[1].narrow(0, 0, valid));
      }
    }
  }
}

TEST(SpeechTest, FrameCountsFollowTheBaseModel) {
  auto config = ModelConfig::FromJson({{"model_type", "wav2vec2"}});
  ASSERT_TRUE(config.ok()) << config.status();
  // wav2vec2-base: one second at 16 kHz makes 49 frames of 20 ms.
  EXPECT_EQ(Wav2Vec2FrameCount(*config, 16000), 49);
  EXPECT_EQ(Wav2Vec2FrameCount(*config, 399), 0);
  const torch::Tensor counts =
      Wav2Vec2FrameCounts(*config, torch::tensor({16000, 32000, 400}));
  EXPECT_TRUE(torch::equal(counts, torch::tensor({49, 99, 1}).to(torch::kLong)))
      << counts;
}

TEST(SpeechTest, ClassifierPoolsTheRealFrames) {
  const json cfg = TinyConfig("group", false, 8);
  auto config = ModelConfig::FromJson(cfg);
  ASSERT_TRUE(config.ok());
  config->id2label = {"yes", "no", "up"};
  torch::manual_seed(4);
  auto model = CreateModel(*config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->eval();
  torch::NoGradGuard no_grad;
  ModelInputs in;
  in.input_values = torch::randn({1, 1200});
  const torch::Tensor alone = (*model)->forward(in);
  EXPECT_EQ(alone.sizes(), (std::vector<int64_t>{1, 3}));
  // The projector's output averaged over the frames, then the classifier.
  ModelInputs base_in = in;
  const Weights w = Named(**model);
  auto base = CreateModel(*config, HeadKind::kNone);
  ASSERT_TRUE(base.ok());
  {
    // Copy the backbone into the base model (names without "wav2vec2.").
    for (auto& item : (*base)->named_parameters()) {
      item.value().copy_(w.at("wav2vec2." + item.key()));
    }
  }
  (*base)->eval();
  const torch::Tensor hidden = (*base)->forward(base_in);
  const torch::Tensor pooled =
      F::linear(hidden, w.at("projector.weight"), w.at("projector.bias"))
          .mean(1);
  ExpectClose(alone, F::linear(pooled, w.at("classifier.weight"),
                               w.at("classifier.bias")));
}

TEST(SpeechTest, CheckpointsRoundTripInBothWeightNormSpellings) {
  TempDir dir;
  const json cfg = TinyConfig("group", false, 8);
  auto config = ModelConfig::FromJson(cfg);
  ASSERT_TRUE(config.ok());
  torch::manual_seed(5);
  auto model = CreateModel(*config, HeadKind::kCtc);
  ASSERT_TRUE(model.ok());
  (*model)->eval();
  ASSERT_TRUE(MakeDirs(dir.path() + "/saved").ok());
  const absl::Status saved_ok = SaveModel(**model, dir.path() + "/saved");
  ASSERT_TRUE(saved_ok.ok()) << saved_ok;
  auto written = ReadFile(dir.path() + "/saved/config.json");
  ASSERT_TRUE(written.ok());
  const json saved = json::parse(*written);
  EXPECT_EQ(saved["architectures"], json::array({"Wav2Vec2ForCTC"}));
  EXPECT_EQ(saved["model_type"], "wav2vec2");
  EXPECT_EQ(saved["conv_kernel"], json::array({10, 4, 3}));
  EXPECT_EQ(saved["feat_extract_norm"], "group");

  // The same tensors as a newer torch writes them, plus the tensors of a
  // pre-training checkpoint, which loading skips.
  const Weights w = Named(**model);
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    keep.push_back(t.contiguous());
    views.push_back({name, "F32", t.sizes().vec(), keep.back().data_ptr(),
                     static_cast<size_t>(t.numel()) * sizeof(float)});
  };
  for (const auto& [name, t] : w) {
    std::string n = name;
    if (absl::EndsWith(n, "pos_conv_embed.conv.weight_g")) {
      n = absl::StrReplaceAll(
          n, {{"weight_g", "parametrizations.weight.original0"}});
    } else if (absl::EndsWith(n, "pos_conv_embed.conv.weight_v")) {
      n = absl::StrReplaceAll(
          n, {{"weight_v", "parametrizations.weight.original1"}});
    }
    add(n, t);
  }
  add("quantizer.codevectors", torch::randn({1, 4, 8}));
  add("project_q.weight", torch::randn({4, 8}));
  add("project_hid.weight", torch::randn({4, 16}));
  const std::string other = dir.path() + "/newer";
  ASSERT_TRUE(MakeDirs(other).ok());
  ASSERT_TRUE(WriteFileAtomic(other + "/config.json", cfg.dump()).ok());
  ASSERT_TRUE(
      WriteSafetensors(other + "/model.safetensors", views, {{"format", "pt"}})
          .ok());
  torch::manual_seed(6);
  const torch::Tensor values = torch::randn({1, 900});
  ModelInputs in;
  in.input_values = values;
  torch::NoGradGuard no_grad;
  const torch::Tensor original = (*model)->forward(in);
  for (const std::string& d : {dir.path() + "/saved", other}) {
    auto loaded = LoadModel(d, HeadKind::kCtc, {}, [](const std::string&) {});
    ASSERT_TRUE(loaded.ok()) << d << ": " << loaded.status();
    (*loaded)->eval();
    ExpectClose((*loaded)->forward(in), original, 1e-6);
  }
}

TEST(SpeechTest, SpecAugmentMasksOnlyWhileTraining) {
  json cfg = TinyConfig("group", false, 8);
  cfg["mask_time_prob"] = 0.5;
  auto config = ModelConfig::FromJson(cfg);
  ASSERT_TRUE(config.ok());
  torch::manual_seed(7);
  auto model = CreateModel(*config, HeadKind::kCtc);
  ASSERT_TRUE(model.ok());
  ModelInputs in;
  in.input_values = torch::randn({2, 1600});
  torch::NoGradGuard no_grad;
  (*model)->eval();
  const torch::Tensor a = (*model)->forward(in);
  EXPECT_TRUE(torch::equal((*model)->forward(in), a));
  (*model)->train();
  EXPECT_GT(((*model)->forward(in) - a).abs().max().item<double>(), 1e-3);
  // With masking off, training mode (dropouts 0 here) is the same function.
  cfg["apply_spec_augment"] = false;
  auto plain = ModelConfig::FromJson(cfg);
  ASSERT_TRUE(plain.ok());
  torch::manual_seed(7);
  auto same = CreateModel(*plain, HeadKind::kCtc);
  ASSERT_TRUE(same.ok());
  (*same)->train();
  ExpectClose((*same)->forward(in), a, 1e-6);
}

TEST(SpeechTest, ConfigErrorsNameTheKey) {
  json bad = TinyConfig("group", false, 8);
  bad["feat_extract_norm"] = "batch";
  EXPECT_TRUE(absl::StrContains(ModelConfig::FromJson(bad).status().message(),
                                "feat_extract_norm"));
  bad = TinyConfig("group", false, 8);
  bad["conv_stride"] = {5, 2};
  EXPECT_TRUE(absl::StrContains(ModelConfig::FromJson(bad).status().message(),
                                "conv_dim"));
  bad = TinyConfig("group", false, 8);
  bad["num_conv_pos_embedding_groups"] = 3;
  EXPECT_TRUE(absl::StrContains(ModelConfig::FromJson(bad).status().message(),
                                "num_conv_pos_embedding_groups"));
  bad = TinyConfig("group", false, 8);
  bad["mask_time_prob"] = 1.5;
  EXPECT_TRUE(absl::StrContains(ModelConfig::FromJson(bad).status().message(),
                                "mask_time_prob"));
  auto config = ModelConfig::FromJson(TinyConfig("group", false, 8));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(CreateModel(*config, HeadKind::kCausalLm).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SpeechTest, ThePresetHearsItsInput) {
  auto preset = FindPreset("preset:wav2vec2-tiny");
  ASSERT_TRUE(preset.ok());
  ModelConfig config = preset->config;
  config.id2label = {"a", "b"};
  torch::manual_seed(8);
  auto model = CreateModel(config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->eval();
  torch::NoGradGuard no_grad;
  ModelInputs a, b;
  a.input_values = torch::randn({1, 12000});
  b.input_values = torch::sin(torch::arange(12000) * 0.05).unsqueeze(0);
  const torch::Tensor ya = (*model)->forward(a), yb = (*model)->forward(b);
  std::printf("logits %s vs %s\n", c10::str(ya).c_str(), c10::str(yb).c_str());
  EXPECT_GT((ya - yb).abs().max().item<double>(), 1e-3);
}

// Two backward passes over the same padded batch give the same gradients
// bit for bit (exact resume depends on it).
TEST(SpeechTest, GradientsAreRepeatable) {
  auto preset = FindPreset("preset:wav2vec2-tiny");
  ASSERT_TRUE(preset.ok());
  ModelConfig config = preset->config;
  config.id2label = {"a", "b", "c"};
  torch::manual_seed(3);
  auto model = CreateModel(config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->train();
  ModelInputs in;
  in.input_values = torch::randn({4, 16000});
  in.attention_mask = torch::ones({4, 16000}, torch::kLong);
  in.attention_mask[1].slice(0, 9000).fill_(0);
  in.attention_mask[3].slice(0, 5000).fill_(0);
  in.input_values = in.input_values * in.attention_mask;
  const torch::Tensor labels = torch::tensor({0, 1, 2, 1}, torch::kLong);
  std::vector<std::map<std::string, torch::Tensor>> grads(3);
  for (auto& g : grads) {
    torch::manual_seed(4);  // the same SpecAugment spans every pass
    for (auto& p : (*model)->parameters()) p.mutable_grad() = torch::Tensor();
    F::cross_entropy((*model)->forward(in), labels).backward();
    for (const auto& item : (*model)->named_parameters()) {
      g[item.key()] = item.value().grad().clone();
    }
  }
  for (const auto& [name, g] : grads[0]) {
    for (size_t i = 1; i < grads.size(); ++i) {
      EXPECT_TRUE(torch::equal(g, grads[i].at(name)))
          << name << " differs in pass " << i << " by "
          << (g - grads[i].at(name)).abs().max().item<double>();
    }
  }
}

}  // namespace
}  // namespace lathe
