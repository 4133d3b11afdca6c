// GPT-2 and the Llama family against functional references written from the
// Hugging Face modelling code: each test writes a model directory in the
// published layout (config.json keys, tensor names, shapes and dtypes),
// loads it with LoadModel and compares the forward output with plain torch
// ops applied to the tensors by name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "worker/models/model.h"
#include "worker/models/model_config.h"

namespace lathe {
namespace {

using json = nlohmann::json;
using Weights = std::map<std::string, torch::Tensor>;

constexpr double kTol = 1e-5;

std::string NewDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("lathe_decoders_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Writes config.json and model.safetensors; `bf16` stores every tensor as
// BF16 (as Llama checkpoints ship).
void WriteModelDir(const std::string& dir, const json& config,
                   const Weights& weights, bool bf16 = false) {
  std::ofstream(dir + "/config.json") << config.dump(2);
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  for (const auto& [name, t] : weights) {
    torch::Tensor c =
        t.to(bf16 ? torch::kBFloat16 : torch::kFloat32).contiguous();
    keep.push_back(c);
    TensorView v;
    v.name = name;
    v.dtype = bf16 ? "BF16" : "F32";
    v.shape = c.sizes().vec();
    v.data = c.data_ptr();
    v.nbytes = static_cast<size_t>(c.numel()) * c.element_size();
    views.push_back(v);
  }
  ASSERT_TRUE(
      WriteSafetensors(dir + "/model.safetensors", views, {{"format", "pt"}})
          .ok());
}

torch::Tensor Param(TaskModelImpl& m, const std::string& name) {
  auto params = m.named_parameters(/*recurse=*/true);
  const torch::Tensor* t = params.find(name);
  EXPECT_NE(t, nullptr) << name;
  return t == nullptr ? torch::Tensor() : t->detach();
}

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// Two rows of 6 tokens; the second row is right-padded by 2.
struct Batch {
  torch::Tensor ids;
  torch::Tensor mask;
};
Batch MakeBatch(int64_t vocab) {
  torch::manual_seed(7);
  Batch b;
  b.ids = torch::randint(0, vocab, {2, 6}, torch::kLong);
  b.mask = torch::ones({2, 6}, torch::kLong);
  b.mask[1][4] = 0;
  b.mask[1][5] = 0;
  return b;
}

ModelInputs Inputs(const Batch& b) {
  ModelInputs in;
  in.input_ids = b.ids;
  in.attention_mask = b.mask;
  return in;
}

// Query i may attend key j: causal, not padding, inside the window.
torch::Tensor Allowed(const torch::Tensor& mask, int64_t t, int64_t window) {
  torch::Tensor i = torch::arange(t).view({t, 1});
  torch::Tensor j = torch::arange(t).view({1, t});
  torch::Tensor ok = j <= i;
  if (window > 0) ok = ok.logical_and((i - j) < window);
  return ok.view({1, 1, t, t})
      .logical_and(mask.to(torch::kBool).view({-1, 1, 1, t}));
}

torch::Tensor MaskedSoftmax(const torch::Tensor& w, const torch::Tensor& ok) {
  return torch::softmax(
      torch::where(ok, w,
                   torch::full({}, std::numeric_limits<float>::lowest())),
      -1);
}

// ---------------------------------------------------------------- GPT-2

struct Gpt2Dims {
  int64_t vocab = 50, positions = 32, embd = 16, layers = 2, heads = 4;
};

json Gpt2Config(const Gpt2Dims& d) {
  return json{
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"vocab_size", d.vocab},
      {"n_positions", d.positions},
      {"n_ctx", d.positions},
      {"n_embd", d.embd},
      {"n_layer", d.layers},
      {"n_head", d.heads},
      {"n_inner", nullptr},
      {"activation_function", "gelu_new"},
      {"resid_pdrop", 0.1},
      {"embd_pdrop", 0.1},
      {"attn_pdrop", 0.1},
      {"layer_norm_epsilon", 1e-5},
      {"initializer_range", 0.02},
      {"bos_token_id", 49},
      {"eos_token_id", 49},
      {"summary_type", "cls_index"},
      {"task_specific_params", {{"text-generation", {{"do_sample", true}}}}}};
}

// Tensors by their names inside GPT2Model (no "transformer." prefix).
Weights Gpt2Weights(const Gpt2Dims& d) {
  torch::manual_seed(1);
  const int64_t h = d.embd;
  Weights w;
  auto rnd = [](std::vector<int64_t> s, double scale) {
    return torch::randn(s) * scale;
  };
  w["wte.weight"] = rnd({d.vocab, h}, 0.3);
  w["wpe.weight"] = rnd({d.positions, h}, 0.1);
  for (int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    w[p + "ln_1.weight"] = 1 + rnd({h}, 0.1);
    w[p + "ln_1.bias"] = rnd({h}, 0.1);
    w[p + "attn.c_attn.weight"] = rnd({h, 3 * h}, 0.3);
    w[p + "attn.c_attn.bias"] = rnd({3 * h}, 0.1);
    w[p + "attn.c_proj.weight"] = rnd({h, h}, 0.3);
    w[p + "attn.c_proj.bias"] = rnd({h}, 0.1);
    w[p + "ln_2.weight"] = 1 + rnd({h}, 0.1);
    w[p + "ln_2.bias"] = rnd({h}, 0.1);
    w[p + "mlp.c_fc.weight"] = rnd({h, 4 * h}, 0.3);
    w[p + "mlp.c_fc.bias"] = rnd({4 * h}, 0.1);
    w[p + "mlp.c_proj.weight"] = rnd({4 * h, h}, 0.3);
    w[p + "mlp.c_proj.bias"] = rnd({h}, 0.1);
  }
  w["ln_f.weight"] = 1 + rnd({h}, 0.1);
  w["ln_f.bias"] = rnd({h}, 0.1);
  return w;
}

Weights WithPrefix(const Weights& w, const std::string& prefix) {
  Weights out;
  for (const auto& [k, v] : w) out[prefix + k] = v;
  return out;
}

torch::Tensor GeluNew(const torch::Tensor& x) {
  return 0.5 * x *
         (1.0 + torch::tanh(std::sqrt(2.0 / 3.14159265358979323846) *
                            (x + 0.044715 * torch::pow(x, 3.0))));
}

// GPT2Model.forward, eager attention, no dropout.
torch::Tensor Gpt2Reference(Weights w, const Gpt2Dims& d, const Batch& in) {
  const int64_t b = in.ids.size(0), t = in.ids.size(1), h = d.embd;
  const int64_t hd = h / d.heads;
  auto ln = [&](const torch::Tensor& x, const std::string& n) {
    return torch::layer_norm(x, {h}, w[n + ".weight"], w[n + ".bias"], 1e-5);
  };
  auto conv = [&](const torch::Tensor& x, const std::string& n) {
    return torch::matmul(x, w[n + ".weight"]) + w[n + ".bias"];
  };
  torch::Tensor x =
      w["wte.weight"].index_select(0, in.ids.flatten()).view({b, t, h}) +
      w["wpe.weight"].narrow(0, 0, t);
  torch::Tensor ok = Allowed(in.mask, t, 0);
  for (int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    std::vector<torch::Tensor> qkv =
        conv(ln(x, p + "ln_1"), p + "attn.c_attn").chunk(3, -1);
    auto heads = [&](const torch::Tensor& y) {
      return y.reshape({b, t, d.heads, hd}).permute({0, 2, 1, 3});
    };
    torch::Tensor att =
        torch::matmul(heads(qkv[0]), heads(qkv[1]).transpose(-1, -2)) /
        std::sqrt(static_cast<double>(hd));
    torch::Tensor a = torch::matmul(MaskedSoftmax(att, ok), heads(qkv[2]))
                          .permute({0, 2, 1, 3})
                          .reshape({b, t, h});
    x = x + conv(a, p + "attn.c_proj");
    x = x + conv(GeluNew(conv(ln(x, p + "ln_2"), p + "mlp.c_fc")),
                 p + "mlp.c_proj");
  }
  return ln(x, "ln_f");
}

// Row 0 is unpadded; row 1 is padded after position 3.
torch::Tensor LastTokens(const torch::Tensor& hidden) {
  torch::Tensor rows = hidden.select(1, 5).clone();
  rows[1] = hidden[1][3];
  return rows;
}

TEST(DecodersTest, Gpt2MatchesReference) {
  Gpt2Dims d;
  const Weights w = Gpt2Weights(d);
  const std::string dir = NewDir("gpt2");
  // GPT2LMHeadModel saves the tied lm_head.weight not at all.
  WriteModelDir(dir, Gpt2Config(d), WithPrefix(w, "transformer."));
  const Batch batch = MakeBatch(d.vocab);
  const torch::Tensor ref = Gpt2Reference(w, d, batch);
  torch::NoGradGuard no_grad;

  auto base = LoadModel(dir, HeadKind::kNone, {}, nullptr);
  ASSERT_TRUE(base.ok()) << base.status();
  (*base)->eval();
  EXPECT_EQ((*base)->architecture_class(), "GPT2Model");
  EXPECT_EQ((*base)->base_prefix(), "transformer");
  EXPECT_LT(MaxDiff((*base)->forward(Inputs(batch)), ref), kTol);

  auto lm = LoadModel(dir, HeadKind::kCausalLm, {}, nullptr);
  ASSERT_TRUE(lm.ok()) << lm.status();
  (*lm)->eval();
  EXPECT_EQ((*lm)->architecture_class(), "GPT2LMHeadModel");
  EXPECT_LT(MaxDiff((*lm)->forward(Inputs(batch)),
                    torch::matmul(ref, w.at("wte.weight").t())),
            kTol);
  // The tie is one tensor, not a copy.
  EXPECT_EQ(Param(**lm, "lm_head.weight").data_ptr(),
            Param(**lm, "transformer.wte.weight").data_ptr());

  std::vector<std::string> logged;
  auto cls = LoadModel(dir, HeadKind::kSequenceClassification, {"a", "b", "c"},
                       [&](const std::string& m) { logged.push_back(m); });
  ASSERT_TRUE(cls.ok()) << cls.status();
  (*cls)->eval();
  EXPECT_EQ((*cls)->architecture_class(), "GPT2ForSequenceClassification");
  EXPECT_EQ((*cls)->head_parameter_names(),
            std::vector<std::string>{"score.weight"});
  const torch::Tensor score = Param(**cls, "score.weight");
  EXPECT_EQ(score.sizes(), torch::IntArrayRef({3, d.embd}));
  EXPECT_LT(MaxDiff((*cls)->forward(Inputs(batch)),
                    torch::matmul(LastTokens(ref), score.t())),
            kTol);
  ASSERT_FALSE(logged.empty());  // The fresh score head is reported.

  auto tok =
      LoadModel(dir, HeadKind::kTokenClassification, {"x", "y"}, nullptr);
  ASSERT_TRUE(tok.ok()) << tok.status();
  (*tok)->eval();
  EXPECT_EQ((*tok)->architecture_class(), "GPT2ForTokenClassification");
  EXPECT_LT(MaxDiff((*tok)->forward(Inputs(batch)),
                    torch::matmul(ref, Param(**tok, "classifier.weight").t()) +
                        Param(**tok, "classifier.bias")),
            kTol);

  auto qa = LoadModel(dir, HeadKind::kQuestionAnswering, {}, nullptr);
  ASSERT_TRUE(qa.ok()) << qa.status();
  (*qa)->eval();
  EXPECT_LT(MaxDiff((*qa)->forward(Inputs(batch)),
                    torch::matmul(ref, Param(**qa, "qa_outputs.weight").t()) +
                        Param(**qa, "qa_outputs.bias")),
            kTol);
}

TEST(DecodersTest, Gpt2WithoutPrefixAndWithOldMaskBuffers) {
  Gpt2Dims d;
  const Weights w = Gpt2Weights(d);
  Weights saved = w;  // As GPT2Model saves: no prefix.
  for (int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".attn.";
    saved[p + "bias"] = torch::ones({d.positions, d.positions})
                            .tril()
                            .view({1, 1, d.positions, d.positions});
    saved[p + "masked_bias"] = torch::full({}, -1e4);
  }
  json config = Gpt2Config(d);
  config["architectures"] = {"GPT2Model"};
  const std::string dir = NewDir("gpt2_noprefix");
  WriteModelDir(dir, config, saved);
  const Batch batch = MakeBatch(d.vocab);
  auto lm = LoadModel(dir, HeadKind::kCausalLm, {}, nullptr);
  ASSERT_TRUE(lm.ok()) << lm.status();
  (*lm)->eval();
  torch::NoGradGuard no_grad;
  EXPECT_LT(MaxDiff((*lm)->forward(Inputs(batch)),
                    torch::matmul(Gpt2Reference(w, d, batch),
                                  w.at("wte.weight").t())),
            kTol);
}

// ---------------------------------------------------------- Llama family

struct LlamaDims {
  std::string type = "llama";
  int64_t vocab = 50, hidden = 16, inter = 24, layers = 2, heads = 4,
          kv_heads = 2;
  bool qkv_bias = false;  // Qwen2
  bool tie = false;
  double theta = 10000.0;
  double eps = 1e-6;
  double rope_linear_factor = 1.0;
  // Llama 3.1 scaling with factor 8, low 1, high 4 and an original context
  // of 16 positions, so that head_dim 4's two frequencies fall in the
  // interpolated band and the slowed band.
  bool rope_llama3 = false;
  int64_t window = 0;  // Mistral sliding window
};

json LlamaConfig(const LlamaDims& d) {
  json j{{"model_type", d.type},
         {"vocab_size", d.vocab},
         {"hidden_size", d.hidden},
         {"intermediate_size", d.inter},
         {"num_hidden_layers", d.layers},
         {"num_attention_heads", d.heads},
         {"num_key_value_heads", d.kv_heads},
         {"hidden_act", "silu"},
         {"max_position_embeddings", 64},
         {"rms_norm_eps", d.eps},
         {"rope_theta", d.theta},
         {"tie_word_embeddings", d.tie},
         {"bos_token_id", 1},
         {"eos_token_id", 2},
         {"torch_dtype", "bfloat16"},
         {"use_cache", true}};
  if (d.type == "llama") {
    j["architectures"] = {"LlamaForCausalLM"};
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  } else if (d.type == "qwen2") {
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["use_sliding_window"] = false;
    j["sliding_window"] = 4096;
    j["max_window_layers"] = 21;
  } else {
    j["architectures"] = {"MistralForCausalLM"};
    j["sliding_window"] = d.window > 0 ? json(d.window) : json(nullptr);
  }
  if (d.rope_llama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 16}};
  }
  if (d.rope_linear_factor != 1.0) {
    j["rope_scaling"] = {{"type", "linear"}, {"factor", d.rope_linear_factor}};
  }
  return j;
}

