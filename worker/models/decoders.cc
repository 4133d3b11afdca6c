// GPT-2 and the Llama family (Llama, Mistral, Qwen2) in torch::nn, the
// module trees named as Hugging Face's GPT2*/Llama*/Mistral*/Qwen2* classes
// name their parameters.
//
// Notes that hold for every model here:
// - Position ids are 0..T-1 for every row, as Hugging Face uses when no
//   position_ids are passed. With left padding a row's first real token is
//   therefore not at position 0; right padding (what Lathe's batches use)
//   gives every row the positions it would have alone. Packed sequences
//   pass ModelInputs::position_ids and segment_ids: positions restart at
//   each packed row and attention stays within it.
// - With gradient checkpointing on, each block runs through
//   RecomputeInBackward while gradients are recorded.
// - Attention combines the causal mask (plus Mistral's sliding window) with
//   the padding mask into one additive mask per forward. Masked scores get
//   the dtype's lowest finite value, so a query whose keys are all masked
//   (a left-padding position) averages uniformly instead of producing NaN.
// - Sequence classification reads each row's last token whose
//   attention_mask is 1. Hugging Face picks the last token that is not
//   pad_token_id; with right padding both are the same token, and the mask
//   also works when the pad id equals a real token (GPT-2's eos).
// - Tied weights (lm_head.weight with the input embedding) are one tensor
//   registered under both names: named_parameters() and parameters() list
//   it twice, so optimisers must deduplicate parameters by identity.
#include "worker/models/decoders.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/models/attention.h"
#include "worker/models/family_models.h"
#include "worker/models/linear.h"
#include "worker/models/model.h"
#include "worker/models/recompute.h"

namespace lathe {
namespace families {
namespace {

constexpr double kPi = 3.14159265358979323846;

enum class Act { kGelu, kGeluTanh, kRelu, kSilu, kQuickGelu };

absl::StatusOr<Act> ActivationOf(const std::string& name) {
  if (name == "gelu") return Act::kGelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Act::kGeluTanh;
  if (name == "relu") return Act::kRelu;
  if (name == "silu" || name == "swish") return Act::kSilu;
  if (name == "quick_gelu") return Act::kQuickGelu;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported activation \"", name, "\""));
}

torch::Tensor Apply(Act act, const torch::Tensor& x) {
  switch (act) {
    case Act::kGelu:
      return torch::gelu(x);
    case Act::kGeluTanh:
      return torch::gelu(x, "tanh");
    case Act::kRelu:
      return torch::relu(x);
    case Act::kSilu:
      return torch::silu(x);
    case Act::kQuickGelu:
      return x * torch::sigmoid(1.702 * x);
  }
  return x;
}

void InitNormal(torch::Tensor w, double std) {
  torch::NoGradGuard no_grad;
  w.normal_(0.0, std);
}

void InitLinear(Linear& l, double std) {
  InitNormal(l->weight, std);
  if (l->bias.defined()) {
    torch::NoGradGuard no_grad;
    l->bias.zero_();
  }
}

// Lathe's Linear: torch.nn.Linear's names and numerics, and room for a LoRA
// adapter (lora.h).
Linear MakeLinear(int64_t in, int64_t out, bool bias, double std) {
  Linear l(in, out, bias);
  InitLinear(l, std);
  return l;
}

// A bias-free projection whose weight may be another module's tensor (an
// lm_head tied to the input embedding).
class ProjectionImpl : public torch::nn::Module {
 public:
  explicit ProjectionImpl(torch::Tensor weight) {
    weight_ = register_parameter("weight", std::move(weight));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::linear(x, weight_);
  }

