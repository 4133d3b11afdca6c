#include "worker/models/vision.h"

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace lathe {
namespace families {
namespace {

namespace F = torch::nn::functional;

// A plain container module, so parameter paths nest like Hugging Face's.
std::shared_ptr<torch::nn::Module> Holder(torch::nn::Module& parent,
                                          const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

// Hugging Face initialises ViT with a normal truncated at two standard
// deviations; out-of-range draws are redrawn until none remain.
void TruncatedNormal(torch::Tensor t, double std) {
  torch::NoGradGuard no_grad;
  t.normal_(0.0, std);
  for (int round = 0; round < 64; ++round) {
    torch::Tensor outside = t.abs() > 2.0 * std;
    if (!outside.any().item<bool>()) break;
    t.copy_(torch::where(outside, torch::randn_like(t) * std, t));
  }
}

torch::nn::Linear MakeLinear(torch::nn::Module& parent, const std::string& name,
                             int64_t in, int64_t out, double init_std,
                             bool bias = true) {
  auto l = parent.register_module(
      name, torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias)));
  TruncatedNormal(l->weight, init_std);
  if (bias) {
    torch::NoGradGuard no_grad;
    l->bias.zero_();
  }
  return l;
}

torch::nn::LayerNorm MakeLayerNorm(torch::nn::Module& parent,
                                   const std::string& name, int64_t dim,
                                   double eps) {
  return parent.register_module(
      name, torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps)));
}

torch::Tensor Activation(const std::string& name, const torch::Tensor& x) {
  if (name == "gelu") return torch::gelu(x);
  if (name == "gelu_new") {
    const double c = std::sqrt(2.0 / 3.14159265358979323846);
    return 0.5 * x * (1.0 + torch::tanh(c * (x + 0.044715 * torch::pow(x, 3))));
  }
  if (name == "gelu_pytorch_tanh") return torch::gelu(x, "tanh");
  if (name == "relu") return torch::relu(x);
  if (name == "silu" || name == "swish") return torch::silu(x);
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  // ModelConfig::Validate admits only the names above.
  return torch::gelu(x);
}

class VisionModelBase : public TaskModelImpl {
 protected:
  using TaskModelImpl::TaskModelImpl;

  torch::Tensor Dropout(const torch::Tensor& x, double p) {
    if (!is_training() || p == 0) return x;
    return F::dropout(x, F::DropoutFuncOptions().p(p).training(true));
  }

  void CheckPixels(const torch::Tensor& pixels) const {
    TORCH_CHECK(pixels.defined(), architecture_class(),
                " needs pixel_values [B, C, H, W]");
    TORCH_CHECK(pixels.dim() == 4 && pixels.size(1) == config().num_channels,
                architecture_class(), " expects pixel_values [B, ",
                config().num_channels, ", H, W], got ", pixels.sizes());
  }
};

struct VitLayerParts {
  torch::nn::LayerNorm before{nullptr}, after{nullptr};
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  torch::nn::Linear attn_dense{nullptr}, intermediate{nullptr}, output{nullptr};
};