// Tensors by their names inside LlamaModel (no "model." prefix); lm_head
// separately.
Weights LlamaWeights(const LlamaDims& d) {
  torch::manual_seed(2);
  const int64_t h = d.hidden, hd = d.hidden / d.heads;
  Weights w;
  auto rnd = [](std::vector<int64_t> s, double scale) {
    return torch::randn(s) * scale;
  };
  w["embed_tokens.weight"] = rnd({d.vocab, h}, 0.5);
  for (int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    w[p + "input_layernorm.weight"] = 1 + rnd({h}, 0.1);
    w[p + "self_attn.q_proj.weight"] = rnd({d.heads * hd, h}, 0.3);
    w[p + "self_attn.k_proj.weight"] = rnd({d.kv_heads * hd, h}, 0.3);
    w[p + "self_attn.v_proj.weight"] = rnd({d.kv_heads * hd, h}, 0.3);
    if (d.qkv_bias) {
      w[p + "self_attn.q_proj.bias"] = rnd({d.heads * hd}, 0.2);
      w[p + "self_attn.k_proj.bias"] = rnd({d.kv_heads * hd}, 0.2);
      w[p + "self_attn.v_proj.bias"] = rnd({d.kv_heads * hd}, 0.2);
    }
    w[p + "self_attn.o_proj.weight"] = rnd({h, d.heads * hd}, 0.3);
    w[p + "post_attention_layernorm.weight"] = 1 + rnd({h}, 0.1);
    w[p + "mlp.gate_proj.weight"] = rnd({d.inter, h}, 0.3);
    w[p + "mlp.up_proj.weight"] = rnd({d.inter, h}, 0.3);
    w[p + "mlp.down_proj.weight"] = rnd({h, d.inter}, 0.3);
  }
  w["norm.weight"] = 1 + rnd({h}, 0.1);
  return w;
}