 private:
  torch::Tensor weight_;
};
TORCH_MODULE(Projection);

// Each row's hidden state at its last attended position: [B, T, H] ->
// [B, H]. Rows without any attended token use position 0.
torch::Tensor LastTokenStates(const torch::Tensor& hidden,
                              const torch::Tensor& attention_mask) {
  const int64_t b = hidden.size(0);
  const int64_t t = hidden.size(1);
  auto long_opts =
      torch::TensorOptions().dtype(torch::kLong).device(hidden.device());
  torch::Tensor last;
  if (attention_mask.defined()) {
    last = (torch::arange(t, long_opts).unsqueeze(0) *
            attention_mask.to(torch::kLong))
               .argmax(-1);
  } else {
    last = torch::full({b}, t - 1, long_opts);
  }
  return hidden.index({torch::arange(b, long_opts), last});
}

// ---------------------------------------------------------------- GPT-2

// Hugging Face's Conv1D: weight [in, out], y = x W + b (Lathe's Linear in
// its transposed layout, which also takes LoRA adapters).
Linear Conv1D(int64_t in, int64_t out, double std) {
  Linear l(in, out, /*bias=*/true, /*fan_in_fan_out=*/true);
  InitNormal(l->weight, std);
  return l;
}

torch::nn::LayerNorm MakeLayerNorm(int64_t h, double eps) {
  // LayerNorm starts at weight 1, bias 0 as Hugging Face initialises it.
  return torch::nn::LayerNorm(
      torch::nn::LayerNormOptions({h}).eps(eps).elementwise_affine(true));
}

class Gpt2BlockImpl : public torch::nn::Module {
 public:
  Gpt2BlockImpl(const ModelConfig& c, const DecoderExtras& e, int64_t index,
                Act act)
      : heads_(c.num_attention_heads),
        head_dim_(c.hidden_size / c.num_attention_heads),
        attn_dropout_(c.attention_dropout),
        act_(act) {
    const int64_t h = c.hidden_size;
    const double std = c.initializer_range;
    // Hugging Face scales the residual projections' init by
    // 1/sqrt(2 * n_layer).
    const double proj_std =
        std / std::sqrt(2.0 * static_cast<double>(c.num_hidden_layers));
    scale_ = 1.0;
    if (e.scale_attn_weights) {
      scale_ /= std::sqrt(static_cast<double>(head_dim_));
    }
    if (e.scale_attn_by_inverse_layer_idx) {
      scale_ /= static_cast<double>(index + 1);
    }
    ln_1_ = register_module("ln_1", MakeLayerNorm(h, c.layer_norm_eps));
    auto attn = std::make_shared<torch::nn::Module>();
    c_attn_ = attn->register_module("c_attn", Conv1D(h, 3 * h, std));
    attn_proj_ = attn->register_module("c_proj", Conv1D(h, h, proj_std));
    register_module("attn", attn);
    ln_2_ = register_module("ln_2", MakeLayerNorm(h, c.layer_norm_eps));
    auto mlp = std::make_shared<torch::nn::Module>();
    c_fc_ = mlp->register_module("c_fc", Conv1D(h, c.intermediate_size, std));
    mlp_proj_ = mlp->register_module("c_proj",
                                     Conv1D(c.intermediate_size, h, proj_std));
    register_module("mlp", mlp);
    resid_dropout_ = c.hidden_dropout;
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    const int64_t b = x.size(0);
    const int64_t t = x.size(1);
    const int64_t h = x.size(2);
    std::vector<torch::Tensor> qkv = c_attn_(ln_1_(x)).split(h, -1);
    auto heads = [&](const torch::Tensor& y) {
      return y.view({b, t, heads_, head_dim_}).transpose(1, 2);
    };
    torch::Tensor a =
        Attend(heads(qkv[0]), heads(qkv[1]), heads(qkv[2]), mask, scale_,
               attn_dropout_, is_training(), DefaultAttentionKernel());
    a = attn_proj_(a.transpose(1, 2).reshape({b, t, h}));
    torch::Tensor y = x + Dropout(a);
    torch::Tensor m = mlp_proj_(Apply(act_, c_fc_(ln_2_(y))));
    return y + Dropout(m);
  }

 private:
  torch::Tensor Dropout(const torch::Tensor& x) {
    if (resid_dropout_ > 0 && is_training()) {
      return torch::dropout(x, resid_dropout_, /*train=*/true);
    }
    return x;
  }