class VitModelImpl : public VisionModelBase {
 public:
  VitModelImpl(const ModelConfig& c, HeadKind head) : VisionModelBase(c, head) {
    const double init_std = c.initializer_range;
    const int64_t h = c.hidden_size;
    const int64_t side = c.image_size / c.patch_size;
    torch::nn::Module& base =
        head == HeadKind::kNone ? *this : *Holder(*this, "vit");
    auto emb = Holder(base, "embeddings");
    cls_token_ = emb->register_parameter("cls_token", torch::empty({1, 1, h}));
    position_ = emb->register_parameter("position_embeddings",
                                        torch::empty({1, side * side + 1, h}));
    TruncatedNormal(cls_token_, init_std);
    TruncatedNormal(position_, init_std);
    projection_ = Holder(*emb, "patch_embeddings")
                      ->register_module(
                          "projection",
                          torch::nn::Conv2d(torch::nn::Conv2dOptions(
                                                c.num_channels, h, c.patch_size)
                                                .stride(c.patch_size)));
    TruncatedNormal(projection_->weight, init_std);
    {
      torch::NoGradGuard no_grad;
      projection_->bias.zero_();
    }
    auto layers = Holder(*Holder(base, "encoder"), "layer");
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      auto layer = Holder(*layers, std::to_string(i));
      auto attention = Holder(*layer, "attention");
      auto self = Holder(*attention, "attention");
      VitLayerParts p;
      p.before = MakeLayerNorm(*layer, "layernorm_before", h, c.layer_norm_eps);
      p.query = MakeLinear(*self, "query", h, h, init_std, c.qkv_bias);
      p.key = MakeLinear(*self, "key", h, h, init_std, c.qkv_bias);
      p.value = MakeLinear(*self, "value", h, h, init_std, c.qkv_bias);
      p.attn_dense =
          MakeLinear(*Holder(*attention, "output"), "dense", h, h, init_std);
      p.after = MakeLayerNorm(*layer, "layernorm_after", h, c.layer_norm_eps);
      p.intermediate = MakeLinear(*Holder(*layer, "intermediate"), "dense", h,
                                  c.intermediate_size, init_std);
      p.output = MakeLinear(*Holder(*layer, "output"), "dense",
                            c.intermediate_size, h, init_std);
      layers_.push_back(p);
    }
    final_norm_ = MakeLayerNorm(base, "layernorm", h, c.layer_norm_eps);
    if (head == HeadKind::kNone) {
      // ViTModel's pooler: kept so base checkpoints round-trip; the forward
      // returns the hidden states, as the base model's first output.
      pooler_ = MakeLinear(*Holder(base, "pooler"), "dense", h, h, init_std);
    } else {
      classifier_ =
          MakeLinear(*this, "classifier", h, c.num_labels(), init_std);
    }
  }

  torch::Tensor forward(const ModelInputs& in) override {
    const ModelConfig& c = config();
    CheckPixels(in.pixel_values);
    TORCH_CHECK(in.pixel_values.size(2) == c.image_size &&
                    in.pixel_values.size(3) == c.image_size,
                "ViT expects ", c.image_size, "x", c.image_size,
                " images, got ", in.pixel_values.size(2), "x",
                in.pixel_values.size(3));
    torch::Tensor x = projection_(in.pixel_values).flatten(2).transpose(1, 2);
    const int64_t b = x.size(0);
    x = torch::cat({cls_token_.expand({b, -1, -1}), x}, 1) + position_;
    x = Dropout(x, c.hidden_dropout);
    const int64_t t = x.size(1), h = x.size(2);
    const int64_t heads = c.num_attention_heads, d = h / heads;
    const double scale = std::sqrt(static_cast<double>(d));
    auto split = [&](const torch::Tensor& y) {
      return y.view({b, t, heads, d}).transpose(1, 2);
    };
    for (VitLayerParts& p : layers_) {
      torch::Tensor normed = p.before(x);
      torch::Tensor q = split(p.query(normed));
      torch::Tensor k = split(p.key(normed));
      torch::Tensor v = split(p.value(normed));
      torch::Tensor probs = Dropout(
          torch::softmax(torch::matmul(q, k.transpose(-1, -2)) / scale, -1),
          c.attention_dropout);
      torch::Tensor context =
          torch::matmul(probs, v).transpose(1, 2).reshape({b, t, h});
      x = Dropout(p.attn_dense(context), c.hidden_dropout) + x;
      torch::Tensor y = Activation(c.hidden_act, p.intermediate(p.after(x)));
      x = Dropout(p.output(y), c.hidden_dropout) + x;
    }
    x = final_norm_(x);
    if (head() == HeadKind::kSequenceClassification) {
      return classifier_(x.select(1, 0));
    }
    return x;
  }

  std::string architecture_class() const override {
    return head() == HeadKind::kNone ? "ViTModel" : "ViTForImageClassification";
  }
  std::string base_prefix() const override { return "vit"; }
  std::vector<std::string> head_parameter_names() const override {
    if (head() == HeadKind::kNone) return {};
    return {"classifier.weight", "classifier.bias"};
  }
  bool IgnoredOnLoad(const std::string& name) const override {
    // Masked-image-modelling checkpoints carry a mask token; a base
    // checkpoint's pooler is unused by the classifier (Hugging Face drops
    // both the same way).
    if (name == "embeddings.mask_token") return true;
    return head() != HeadKind::kNone && absl::StartsWith(name, "pooler.");
  }

 private:
  torch::Tensor cls_token_, position_;
  torch::nn::Conv2d projection_{nullptr};
  std::vector<VitLayerParts> layers_;
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Linear pooler_{nullptr}, classifier_{nullptr};
};