// LlamaModel.forward (eager attention, position ids 0..T-1).
torch::Tensor LlamaReference(Weights w, const LlamaDims& d, const Batch& in) {
  const int64_t b = in.ids.size(0), t = in.ids.size(1), h = d.hidden;
  const int64_t hd = h / d.heads;
  auto rms = [&](const torch::Tensor& x, const std::string& n) {
    return w[n] * (x * torch::rsqrt(x.pow(2).mean(-1, true) + d.eps));
  };
  auto lin = [&](const torch::Tensor& x, const std::string& n) {
    torch::Tensor y = torch::matmul(x, w[n + ".weight"].t());
    if (w.count(n + ".bias")) y = y + w[n + ".bias"];
    return y;
  };
  torch::Tensor inv_freq =
      1.0 / torch::pow(d.theta, torch::arange(0, hd, 2).to(torch::kFloat) /
                                    static_cast<double>(hd));
  if (d.rope_llama3) {
    auto f = inv_freq.accessor<float, 1>();
    for (int64_t i = 0; i < inv_freq.size(0); ++i) {
      const double wavelen = 2 * 3.14159265358979323846 / f[i];
      if (wavelen > 16.0 / 1.0) {
        f[i] = f[i] / 8.0;
      } else if (wavelen >= 16.0 / 4.0) {
        const double smooth = (16.0 / wavelen - 1.0) / (4.0 - 1.0);
        f[i] = (1 - smooth) * f[i] / 8.0 + smooth * f[i];
      }
    }
  }
  torch::Tensor pos = torch::arange(t).to(torch::kFloat) / d.rope_linear_factor;
  torch::Tensor freqs = pos.view({t, 1}) * inv_freq.view({1, -1});
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  torch::Tensor cos = emb.cos(), sin = emb.sin();
  auto rope = [&](const torch::Tensor& x) {
    torch::Tensor x1 = x.slice(-1, 0, hd / 2), x2 = x.slice(-1, hd / 2);
    return x * cos + torch::cat({-x2, x1}, -1) * sin;
  };
  torch::Tensor x = w["embed_tokens.weight"]
                        .index_select(0, in.ids.flatten())
                        .view({b, t, h});
  torch::Tensor ok = Allowed(in.mask, t, d.window);
  for (int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    torch::Tensor y = rms(x, p + "input_layernorm.weight");
    auto heads = [&](const torch::Tensor& z, int64_t n) {
      return z.reshape({b, t, n, hd}).permute({0, 2, 1, 3});
    };
    torch::Tensor q = rope(heads(lin(y, p + "self_attn.q_proj"), d.heads));
    torch::Tensor k = rope(heads(lin(y, p + "self_attn.k_proj"), d.kv_heads));
    torch::Tensor v = heads(lin(y, p + "self_attn.v_proj"), d.kv_heads);
    k = k.repeat_interleave(d.heads / d.kv_heads, 1);
    v = v.repeat_interleave(d.heads / d.kv_heads, 1);
    torch::Tensor att =
        torch::matmul(q, k.transpose(-1, -2)) * std::pow(hd, -0.5);
    torch::Tensor a = torch::matmul(MaskedSoftmax(att, ok), v)
                          .permute({0, 2, 1, 3})
                          .reshape({b, t, h});
    x = x + lin(a, p + "self_attn.o_proj");
    y = rms(x, p + "post_attention_layernorm.weight");
    x = x + lin(torch::silu(lin(y, p + "mlp.gate_proj")) *
                    lin(y, p + "mlp.up_proj"),
                p + "mlp.down_proj");
  }
  return rms(x, "norm.weight");
}