  int64_t heads_;
  int64_t head_dim_;
  double attn_dropout_;
  double resid_dropout_ = 0;
  double scale_ = 1.0;
  Act act_;
  torch::nn::LayerNorm ln_1_{nullptr}, ln_2_{nullptr};
  Linear c_attn_{nullptr}, attn_proj_{nullptr};
  Linear c_fc_{nullptr}, mlp_proj_{nullptr};
};
TORCH_MODULE(Gpt2Block);

// GPT2Model: wte, wpe, h.N, ln_f.
class Gpt2ModelImpl : public torch::nn::Module {
 public:
  Gpt2ModelImpl(const ModelConfig& c, const DecoderExtras& e, Act act)
      : max_positions_(c.max_position_embeddings),
        embd_dropout_(e.embedding_dropout) {
    wte = register_module("wte",
                          torch::nn::Embedding(c.vocab_size, c.hidden_size));
    InitNormal(wte->weight, c.initializer_range);
    wpe_ = register_module(
        "wpe", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
    InitNormal(wpe_->weight, c.initializer_range);
    h_ = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      h_->push_back(Gpt2Block(c, e, i, act));
    }
    ln_f_ =
        register_module("ln_f", MakeLayerNorm(c.hidden_size, c.layer_norm_eps));
  }

  torch::Tensor forward(const ModelInputs& in) {
    const int64_t t = in.input_ids.size(1);
    TORCH_CHECK(t <= max_positions_, "sequence length ", t,
                " exceeds GPT-2's n_positions ", max_positions_);
    torch::Tensor positions =
        in.position_ids.defined()
            ? in.position_ids
            : torch::arange(t, torch::TensorOptions()
                                   .dtype(torch::kLong)
                                   .device(in.input_ids.device()))
                  .unsqueeze(0);
    torch::Tensor x = wte(in.input_ids) + wpe_(positions);
    if (embd_dropout_ > 0 && is_training()) {
      x = torch::dropout(x, embd_dropout_, /*train=*/true);
    }
    torch::Tensor mask = DecoderMask(in.attention_mask, in.segment_ids, t, 0,
                                     x.scalar_type(), x.device());
    for (const auto& block : *h_) {
      auto b = std::dynamic_pointer_cast<Gpt2BlockImpl>(block);
      if (checkpointing && is_training() && RecordingGradients()) {
        x = RecomputeInBackward(
            [b, mask](const torch::Tensor& y) { return b->forward(y, mask); },
            x);
      } else {
        x = b->forward(x, mask);
      }
    }
    return ln_f_(x);
  }

  torch::nn::Embedding wte{nullptr};
  bool checkpointing = false;

 private:
  int64_t max_positions_;
  double embd_dropout_;
  torch::nn::Embedding wpe_{nullptr};
  torch::nn::ModuleList h_{nullptr};
  torch::nn::LayerNorm ln_f_{nullptr};
};
TORCH_MODULE(Gpt2Model);

// -------------------------------------------------------- Llama family

class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t h, double eps) : eps_(eps) {
    weight_ = register_parameter("weight", torch::ones({h}));
  }
  // In float32 whatever the input dtype, as Hugging Face computes it.
  torch::Tensor forward(const torch::Tensor& x) {
    const auto dtype = x.scalar_type();
    torch::Tensor y = x.to(torch::kFloat);
    y = y * torch::rsqrt(y.pow(2).mean(-1, /*keepdim=*/true) + eps_);
    return weight_ * y.to(dtype);
  }

 private:
  double eps_;
  torch::Tensor weight_;
};
TORCH_MODULE(RmsNorm);

// Rotary inverse frequencies [head_dim / 2] in float32, with the scaling of
// `e` applied.
torch::Tensor InverseFrequencies(int64_t dim, double theta,
                                 const DecoderExtras& e) {
  torch::Tensor exponent =
      torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat) /
      static_cast<double>(dim);
  torch::Tensor inv = 1.0 / torch::pow(theta, exponent);
  using R = DecoderExtras::RopeType;
  if (e.rope_type == R::kLinear) {
    inv = inv / e.rope_factor;
  } else if (e.rope_type == R::kLlama3) {
    const double old_len = static_cast<double>(e.rope_original_max_positions);
    const double low_wavelen = old_len / e.rope_low_freq_factor;
    const double high_wavelen = old_len / e.rope_high_freq_factor;
    torch::Tensor wavelen = (2.0 * kPi) / inv;
    // Long wavelengths are slowed by the factor, short ones kept, and the
    // band between interpolates smoothly.
    torch::Tensor scaled =
        torch::where(wavelen > low_wavelen, inv / e.rope_factor, inv);
    torch::Tensor smooth = (old_len / wavelen - e.rope_low_freq_factor) /
                           (e.rope_high_freq_factor - e.rope_low_freq_factor);
    torch::Tensor smoothed =
        (1 - smooth) * scaled / e.rope_factor + smooth * scaled;
    torch::Tensor medium =
        (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, scaled);
  }
  return inv;
}

torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// [B, kv, T, d] -> [B, kv * rep, T, d], each KV head serving `rep` query
// heads in a row.
torch::Tensor RepeatKv(const torch::Tensor& x, int64_t rep) {
  if (rep == 1) return x;
  const auto s = x.sizes();
  return x.unsqueeze(2)
      .expand({s[0], s[1], rep, s[2], s[3]})
      .reshape({s[0], s[1] * rep, s[2], s[3]});
}

class LlamaLayerImpl : public torch::nn::Module {
 public:
  LlamaLayerImpl(const ModelConfig& c, Act act)
      : heads_(c.num_attention_heads),
        kv_heads_(c.num_key_value_heads),
        head_dim_(c.EffectiveHeadDim()),
        attn_dropout_(c.attention_dropout),
        act_(act) {
    const int64_t h = c.hidden_size;
    const double std = c.initializer_range;
    const bool qkv_bias = c.attention_bias;
    // Qwen2 has q/k/v biases but none on o_proj; Llama's attention_bias
    // covers all four.
    const bool o_bias = c.attention_bias && c.model_type == "llama";
    input_layernorm_ =
        register_module("input_layernorm", RmsNorm(h, c.layer_norm_eps));
    auto attn = std::make_shared<torch::nn::Module>();
    q_proj_ = attn->register_module(
        "q_proj", MakeLinear(h, heads_ * head_dim_, qkv_bias, std));
    k_proj_ = attn->register_module(
        "k_proj", MakeLinear(h, kv_heads_ * head_dim_, qkv_bias, std));
    v_proj_ = attn->register_module(
        "v_proj", MakeLinear(h, kv_heads_ * head_dim_, qkv_bias, std));
    o_proj_ = attn->register_module(
        "o_proj", MakeLinear(heads_ * head_dim_, h, o_bias, std));
    register_module("self_attn", attn);
    post_attention_layernorm_ = register_module("post_attention_layernorm",
                                                RmsNorm(h, c.layer_norm_eps));
    auto mlp = std::make_shared<torch::nn::Module>();
    gate_proj_ = mlp->register_module(
        "gate_proj", MakeLinear(h, c.intermediate_size, c.mlp_bias, std));
    up_proj_ = mlp->register_module(
        "up_proj", MakeLinear(h, c.intermediate_size, c.mlp_bias, std));
    down_proj_ = mlp->register_module(
        "down_proj", MakeLinear(c.intermediate_size, h, c.mlp_bias, std));
    register_module("mlp", mlp);
  }

  // cos, sin: [1 or B, 1, T, head_dim]; mask additive [B or 1, 1, T, T].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin, const torch::Tensor& mask) {
    const int64_t b = x.size(0);
    const int64_t t = x.size(1);
    torch::Tensor y = input_layernorm_(x);
    auto split = [&](const torch::Tensor& p, int64_t n) {
      return p.view({b, t, n, head_dim_}).transpose(1, 2);
    };
    torch::Tensor q = split(q_proj_(y), heads_);
    torch::Tensor k = split(k_proj_(y), kv_heads_);
    torch::Tensor v = split(v_proj_(y), kv_heads_);
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
    const int64_t rep = heads_ / kv_heads_;
    torch::Tensor a =
        Attend(q, RepeatKv(k, rep), RepeatKv(v, rep), mask,
               1.0 / std::sqrt(static_cast<double>(head_dim_)), attn_dropout_,
               is_training(), DefaultAttentionKernel());
    a = o_proj_(a.transpose(1, 2).reshape({b, t, heads_ * head_dim_}));
    torch::Tensor r = x + a;
    y = post_attention_layernorm_(r);
    return r + down_proj_(Apply(act_, gate_proj_(y)) * up_proj_(y));
  }

 private:
  int64_t heads_;
  int64_t kv_heads_;
  int64_t head_dim_;
  double attn_dropout_;
  Act act_;
  RmsNorm input_layernorm_{nullptr}, post_attention_layernorm_{nullptr};
  Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  Linear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
};
TORCH_MODULE(LlamaLayer);