class CnnModelImpl : public VisionModelBase {
 public:
  CnnModelImpl(const ModelConfig& c, HeadKind head) : VisionModelBase(c, head) {
    torch::nn::Module& base =
        head == HeadKind::kNone ? *this : *Holder(*this, "cnn");
    auto encoder = Holder(base, "encoder");
    int64_t in = c.num_channels;
    for (size_t i = 0; i < c.hidden_sizes.size(); ++i) {
      const int64_t out = c.hidden_sizes[i];
      auto conv =
          Holder(*encoder, std::to_string(i))
              ->register_module(
                  "conv", torch::nn::Conv2d(
                              torch::nn::Conv2dOptions(in, out, 3).padding(1)));
      // He initialisation keeps activations at a steady scale through the
      // rectified blocks, so a fresh network trains from the first step.
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanIn,
                                       torch::kReLU);
      {
        torch::NoGradGuard no_grad;
        conv->bias.zero_();
      }
      convs_.push_back(conv);
      in = out;
    }
    // The last feature map's side: each block halves it (rounding down)
    // while it is at least 2.
    side_ = c.image_size;
    for (size_t i = 0; i < c.hidden_sizes.size(); ++i) {
      if (side_ >= 2) side_ /= 2;
    }
    flatten_ = c.cnn_pooling == "flatten";
    if (head != HeadKind::kNone) {
      classifier_ =
          MakeLinear(*this, "classifier", flatten_ ? in * side_ * side_ : in,
                     c.num_labels(), c.initializer_range);
    }
  }

  torch::Tensor forward(const ModelInputs& in) override {
    CheckPixels(in.pixel_values);
    torch::Tensor x = in.pixel_values;
    for (torch::nn::Conv2d& conv : convs_) {
      x = Activation(config().hidden_act, conv(x));
      if (x.size(2) >= 2 && x.size(3) >= 2) x = torch::max_pool2d(x, {2, 2});
    }
    if (flatten_) {
      TORCH_CHECK(x.size(2) == side_ && x.size(3) == side_,
                  "lathe-cnn with pooling \"flatten\" takes ",
                  config().image_size, "x", config().image_size,
                  " images; got ", in.pixel_values.size(2), "x",
                  in.pixel_values.size(3));
      x = x.flatten(1);
    } else {
      x = x.mean({2, 3});
    }
    if (head() == HeadKind::kNone) return x;
    return classifier_(Dropout(x, config().classifier_dropout));
  }

  std::string architecture_class() const override {
    return head() == HeadKind::kNone ? "LatheCnnModel"
                                     : "LatheCnnForImageClassification";
  }
  std::string base_prefix() const override { return "cnn"; }
  std::vector<std::string> head_parameter_names() const override {
    if (head() == HeadKind::kNone) return {};
    return {"classifier.weight", "classifier.bias"};
  }

 private:
  std::vector<torch::nn::Conv2d> convs_;
  torch::nn::Linear classifier_{nullptr};
  int64_t side_ = 1;
  bool flatten_ = false;
};

}  // namespace

absl::StatusOr<TaskModel> CreateVisionModel(const ModelConfig& config,
                                            HeadKind head) {
  const std::string family = ArchitectureName(config.architecture);
  if (head != HeadKind::kNone && head != HeadKind::kSequenceClassification) {
    return absl::InvalidArgumentError(absl::StrCat(
        family, " models only classify images (no head for this task)"));
  }
  if (head == HeadKind::kSequenceClassification && config.num_labels() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(family, " image classifier needs at least one label"));
  }
  if (config.image_size < 1 || config.num_channels < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config (", family,
                     "): image_size and num_channels must be "
                     "positive"));
  }
  try {
    if (config.architecture == Architecture::kCnn) {
      if (config.hidden_sizes.empty()) {
        return absl::InvalidArgumentError(
            "model config (lathe-cnn): hidden_sizes is empty");
      }
      for (int64_t s : config.hidden_sizes) {
        if (s < 1) {
          return absl::InvalidArgumentError(
              "model config (lathe-cnn): hidden_sizes entries must be "
              "positive");
        }
      }
      return TaskModel(std::make_shared<CnnModelImpl>(config, head));
    }
    if (config.patch_size < 1 || config.patch_size > config.image_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("model config (vit): patch_size ", config.patch_size,
                       " must be in [1, image_size ", config.image_size, "]"));
    }
    return TaskModel(std::make_shared<VitModelImpl>(config, head));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(
        "building the ", family, " model: ", e.what_without_backtrace()));
  }
}

}  // namespace families
}  // namespace lathe