// The values as a BF16 checkpoint holds them.
Weights RoundedToBf16(const Weights& w) {
  Weights out;
  for (const auto& [k, v] : w) {
    out[k] = v.to(torch::kBFloat16).to(torch::kFloat32);
  }
  return out;
}

TEST(DecodersTest, LlamaBf16WithGqaMatchesReference) {
  LlamaDims d;  // 4 heads, 2 KV heads
  const Weights w = RoundedToBf16(LlamaWeights(d));
  torch::manual_seed(3);
  const torch::Tensor lm_head = (torch::randn({d.vocab, d.hidden}) * 0.3)
                                    .to(torch::kBFloat16)
                                    .to(torch::kFloat32);
  Weights saved = WithPrefix(w, "model.");
  saved["lm_head.weight"] = lm_head;
  const std::string dir = NewDir("llama");
  WriteModelDir(dir, LlamaConfig(d), saved, /*bf16=*/true);
  const Batch batch = MakeBatch(d.vocab);
  const torch::Tensor ref = LlamaReference(w, d, batch);
  torch::NoGradGuard no_grad;

  auto base = LoadModel(dir, HeadKind::kNone, {}, nullptr);
  ASSERT_TRUE(base.ok()) << base.status();
  (*base)->eval();
  EXPECT_EQ((*base)->architecture_class(), "LlamaModel");
  EXPECT_EQ((*base)->base_prefix(), "model");
  EXPECT_LT(MaxDiff((*base)->forward(Inputs(batch)), ref), kTol);

  auto lm = LoadModel(dir, HeadKind::kCausalLm, {}, nullptr);
  ASSERT_TRUE(lm.ok()) << lm.status();
  (*lm)->eval();
  EXPECT_EQ((*lm)->architecture_class(), "LlamaForCausalLM");
  EXPECT_TRUE((*lm)->tied_parameters().empty());
  EXPECT_LT(
      MaxDiff((*lm)->forward(Inputs(batch)), torch::matmul(ref, lm_head.t())),
      kTol);

  auto cls = LoadModel(dir, HeadKind::kSequenceClassification, {"neg", "pos"},
                       nullptr);
  ASSERT_TRUE(cls.ok()) << cls.status();
  (*cls)->eval();
  EXPECT_EQ((*cls)->architecture_class(), "LlamaForSequenceClassification");
  EXPECT_LT(
      MaxDiff((*cls)->forward(Inputs(batch)),
              torch::matmul(LastTokens(ref), Param(**cls, "score.weight").t())),
      kTol);

  // Hugging Face's LlamaForTokenClassification names its head "score" (with
  // a bias).
  auto tok =
      LoadModel(dir, HeadKind::kTokenClassification, {"x", "y", "z"}, nullptr);
  ASSERT_TRUE(tok.ok()) << tok.status();
  (*tok)->eval();
  EXPECT_EQ((*tok)->architecture_class(), "LlamaForTokenClassification");
  EXPECT_LT(MaxDiff((*tok)->forward(Inputs(batch)),
                    torch::matmul(ref, Param(**tok, "score.weight").t()) +
                        Param(**tok, "score.bias")),
            kTol);
}

