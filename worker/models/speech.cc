#include "worker/models/speech.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/models/family_models.h"
#include "worker/models/linear.h"

namespace lathe {

int64_t Wav2Vec2FrameCount(const ModelConfig& config, int64_t samples) {
  int64_t n = samples;
  const SpeechConfig& s = config.speech;
  for (size_t i = 0; i < s.conv_kernel.size(); ++i) {
    if (n < s.conv_kernel[i]) return 0;
    n = (n - s.conv_kernel[i]) / s.conv_stride[i] + 1;
  }
  return n;
}

torch::Tensor Wav2Vec2FrameCounts(const ModelConfig& config,
                                  const torch::Tensor& samples) {
  torch::Tensor n = samples.to(torch::kLong);
  const SpeechConfig& s = config.speech;
  for (size_t i = 0; i < s.conv_kernel.size(); ++i) {
    n = torch::clamp_min(
        torch::div(n - s.conv_kernel[i], s.conv_stride[i], "floor") + 1, 0);
  }
  return n;
}

namespace families {
namespace {

namespace F = torch::nn::functional;

std::shared_ptr<torch::nn::Module> Holder(torch::nn::Module& parent,
                                          const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

// Lathe's Linear (LoRA-capable), normal(0, std) weights and zero bias.
Linear MakeLinear(torch::nn::Module& parent, const std::string& name,
                  int64_t in, int64_t out, double std) {
  auto l = parent.register_module(name, Linear(in, out, /*bias=*/true));
  torch::NoGradGuard no_grad;
  l->weight.normal_(0.0, std);
  l->bias.zero_();
  return l;
}

torch::nn::LayerNorm MakeLayerNorm(torch::nn::Module& parent,
                                   const std::string& name, int64_t dim,
                                   double eps) {
  return parent.register_module(
      name, torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps)));
}

torch::Tensor Activation(const std::string& name, const torch::Tensor& x) {
  if (name == "relu") return torch::relu(x);
  if (name == "silu" || name == "swish") return torch::silu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") {
    return torch::gelu(x, "tanh");
  }
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  return torch::gelu(x);
}

torch::Tensor Dropout(const torch::Tensor& x, double p, bool training) {
  if (!training || p == 0) return x;
  return F::dropout(x, F::DropoutFuncOptions().p(p).training(true));
}

// SpecAugment's spans, as Hugging Face's _compute_mask_indices draws them:
// per row about prob * length / span spans (at least min_spans) of `span`
// positions, starting at distinct positions of the row's valid part.
torch::Tensor SpanMask(int64_t rows, int64_t width, double prob, int64_t span,
                       int64_t min_spans, const std::vector<int64_t>& valid) {
  torch::Tensor mask = torch::zeros({rows, width}, torch::kBool);
  if (prob <= 0) return mask;
  const double epsilon = torch::rand({1}).item<double>();
  auto acc = mask.accessor<bool, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = valid[static_cast<size_t>(r)];
    int64_t spans = static_cast<int64_t>(
        prob * static_cast<double>(n) / static_cast<double>(span) + epsilon);
    spans = std::max(spans, min_spans);
    if (spans * span > width) spans = width / span;
    if (n - (span - 1) < spans) spans = std::max<int64_t>(n - (span - 1), 0);
    if (spans == 0) continue;
    torch::Tensor starts = torch::randperm(n - span + 1).slice(0, 0, spans);
    for (int64_t k = 0; k < spans; ++k) {
      const int64_t s = starts[k].item<int64_t>();
      for (int64_t t = s; t < std::min(s + span, width); ++t) acc[r][t] = true;
    }
  }
  return mask;
}

// The gradient arriving at an activation's output made dense. LibTorch
// 1.13's CPU GELU backward, given a gradient laid out as [B, T, C] (what the
// transpose to frames hands back) over a [B, C, T] input, returns garbage
// that differs from run to run (SpeechTest.GradientsAreRepeatable).
torch::Tensor DenseGradient(const torch::Tensor& x) {
  if (x.requires_grad()) {
    x.register_hook([](torch::Tensor g) { return g.contiguous(); });
  }
  return x;
}