// LlamaModel (also MistralModel, Qwen2Model): embed_tokens, layers.N, norm.
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const ModelConfig& c, const DecoderExtras& e, Act act)
      : sliding_window_(e.sliding_window) {
    torch::nn::EmbeddingOptions opts(c.vocab_size, c.hidden_size);
    // Hugging Face gives embed_tokens padding_idx = pad_token_id: that row
    // starts at zero and receives no gradient.
    const bool has_pad = c.pad_token_id.has_value() && *c.pad_token_id >= 0 &&
                         *c.pad_token_id < c.vocab_size;
    if (has_pad) opts.padding_idx(*c.pad_token_id);
    embed_tokens = register_module("embed_tokens", torch::nn::Embedding(opts));
    InitNormal(embed_tokens->weight, c.initializer_range);
    if (has_pad) {
      torch::NoGradGuard no_grad;
      embed_tokens->weight[*c.pad_token_id].zero_();
    }
    layers_ = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      layers_->push_back(LlamaLayer(c, act));
    }
    norm_ = register_module("norm", RmsNorm(c.hidden_size, c.layer_norm_eps));
    // Not registered: Hugging Face does not save inv_freq either.
    inv_freq_ = InverseFrequencies(c.EffectiveHeadDim(), c.rope_theta, e);
  }

  torch::Tensor forward(const ModelInputs& in) {
    const int64_t t = in.input_ids.size(1);
    torch::Tensor x = embed_tokens(in.input_ids);
    if (inv_freq_.device() != x.device()) inv_freq_ = inv_freq_.to(x.device());
    // cos/sin once per forward, in float32 like Hugging Face, then in the
    // activations' dtype: [1, 1, T, d], or [B, 1, T, d] for packed rows.
    torch::Tensor positions = in.position_ids.defined()
                                  ? in.position_ids.to(torch::kFloat)
                                  : torch::arange(t, torch::TensorOptions()
                                                         .dtype(torch::kFloat)
                                                         .device(x.device()))
                                        .unsqueeze(0);
    torch::Tensor freqs = positions.unsqueeze(-1) * inv_freq_;
    torch::Tensor emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);
    torch::Tensor cos = emb.cos().to(x.scalar_type());
    torch::Tensor sin = emb.sin().to(x.scalar_type());
    torch::Tensor mask =
        DecoderMask(in.attention_mask, in.segment_ids, t, sliding_window_,
                    x.scalar_type(), x.device());
    for (const auto& layer : *layers_) {
      auto l = std::dynamic_pointer_cast<LlamaLayerImpl>(layer);
      if (checkpointing && is_training() && RecordingGradients()) {
        x = RecomputeInBackward(
            [l, cos, sin, mask](const torch::Tensor& y) {
              return l->forward(y, cos, sin, mask);
            },
            x);
      } else {
        x = l->forward(x, cos, sin, mask);
      }
    }
    return norm_(x);
  }

  torch::nn::Embedding embed_tokens{nullptr};
  bool checkpointing = false;

 private:
  int64_t sliding_window_;
  torch::nn::ModuleList layers_{nullptr};
  RmsNorm norm_{nullptr};
  torch::Tensor inv_freq_;
};
TORCH_MODULE(LlamaModel);

// ------------------------------------------------------------- Task models

std::string ClassPrefix(const ModelConfig& c) {
  if (c.model_type == "gpt2") return "GPT2";
  if (c.model_type == "mistral") return "Mistral";
  if (c.model_type == "qwen2") return "Qwen2";
  return "Llama";
}