TEST(DecodersTest, LlamaLinearRopeScalingMatchesReference) {
  LlamaDims d;
  d.rope_linear_factor = 2.0;
  d.theta = 500000.0;
  const Weights w = LlamaWeights(d);
  const std::string dir = NewDir("llama_linear");
  WriteModelDir(dir, LlamaConfig(d), WithPrefix(w, "model."));
  const Batch batch = MakeBatch(d.vocab);
  auto base = LoadModel(dir, HeadKind::kNone, {}, nullptr);
  ASSERT_TRUE(base.ok()) << base.status();
  torch::NoGradGuard no_grad;
  EXPECT_LT(
      MaxDiff((*base)->forward(Inputs(batch)), LlamaReference(w, d, batch)),
      kTol);
}

TEST(DecodersTest, LlamaLlama3RopeScalingMatchesReference) {
  LlamaDims d;
  d.rope_llama3 = true;
  const Weights w = LlamaWeights(d);
  const std::string dir = NewDir("llama3");
  WriteModelDir(dir, LlamaConfig(d), WithPrefix(w, "model."));
  const Batch batch = MakeBatch(d.vocab);
  auto base = LoadModel(dir, HeadKind::kNone, {}, nullptr);
  ASSERT_TRUE(base.ok()) << base.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor out = (*base)->forward(Inputs(batch));
  EXPECT_LT(MaxDiff(out, LlamaReference(w, d, batch)), kTol);
  LlamaDims unscaled = d;
  unscaled.rope_llama3 = false;
  EXPECT_GT(MaxDiff(out, LlamaReference(w, unscaled, batch)), 1e-3);
}