struct ConvLayer {
  torch::nn::Conv1d conv{nullptr};
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
};

struct EncoderLayer {
  Linear q{nullptr}, k{nullptr}, v{nullptr}, out{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr}, final_layer_norm{nullptr};
  Linear intermediate{nullptr}, output{nullptr};
};

class Wav2Vec2Impl : public TaskModelImpl {
 public:
  Wav2Vec2Impl(const ModelConfig& c, HeadKind head) : TaskModelImpl(c, head) {
    const SpeechConfig& s = c.speech;
    const int64_t h = c.hidden_size;
    const double std = c.initializer_range;
    torch::nn::Module& base =
        head == HeadKind::kNone ? *this : *Holder(*this, "wav2vec2");
    auto conv_layers =
        Holder(*Holder(base, "feature_extractor"), "conv_layers");
    int64_t in = 1;
    for (size_t i = 0; i < s.conv_dim.size(); ++i) {
      auto holder = Holder(*conv_layers, std::to_string(i));
      ConvLayer L;
      L.conv = holder->register_module(
          "conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(in, s.conv_dim[i],
                                                             s.conv_kernel[i])
                                        .stride(s.conv_stride[i])
                                        .bias(s.conv_bias)));
      torch::nn::init::kaiming_normal_(L.conv->weight);
      if (s.conv_bias) {
        torch::NoGradGuard no_grad;
        const double k =
            std::sqrt(1.0 / static_cast<double>(in * s.conv_kernel[i]));
        L.conv->bias.uniform_(-k, k);
      }
      if (s.feat_extract_norm == "group" && i == 0) {
        L.group_norm = holder->register_module(
            "layer_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(
                                                   s.conv_dim[i], s.conv_dim[i])
                                                   .affine(true)));
      } else if (s.feat_extract_norm == "layer") {
        L.layer_norm =
            MakeLayerNorm(*holder, "layer_norm", s.conv_dim[i], 1e-5);
      }
      conv_.push_back(L);
      in = s.conv_dim[i];
    }
    auto projection = Holder(base, "feature_projection");
    projection_norm_ =
        MakeLayerNorm(*projection, "layer_norm", in, c.layer_norm_eps);
    projection_ =
        projection->register_module("projection", Linear(in, h, /*bias=*/true));
    {
      torch::NoGradGuard no_grad;
      const double k = std::sqrt(1.0 / static_cast<double>(in));
      projection_->weight.uniform_(-k, k);
      projection_->bias.uniform_(-k, k);
    }
    if (s.mask_time_prob > 0 || s.mask_feature_prob > 0) {
      masked_spec_embed_ =
          base.register_parameter("masked_spec_embed", torch::empty({h}));
      torch::NoGradGuard no_grad;
      masked_spec_embed_.uniform_();
    }
    auto encoder = Holder(base, "encoder");
    auto pos = Holder(*Holder(*encoder, "pos_conv_embed"), "conv");
    const int64_t kernel = s.num_conv_pos_embeddings;
    const int64_t groups = s.num_conv_pos_embedding_groups;
    pos_v_ = pos->register_parameter("weight_v",
                                     torch::empty({h, h / groups, kernel}));
    {
      torch::NoGradGuard no_grad;
      pos_v_.normal_(0.0,
                     2.0 * std::sqrt(1.0 / static_cast<double>(kernel * h)));
    }
    pos_g_ = pos->register_parameter(
        "weight_g", pos_v_.detach()
                        .pow(2)
                        .sum(std::vector<int64_t>{0, 1}, /*keepdim=*/true)
                        .sqrt());
    pos_bias_ = pos->register_parameter("bias", torch::zeros({h}));
    encoder_norm_ = MakeLayerNorm(*encoder, "layer_norm", h, c.layer_norm_eps);
    auto layers = Holder(*encoder, "layers");
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      auto holder = Holder(*layers, std::to_string(i));
      auto attention = Holder(*holder, "attention");
      EncoderLayer L;
      L.q = MakeLinear(*attention, "q_proj", h, h, std);
      L.k = MakeLinear(*attention, "k_proj", h, h, std);
      L.v = MakeLinear(*attention, "v_proj", h, h, std);
      L.out = MakeLinear(*attention, "out_proj", h, h, std);
      L.layer_norm = MakeLayerNorm(*holder, "layer_norm", h, c.layer_norm_eps);
      auto ff = Holder(*holder, "feed_forward");
      L.intermediate =
          MakeLinear(*ff, "intermediate_dense", h, c.intermediate_size, std);
      L.output = MakeLinear(*ff, "output_dense", c.intermediate_size, h, std);
      L.final_layer_norm =
          MakeLayerNorm(*holder, "final_layer_norm", h, c.layer_norm_eps);
      layers_.push_back(L);
    }
    if (head == HeadKind::kCtc) {
      lm_head_ = MakeLinear(*this, "lm_head", h, c.vocab_size, std);
    } else if (head == HeadKind::kSequenceClassification) {
      projector_ =
          MakeLinear(*this, "projector", h, s.classifier_proj_size, std);
      classifier_ = MakeLinear(*this, "classifier", s.classifier_proj_size,
                               c.num_labels(), std);
    }
  }

  torch::Tensor forward(const ModelInputs& in) override {
    const ModelConfig& c = config();
    const SpeechConfig& s = c.speech;
    TORCH_CHECK(in.input_values.defined() && in.input_values.dim() == 2,
                architecture_class(), " needs input_values [B, samples]");
    const bool training = is_training();
    torch::Tensor x = in.input_values.unsqueeze(1);
    for (size_t i = 0; i < conv_.size(); ++i) {
      ConvLayer& L = conv_[i];
      x = L.conv(x);
      if (!L.group_norm.is_empty()) x = L.group_norm(x);
      if (!L.layer_norm.is_empty()) {
        x = L.layer_norm(x.transpose(1, 2)).transpose(1, 2);
      }
      x = DenseGradient(Activation(s.feat_extract_activation, x));
    }
    x = x.transpose(1, 2);  // [B, frames, channels]
    const int64_t b = x.size(0), t = x.size(1);
    // Which frames hold audio: the feature encoder's lengths of the rows.
    torch::Tensor frame_mask;
    std::vector<int64_t> valid(static_cast<size_t>(b), t);
    if (in.attention_mask.defined()) {
      torch::Tensor lengths =
          Wav2Vec2FrameCounts(c, in.attention_mask.sum(-1)).to(x.device());
      frame_mask = torch::arange(t, lengths.options()).unsqueeze(0) <
                   lengths.unsqueeze(1);
      torch::Tensor cpu = lengths.cpu();
      for (int64_t r = 0; r < b; ++r) {
        valid[static_cast<size_t>(r)] = std::min(t, cpu[r].item<int64_t>());
      }
    }
    torch::Tensor hidden = projection_(projection_norm_(x));
    hidden = Dropout(hidden, s.feat_proj_dropout, training);
    if (training && s.apply_spec_augment) {
      if (s.mask_time_prob > 0 && masked_spec_embed_.defined()) {
        torch::Tensor m = SpanMask(b, t, s.mask_time_prob, s.mask_time_length,
                                   s.mask_time_min_masks, valid)
                              .to(hidden.device());
        hidden = torch::where(m.unsqueeze(-1),
                              masked_spec_embed_.to(hidden.dtype()), hidden);
      }
      if (s.mask_feature_prob > 0) {
        const int64_t width = hidden.size(2);
        torch::Tensor m =
            SpanMask(b, width, s.mask_feature_prob, s.mask_feature_length,
                     s.mask_feature_min_masks,
                     std::vector<int64_t>(static_cast<size_t>(b), width))
                .to(hidden.device());
        hidden = hidden.masked_fill(m.unsqueeze(1), 0.0);
      }
    }
    hidden = Encode(hidden, frame_mask);
    if (head() == HeadKind::kCtc) {
      return lm_head_(Dropout(hidden, s.final_dropout, training));
    }
    if (head() == HeadKind::kSequenceClassification) {
      torch::Tensor p = projector_(hidden);
      torch::Tensor pooled;
      if (frame_mask.defined()) {
        torch::Tensor m = frame_mask.unsqueeze(-1).to(p.dtype());
        pooled = (p * m).sum(1) / m.sum(1).clamp_min(1.0);
      } else {
        pooled = p.mean(1);
      }
      return classifier_(pooled);
    }
    return hidden;
  }

  std::string architecture_class() const override {
    switch (head()) {
      case HeadKind::kCtc:
        return "Wav2Vec2ForCTC";
      case HeadKind::kSequenceClassification:
        return "Wav2Vec2ForSequenceClassification";
      default:
        return "Wav2Vec2Model";
    }
  }
  std::string base_prefix() const override { return "wav2vec2"; }
  std::vector<std::string> head_parameter_names() const override {
    if (head() == HeadKind::kCtc) return {"lm_head.weight", "lm_head.bias"};
    if (head() == HeadKind::kSequenceClassification) {
      return {"projector.weight", "projector.bias", "classifier.weight",
              "classifier.bias"};
    }
    return {};
  }
  bool IgnoredOnLoad(const std::string& name) const override {
    // Pre-training only: the quantizer and the contrastive projections;
    // SpecAugment's embedding when this config masks nothing.
    return absl::StartsWith(name, "quantizer.") ||
           absl::StartsWith(name, "project_hid.") ||
           absl::StartsWith(name, "project_q.") ||
           (name == "masked_spec_embed" && !masked_spec_embed_.defined());
  }
  std::string CanonicalName(const std::string& name) const override {
    // Weight normalisation as torch's parametrizations name it.
    static const std::string kNew =
        "pos_conv_embed.conv.parametrizations.weight.";
    const size_t at = name.find(kNew);
    if (at == std::string::npos) return name;
    const std::string rest = name.substr(at + kNew.size());
    const std::string head = name.substr(0, at) + "pos_conv_embed.conv.";
    if (rest == "original0") return head + "weight_g";
    if (rest == "original1") return head + "weight_v";
    return name;
  }

 private:
  torch::Tensor Encode(torch::Tensor hidden, const torch::Tensor& frame_mask) {
    const ModelConfig& c = config();
    const SpeechConfig& s = c.speech;
    const bool training = is_training();
    torch::Tensor additive;
    if (frame_mask.defined()) {
      hidden = hidden * frame_mask.unsqueeze(-1).to(hidden.dtype());
      additive = (1.0 - frame_mask.to(hidden.dtype()))
                     .mul(std::numeric_limits<float>::lowest())
                     .unsqueeze(1)
                     .unsqueeze(1);
    }
    // The convolutional position embedding, weight-normalised over dim 2.
    const torch::Tensor weight =
        pos_g_ * pos_v_ /
        pos_v_.pow(2).sum(std::vector<int64_t>{0, 1}, /*keepdim=*/true).sqrt();
    const int64_t kernel = s.num_conv_pos_embeddings;
    torch::Tensor pos = F::conv1d(hidden.transpose(1, 2), weight,
                                  F::Conv1dFuncOptions()
                                      .bias(pos_bias_)
                                      .padding(kernel / 2)
                                      .groups(s.num_conv_pos_embedding_groups));
    if (kernel % 2 == 0) pos = pos.slice(2, 0, pos.size(2) - 1);
    hidden = hidden + DenseGradient(Activation(s.feat_extract_activation, pos))
                          .transpose(1, 2);
    if (!s.do_stable_layer_norm) hidden = encoder_norm_(hidden);
    hidden = Dropout(hidden, c.hidden_dropout, training);
    for (EncoderLayer& L : layers_) {
      if (training && s.layerdrop > 0 &&
          torch::rand({1}).item<double>() < s.layerdrop) {
        continue;
      }
      if (s.do_stable_layer_norm) {
        hidden = hidden + Dropout(Attend(L, L.layer_norm(hidden), additive),
                                  c.hidden_dropout, training);
        hidden = hidden + FeedForward(L, L.final_layer_norm(hidden));
      } else {
        hidden = L.layer_norm(hidden + Dropout(Attend(L, hidden, additive),
                                               c.hidden_dropout, training));
        hidden = L.final_layer_norm(hidden + FeedForward(L, hidden));
      }
    }
    if (s.do_stable_layer_norm) hidden = encoder_norm_(hidden);
    return hidden;
  }

  torch::Tensor Attend(EncoderLayer& L, const torch::Tensor& x,
                       const torch::Tensor& additive) {
    const ModelConfig& c = config();
    const int64_t b = x.size(0), t = x.size(1), h = x.size(2);
    const int64_t heads = c.num_attention_heads, d = h / heads;
    auto split = [&](const torch::Tensor& y) {
      return y.view({b, t, heads, d}).transpose(1, 2);
    };
    torch::Tensor q = split(L.q(x) * (1.0 / std::sqrt(static_cast<double>(d))));
    torch::Tensor k = split(L.k(x));
    torch::Tensor v = split(L.v(x));
    torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2));
    if (additive.defined()) scores = scores + additive;
    torch::Tensor probs =
        Dropout(torch::softmax(scores, -1), c.attention_dropout, is_training());
    return L.out(torch::matmul(probs, v).transpose(1, 2).reshape({b, t, h}));
  }

  torch::Tensor FeedForward(EncoderLayer& L, const torch::Tensor& x) {
    const ModelConfig& c = config();
    torch::Tensor y = Activation(c.hidden_act, L.intermediate(x));
    y = Dropout(y, c.speech.activation_dropout, is_training());
    return Dropout(L.output(y), c.hidden_dropout, is_training());
  }

  std::vector<ConvLayer> conv_;
  torch::nn::LayerNorm projection_norm_{nullptr};
  Linear projection_{nullptr};
  torch::Tensor masked_spec_embed_;
  torch::Tensor pos_g_, pos_v_, pos_bias_;
  torch::nn::LayerNorm encoder_norm_{nullptr};
  std::vector<EncoderLayer> layers_;
  Linear lm_head_{nullptr}, projector_{nullptr}, classifier_{nullptr};
};

}  // namespace