// One decoder backbone plus the head; the backbone is registered by the
// subclass under its prefix.
class DecoderTaskImpl : public TaskModelImpl {
 public:
  torch::Tensor forward(const ModelInputs& in) override {
    torch::Tensor hidden = Backbone(in);
    switch (head()) {
      case HeadKind::kCausalLm:
        return lm_head_(hidden);
      case HeadKind::kSequenceClassification:
        return score_(LastTokenStates(hidden, in.attention_mask));
      case HeadKind::kTokenClassification:
        return token_head_(dropout_(hidden));
      case HeadKind::kQuestionAnswering:
        return qa_outputs_(hidden);
      default:
        return hidden;
    }
  }

  bool SetGradientCheckpointing(bool on) override {
    SetBackboneCheckpointing(on);
    return true;
  }

  bool has_lm_head() const override { return head() == HeadKind::kCausalLm; }
  torch::Tensor ForwardHidden(const ModelInputs& in) override {
    TORCH_CHECK(has_lm_head(), "ForwardHidden needs a causal-LM head");
    return Backbone(in);
  }
  torch::Tensor ProjectHidden(const torch::Tensor& hidden) override {
    TORCH_CHECK(has_lm_head(), "ProjectHidden needs a causal-LM head");
    return lm_head_(hidden);
  }

  std::string architecture_class() const override {
    const std::string p = ClassPrefix(config());
    switch (head()) {
      case HeadKind::kNone:
        return p + "Model";
      case HeadKind::kCausalLm:
        return p == "GPT2" ? "GPT2LMHeadModel" : p + "ForCausalLM";
      case HeadKind::kSequenceClassification:
        return p + "ForSequenceClassification";
      case HeadKind::kTokenClassification:
        return p + "ForTokenClassification";
      case HeadKind::kQuestionAnswering:
        return p + "ForQuestionAnswering";
      default:
        return p + "Model";
    }
  }

  std::string base_prefix() const override { return prefix_; }

  std::vector<std::string> head_parameter_names() const override {
    std::vector<std::string> names;
    for (const auto& item : named_parameters(/*recurse=*/true)) {
      if (item.key().rfind(prefix_ + ".", 0) == 0) continue;
      // A tied lm_head is the input embedding, not a head of its own.
      if (config().tie_word_embeddings && head() == HeadKind::kCausalLm) {
        continue;
      }
      names.push_back(item.key());
    }
    return names;
  }

  std::vector<std::pair<std::string, std::string>> tied_parameters()
      const override {
    if (head() == HeadKind::kCausalLm && config().tie_word_embeddings) {
      return {{"lm_head.weight", prefix_ + "." + embedding_name_}};
    }
    return {};
  }

 protected:
  DecoderTaskImpl(const ModelConfig& c, HeadKind head, std::string prefix,
                  std::string embedding_name)
      : TaskModelImpl(c, head),
        prefix_(std::move(prefix)),
        embedding_name_(std::move(embedding_name)) {}

  virtual torch::Tensor Backbone(const ModelInputs& in) = 0;
  virtual void SetBackboneCheckpointing(bool on) = 0;

  // Registers the head's modules; call after the backbone is registered.
  // `token_head_name`: "classifier" (GPT-2) or "score" (Llama family).
  void BuildHead(const torch::Tensor& embedding,
                 const std::string& token_head_name) {
    const ModelConfig& c = config();
    const int64_t h = c.hidden_size;
    const double std = c.initializer_range;
    switch (head()) {
      case HeadKind::kCausalLm: {
        torch::Tensor w = embedding;
        if (!c.tie_word_embeddings) {
          w = torch::empty({c.vocab_size, h});
          InitNormal(w, std);
        }
        lm_head_ = register_module("lm_head", Projection(w));
        break;
      }
      case HeadKind::kSequenceClassification:
        score_ =
            register_module("score", MakeLinear(h, c.num_labels(), false, std));
        break;
      case HeadKind::kTokenClassification:
        dropout_ = register_module("dropout",
                                   torch::nn::Dropout(c.classifier_dropout));
        token_head_ = register_module(token_head_name,
                                      MakeLinear(h, c.num_labels(), true, std));
        break;
      case HeadKind::kQuestionAnswering:
        qa_outputs_ =
            register_module("qa_outputs", MakeLinear(h, 2, true, std));
        break;
      default:
        break;
    }
  }