TEST(DecodersTest, Qwen2TiedWithQkvBiasesMatchesReference) {
  LlamaDims d;
  d.type = "qwen2";
  d.qkv_bias = true;
  d.tie = true;
  d.theta = 1000000.0;
  const Weights w = LlamaWeights(d);
  const std::string dir = NewDir("qwen2");
  // Tied: the published checkpoint has no lm_head.weight.
  WriteModelDir(dir, LlamaConfig(d), WithPrefix(w, "model."));
  const Batch batch = MakeBatch(d.vocab);
  const torch::Tensor ref = LlamaReference(w, d, batch);
  auto lm = LoadModel(dir, HeadKind::kCausalLm, {}, nullptr);
  ASSERT_TRUE(lm.ok()) << lm.status();
  (*lm)->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ((*lm)->architecture_class(), "Qwen2ForCausalLM");
  EXPECT_EQ((*lm)->tied_parameters(),
            (std::vector<std::pair<std::string, std::string>>{
                {"lm_head.weight", "model.embed_tokens.weight"}}));
  EXPECT_TRUE((*lm)->head_parameter_names().empty());
  // o_proj has no bias in Qwen2.
  auto params = (*lm)->named_parameters();
  EXPECT_NE(params.find("model.layers.0.self_attn.q_proj.bias"), nullptr);
  EXPECT_EQ(params.find("model.layers.0.self_attn.o_proj.bias"), nullptr);
  EXPECT_LT(MaxDiff((*lm)->forward(Inputs(batch)),
                    torch::matmul(ref, w.at("embed_tokens.weight").t())),
            kTol);
}

TEST(DecodersTest, MistralSlidingWindowMatchesReference) {
  LlamaDims d;
  d.type = "mistral";
  d.window = 3;  // Shorter than the batch's 6 tokens, so it matters
  const Weights w = LlamaWeights(d);
  const std::string dir = NewDir("mistral");
  Weights saved = WithPrefix(w, "model.");
  torch::manual_seed(4);
  const torch::Tensor lm_head = torch::randn({d.vocab, d.hidden}) * 0.3;
  saved["lm_head.weight"] = lm_head;
  WriteModelDir(dir, LlamaConfig(d), saved);
  const Batch batch = MakeBatch(d.vocab);
  auto lm = LoadModel(dir, HeadKind::kCausalLm, {}, nullptr);
  ASSERT_TRUE(lm.ok()) << lm.status();
  (*lm)->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ((*lm)->architecture_class(), "MistralForCausalLM");
  const torch::Tensor logits = (*lm)->forward(Inputs(batch));
  EXPECT_LT(
      MaxDiff(logits, torch::matmul(LlamaReference(w, d, batch), lm_head.t())),
      kTol);
  LlamaDims full = d;
  full.window = 0;
  EXPECT_GT(MaxDiff(logits,
                    torch::matmul(LlamaReference(w, full, batch), lm_head.t())),
            1e-3);
}

// ------------------------------------------------------------ Round trips

json ReadJson(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

void ExpectRoundTrip(const std::string& name, const std::string& dir,
                     HeadKind head, const std::vector<std::string>& labels) {
  SCOPED_TRACE(name);
  auto first = LoadModel(dir, head, labels, nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string out = NewDir(name + "_saved");
  ASSERT_TRUE(SaveModel(**first, out).ok());
  auto second = LoadModel(out, head, labels, nullptr);
  ASSERT_TRUE(second.ok()) << second.status();
  auto a = (*first)->named_parameters();
  auto b = (*second)->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    const torch::Tensor* other = b.find(item.key());
    ASSERT_NE(other, nullptr) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), *other)) << item.key();
  }
  (*first)->eval();
  (*second)->eval();
  torch::NoGradGuard no_grad;
  const Batch batch = MakeBatch((*first)->config().vocab_size);
  EXPECT_TRUE(torch::equal((*first)->forward(Inputs(batch)),
                           (*second)->forward(Inputs(batch))));

  auto file = SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  for (const auto& [alias, source] : (*first)->tied_parameters()) {
    EXPECT_EQ((*file)->Find(alias), nullptr) << alias;
    EXPECT_NE((*file)->Find(source), nullptr) << source;
  }
  const json in = ReadJson(dir + "/config.json");
  const json saved = ReadJson(out + "/config.json");
  EXPECT_EQ(saved["architectures"],
            json::array({(*first)->architecture_class()}));
  for (const auto& [key, value] : in.items()) {
    if (key == "architectures" || key == "torch_dtype") continue;
    EXPECT_EQ(saved[key], value) << key;
  }
}

TEST(DecodersTest, RoundTripsKeepTensorsLogitsAndConfig) {
  {
    Gpt2Dims d;
    const std::string dir = NewDir("rt_gpt2");
    WriteModelDir(dir, Gpt2Config(d),
                  WithPrefix(Gpt2Weights(d), "transformer."));
    ExpectRoundTrip("rt_gpt2", dir, HeadKind::kCausalLm, {});
    ExpectRoundTrip("rt_gpt2_cls", dir, HeadKind::kSequenceClassification,
                    {"a", "b"});
  }
  {
    LlamaDims d;
    d.type = "qwen2";
    d.qkv_bias = true;
    d.tie = true;
    const std::string dir = NewDir("rt_qwen2");
    WriteModelDir(dir, LlamaConfig(d), WithPrefix(LlamaWeights(d), "model."));
    ExpectRoundTrip("rt_qwen2", dir, HeadKind::kCausalLm, {});
  }
  {
    LlamaDims d;
    d.theta = 500000.0;
    d.rope_linear_factor = 4.0;
    const std::string dir = NewDir("rt_llama");
    Weights saved = WithPrefix(LlamaWeights(d), "model.");
    saved["lm_head.weight"] = torch::randn({d.vocab, d.hidden});
    WriteModelDir(dir, LlamaConfig(d), saved, /*bf16=*/true);
    ExpectRoundTrip("rt_llama", dir, HeadKind::kCausalLm, {});
    ExpectRoundTrip("rt_llama_cls", dir, HeadKind::kSequenceClassification,
                    {"neg", "pos"});
    const json saved_config =
        ReadJson((std::filesystem::path(::testing::TempDir()) /
                  "lathe_decoders_rt_llama_saved" / "config.json")
                     .string());
    EXPECT_EQ(saved_config["rope_theta"], 500000.0);
    EXPECT_EQ(saved_config["tie_word_embeddings"], false);
    EXPECT_EQ(saved_config["model_type"], "llama");
  }
}