absl::StatusOr<TaskModel> CreateSpeechModel(const ModelConfig& config,
                                            HeadKind head) {
  if (head != HeadKind::kNone && head != HeadKind::kCtc &&
      head != HeadKind::kSequenceClassification) {
    return absl::InvalidArgumentError(
        "wav2vec2 models recognise speech (CTC) or classify audio; there is "
        "no head for this task");
  }
  if (head == HeadKind::kSequenceClassification && config.num_labels() < 1) {
    return absl::InvalidArgumentError(
        "wav2vec2 audio classifier needs at least one label");
  }
  if (config.speech.conv_dim.empty() ||
      config.speech.conv_dim.size() != config.speech.conv_kernel.size() ||
      config.speech.conv_dim.size() != config.speech.conv_stride.size()) {
    return absl::InvalidArgumentError(
        "model config (wav2vec2): conv_dim, conv_kernel and conv_stride need "
        "one entry per layer each");
  }
  if (config.hidden_size % config.speech.num_conv_pos_embedding_groups != 0) {
    return absl::InvalidArgumentError(
        "model config (wav2vec2): num_conv_pos_embedding_groups must divide "
        "hidden_size");
  }
  try {
    return TaskModel(std::make_shared<Wav2Vec2Impl>(config, head));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building the wav2vec2 model: ",
                                            e.what_without_backtrace()));
  }
}

}  // namespace families
}  // namespace lathe