 private:
  std::string prefix_;
  std::string embedding_name_;
  Projection lm_head_{nullptr};
  Linear score_{nullptr};
  Linear token_head_{nullptr};
  Linear qa_outputs_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};

class Gpt2TaskImpl : public DecoderTaskImpl {
 public:
  Gpt2TaskImpl(const ModelConfig& c, HeadKind head, const DecoderExtras& e,
               Act act)
      : DecoderTaskImpl(c, head, "transformer", "wte.weight") {
    transformer_ = register_module("transformer", Gpt2Model(c, e, act));
    BuildHead(transformer_->wte->weight, "classifier");
  }

  // Older GPT-2 checkpoints carry the causal mask as buffers.
  bool IgnoredOnLoad(const std::string& name) const override {
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() &&
             name.compare(name.size() - suffix.size(), suffix.size(), suffix) ==
                 0;
    };
    return ends_with(".attn.bias") || ends_with(".attn.masked_bias");
  }

 protected:
  torch::Tensor Backbone(const ModelInputs& in) override {
    return transformer_(in);
  }
  void SetBackboneCheckpointing(bool on) override {
    transformer_->checkpointing = on;
  }

 private:
  Gpt2Model transformer_{nullptr};
};

class LlamaTaskImpl : public DecoderTaskImpl {
 public:
  LlamaTaskImpl(const ModelConfig& c, HeadKind head, const DecoderExtras& e,
                Act act)
      : DecoderTaskImpl(c, head, PrefixFor(c, head), "embed_tokens.weight") {
    model_ = register_module(base_prefix(), LlamaModel(c, e, act));
    BuildHead(model_->embed_tokens->weight, "score");
  }

  // Llama's and Qwen2's question-answering classes keep their backbone
  // under "transformer"; every other class uses "model".
  static std::string PrefixFor(const ModelConfig& c, HeadKind head) {
    if (head == HeadKind::kQuestionAnswering &&
        (c.model_type == "llama" || c.model_type == "qwen2")) {
      return "transformer";
    }
    return "model";
  }

  // Rotary caches some older checkpoints saved.
  bool IgnoredOnLoad(const std::string& name) const override {
    const std::string suffix = "rotary_emb.inv_freq";
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) ==
               0;
  }

 protected:
  torch::Tensor Backbone(const ModelInputs& in) override { return model_(in); }
  void SetBackboneCheckpointing(bool on) override {
    model_->checkpointing = on;
  }

 private:
  LlamaModel model_{nullptr};
};

}  // namespace

absl::StatusOr<TaskModel> CreateDecoderModel(const ModelConfig& config,
                                             HeadKind head) {
  RETURN_IF_ERROR(config.Validate());
  if (config.architecture != Architecture::kGpt2 &&
      config.architecture != Architecture::kLlama) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model_type \"", config.model_type, "\" is not a decoder family"));
  }
  if (head == HeadKind::kMaskedLm) {
    return absl::InvalidArgumentError(absl::StrCat(
        ClassPrefix(config), " has no masked-LM head; use the causal-LM head"));
  }
  const bool needs_labels = head == HeadKind::kSequenceClassification ||
                            head == HeadKind::kTokenClassification;
  if (needs_labels && config.num_labels() < 1) {
    return absl::InvalidArgumentError(
        "a classification head needs at least one label");
  }
  if (config.architecture == Architecture::kLlama &&
      config.EffectiveHeadDim() % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim ", config.EffectiveHeadDim(),
                     " must be even for rotary position embeddings"));
  }
  ASSIGN_OR_RETURN(DecoderExtras extras, ParseDecoderExtras(config));
  ASSIGN_OR_RETURN(Act act, ActivationOf(config.hidden_act));
  try {
    if (config.architecture == Architecture::kGpt2) {
      return TaskModel(
          std::make_shared<Gpt2TaskImpl>(config, head, extras, act));
    }
    return TaskModel(
        std::make_shared<LlamaTaskImpl>(config, head, extras, act));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building ", config.model_type,
                                            ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("building ", config.model_type, ": ", e.what()));
  }
}

}  // namespace families
}  // namespace lathe