// -------------------------------------------------- Causality, init, errors

ModelConfig TinyConfig(const std::string& type) {
  json j = type == "gpt2" ? Gpt2Config(Gpt2Dims()) : LlamaConfig(LlamaDims());
  if (type != "gpt2") j["model_type"] = type;
  auto c = ModelConfig::FromJson(j);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(DecodersTest, LogitsDoNotSeeLaterTokens) {
  for (const std::string type : {"gpt2", "llama", "mistral"}) {
    SCOPED_TRACE(type);
    torch::manual_seed(5);
    auto m = CreateModel(TinyConfig(type), HeadKind::kCausalLm);
    ASSERT_TRUE(m.ok()) << m.status();
    (*m)->eval();
    torch::NoGradGuard no_grad;
    ModelInputs in;
    in.input_ids = torch::randint(0, 50, {1, 8}, torch::kLong);
    in.attention_mask = torch::ones({1, 8}, torch::kLong);
    const torch::Tensor before = (*m)->forward(in);
    ModelInputs changed = in;
    changed.input_ids = in.input_ids.clone();
    changed.input_ids.slice(1, 4) = (in.input_ids.slice(1, 4) + 1) % 50;
    const torch::Tensor after = (*m)->forward(changed);
    EXPECT_TRUE(torch::equal(before.slice(1, 0, 4), after.slice(1, 0, 4)));
    EXPECT_FALSE(torch::allclose(before.slice(1, 4), after.slice(1, 4)));
  }
}

TEST(DecodersTest, InitialisationFollowsHuggingFace) {
  Gpt2Dims d;
  d.embd = 64;
  d.layers = 4;
  json j = Gpt2Config(d);
  j["initializer_range"] = 0.05;
  auto c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  torch::manual_seed(6);
  auto g = CreateModel(*c, HeadKind::kCausalLm);
  ASSERT_TRUE(g.ok()) << g.status();
  auto std_of = [&](TaskModelImpl& m, const std::string& n) {
    return Param(m, n).std().item<double>();
  };
  EXPECT_NEAR(std_of(**g, "transformer.h.0.attn.c_attn.weight"), 0.05, 0.004);
  // Residual projections: 0.05 / sqrt(2 * 4).
  EXPECT_NEAR(std_of(**g, "transformer.h.1.mlp.c_proj.weight"),
              0.05 / std::sqrt(8.0), 0.002);
  EXPECT_NEAR(std_of(**g, "transformer.h.1.attn.c_proj.weight"),
              0.05 / std::sqrt(8.0), 0.003);
  EXPECT_TRUE(
      torch::equal(Param(**g, "transformer.ln_f.weight"), torch::ones({64})));
  EXPECT_TRUE(torch::equal(Param(**g, "transformer.h.0.attn.c_attn.bias"),
                           torch::zeros({192})));

  ModelConfig l = TinyConfig("llama");
  l.pad_token_id = 0;
  auto m = CreateModel(l, HeadKind::kSequenceClassification);
  // Needs labels.
  EXPECT_FALSE(m.ok());
  l.id2label = {"a", "b"};
  m = CreateModel(l, HeadKind::kSequenceClassification);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(torch::equal(Param(**m, "model.norm.weight"),
                           torch::ones({l.hidden_size})));
  EXPECT_TRUE(torch::equal(Param(**m, "model.embed_tokens.weight")[0],
                           torch::zeros({l.hidden_size})));
  // Only the model's own tensors: no rotary buffer.
  EXPECT_TRUE((*m)->named_buffers().is_empty());
}

TEST(DecodersTest, TrainingForwardAndBackward) {
  for (const std::string type : {"gpt2", "qwen2"}) {
    SCOPED_TRACE(type);
    ModelConfig c = TinyConfig(type);
    c.pad_token_id = 0;
    c.tie_word_embeddings = true;
    torch::manual_seed(8);
    auto m = CreateModel(c, HeadKind::kCausalLm);
    ASSERT_TRUE(m.ok()) << m.status();
    (*m)->train();
    Batch batch = MakeBatch(c.vocab_size);
    batch.ids[1][4] = 0;
    batch.ids[1][5] = 0;
    torch::Tensor logits = (*m)->forward(Inputs(batch));
    logits.pow(2).mean().backward();
    const std::string embedding = (*m)->tied_parameters().at(0).second;
    auto params = (*m)->named_parameters();
    torch::Tensor grad = params[embedding].grad();
    ASSERT_TRUE(grad.defined());
    EXPECT_TRUE(torch::isfinite(grad).all().item<bool>());
    EXPECT_GT(grad.abs().sum().item<double>(), 0.0);
    if (type == "qwen2") {
      // Qwen2's q/k/v biases train.
      EXPECT_TRUE(
          params["model.layers.0.self_attn.q_proj.bias"].grad().defined());
    }
  }
}

TEST(DecodersTest, HeadNamesAndPrefixesFollowTheClasses) {
  ModelConfig llama = TinyConfig("llama");
  auto qa = CreateModel(llama, HeadKind::kQuestionAnswering);
  ASSERT_TRUE(qa.ok()) << qa.status();
  // LlamaForQuestionAnswering keeps its backbone under "transformer".
  EXPECT_EQ((*qa)->base_prefix(), "transformer");
  EXPECT_EQ((*qa)->architecture_class(), "LlamaForQuestionAnswering");
  EXPECT_NE((*qa)->named_parameters().find("transformer.norm.weight"), nullptr);
  ModelConfig mistral = TinyConfig("mistral");
  auto mqa = CreateModel(mistral, HeadKind::kQuestionAnswering);
  ASSERT_TRUE(mqa.ok()) << mqa.status();
  EXPECT_EQ((*mqa)->base_prefix(), "model");
  EXPECT_EQ((*mqa)->architecture_class(), "MistralForQuestionAnswering");
  auto mlm = CreateModel(TinyConfig("gpt2"), HeadKind::kMaskedLm);
  EXPECT_EQ(mlm.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DecodersTest, ConfigDefaultsAndErrors) {
  // Missing keys take the classes' defaults.
  auto g = ModelConfig::FromJson(json{{"model_type", "gpt2"}, {"n_embd", 96}});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->intermediate_size, 384);
  EXPECT_EQ(g->vocab_size, 50257);
  EXPECT_EQ(g->max_position_embeddings, 1024);
  EXPECT_TRUE(g->tie_word_embeddings);
  EXPECT_EQ(g->hidden_act, "gelu_new");
  EXPECT_DOUBLE_EQ(g->layer_norm_eps, 1e-5);
  auto l = ModelConfig::FromJson(json{{"model_type", "llama"},
                                      {"hidden_size", 64},
                                      {"num_attention_heads", 8}});
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->num_key_value_heads, 8);
  EXPECT_FALSE(l->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(l->layer_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(l->rope_theta, 10000.0);
  auto m = ModelConfig::FromJson(json{{"model_type", "mistral"}});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->num_key_value_heads, 8);
  EXPECT_EQ(m->intermediate_size, 14336);
  auto q = ModelConfig::FromJson(json{{"model_type", "qwen2"}});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->attention_bias);
  EXPECT_EQ(q->vocab_size, 151936);
  // Llama 3 lists several eos ids; the first is kept and the list survives.
  json l3 = LlamaConfig(LlamaDims());
  l3["eos_token_id"] = {2, 3};
  l3["rope_scaling"] = {{"rope_type", "llama3"},
                        {"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192}};
  auto l3c = ModelConfig::FromJson(l3);
  ASSERT_TRUE(l3c.ok()) << l3c.status();
  EXPECT_EQ(l3c->eos_token_id.value_or(-1), 2);
  EXPECT_EQ(l3c->ToJson("LlamaForCausalLM")["eos_token_id"], json({2, 3}));
  EXPECT_TRUE(CreateModel(*l3c, HeadKind::kCausalLm).ok());

  auto error_of = [](json j) {
    auto c = ModelConfig::FromJson(j);
    EXPECT_FALSE(c.ok());
    return std::string(c.status().message());
  };
  json bad = Gpt2Config(Gpt2Dims());
  bad["n_embd"] = "wide";
  EXPECT_NE(error_of(bad).find("n_embd"), std::string::npos);
  bad = LlamaConfig(LlamaDims());
  bad["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(error_of(bad).find("rope_scaling"), std::string::npos);
  bad = LlamaConfig(LlamaDims());
  bad["rope_scaling"] = {{"type", "linear"}};
  EXPECT_NE(error_of(bad).find("rope_scaling"), std::string::npos);
  bad = LlamaConfig(LlamaDims());
  bad["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(bad).find("num_key_value_heads"), std::string::npos);
  bad = LlamaConfig(LlamaDims());
  bad["num_hidden_layers"] = 1 << 20;
  EXPECT_NE(error_of(bad).find("num_hidden_layers"), std::string::npos);
  LlamaDims qd;
  qd.type = "qwen2";
  bad = LlamaConfig(qd);
  bad["use_sliding_window"] = true;
  bad["sliding_window"] = 16;
  bad["max_window_layers"] = 0;
  EXPECT_NE(error_of(bad).find("use_sliding_window"), std::string::npos);
  // A window covering every position is accepted (it changes nothing).
  bad["sliding_window"] = 64;
  EXPECT_TRUE(ModelConfig::FromJson(bad).ok());
  bad = Gpt2Config(Gpt2Dims());
  bad["embd_pdrop"] = 1.5;
  EXPECT_NE(error_of(bad).find("embd_pdrop"), std::string::npos);
}

}  // namespace
}  // namespace lathe
