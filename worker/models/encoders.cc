#include "worker/models/encoders.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/models/linear.h"
#include "worker/models/recompute.h"

namespace lathe {
namespace families {
namespace {

namespace F = torch::nn::functional;

// A plain container module, so parameter paths nest like Hugging Face's.
std::shared_ptr<torch::nn::Module> Holder(torch::nn::Module& parent,
                                          const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

Linear MakeLinear(torch::nn::Module& parent, const std::string& name,
                  int64_t in, int64_t out, double init_std) {
  // Lathe's Linear: torch.nn.Linear's names and numerics, and room for a
  // LoRA adapter (lora.h).
  auto l = parent.register_module(name, Linear(in, out, /*bias=*/true));
  torch::NoGradGuard no_grad;
  l->weight.normal_(0.0, init_std);
  l->bias.zero_();
  return l;
}

torch::nn::Embedding MakeEmbedding(torch::nn::Module& parent,
                                   const std::string& name, int64_t n,
                                   int64_t dim, double init_std,
                                   std::optional<int64_t> padding_idx) {
  torch::nn::EmbeddingOptions options(n, dim);
  if (padding_idx.has_value() && *padding_idx >= 0 && *padding_idx < n) {
    options.padding_idx(*padding_idx);
  }
  auto e = parent.register_module(name, torch::nn::Embedding(options));
  torch::NoGradGuard no_grad;
  e->weight.normal_(0.0, init_std);
  if (options.padding_idx().has_value()) {
    e->weight[*options.padding_idx()].zero_();
  }
  return e;
}

torch::nn::LayerNorm MakeLayerNorm(torch::nn::Module& parent,
                                   const std::string& name, int64_t dim,
                                   double eps) {
  // LayerNorm's own reset gives weight 1 and bias 0, as Hugging Face does.
  return parent.register_module(
      name, torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps)));
}

torch::Tensor Activation(const std::string& name, const torch::Tensor& x) {
  if (name == "gelu") return torch::gelu(x);
  if (name == "gelu_new") {
    // Hugging Face's NewGELUActivation spells out the tanh form.
    const double c = std::sqrt(2.0 / 3.14159265358979323846);
    return 0.5 * x * (1.0 + torch::tanh(c * (x + 0.044715 * torch::pow(x, 3))));
  }
  if (name == "gelu_pytorch_tanh") return torch::gelu(x, "tanh");
  if (name == "relu") return torch::relu(x);
  if (name == "silu" || name == "swish") return torch::silu(x);
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  // Validate() admits only the names above.
  return torch::gelu(x);
}

// torch.finfo(dtype).min: what Hugging Face fills masked scores with.
double LowestValue(torch::ScalarType t) {
  switch (t) {
    case torch::kHalf:
      return -65504.0;
    case torch::kBFloat16:
      return -3.3895313892515355e38;
    case torch::kDouble:
      return std::numeric_limits<double>::lowest();
    default:
      return std::numeric_limits<float>::lowest();
  }
}

std::string ClassPrefix(const ModelConfig& c) {
  switch (c.architecture) {
    case Architecture::kBert:
      return "Bert";
    case Architecture::kDistilBert:
      return "DistilBert";
    default:
      if (c.model_type == "xlm-roberta") return "XLMRoberta";
      if (c.model_type == "camembert") return "Camembert";
      return "Roberta";
  }
}

struct BertLayerParts {
  Linear query{nullptr}, key{nullptr}, value{nullptr};
  Linear attn_dense{nullptr};
  torch::nn::LayerNorm attn_norm{nullptr};
  Linear intermediate{nullptr}, output{nullptr};
  torch::nn::LayerNorm output_norm{nullptr};
};

// BERT and RoBERTa: identical encoders, different position ids and heads.
class BertLikeModelImpl : public TaskModelImpl {
 public:
  BertLikeModelImpl(const ModelConfig& c, HeadKind head, std::string cls)
      : TaskModelImpl(c, head),
        roberta_(c.architecture == Architecture::kRoberta),
        class_name_(std::move(cls)) {
    const double init_std = c.initializer_range;
    const int64_t h = c.hidden_size;
    prefix_ = roberta_ ? "roberta" : "bert";
    torch::nn::Module& base =
        head == HeadKind::kNone ? *this : *Holder(*this, prefix_);
    auto emb = Holder(base, "embeddings");
    word_ = MakeEmbedding(*emb, "word_embeddings", c.vocab_size, h, init_std,
                          c.pad_token_id);
    position_ = MakeEmbedding(
        *emb, "position_embeddings", c.max_position_embeddings, h, init_std,
        roberta_ ? c.pad_token_id : std::optional<int64_t>());
    token_type_ = MakeEmbedding(*emb, "token_type_embeddings",
                                c.type_vocab_size, h, init_std, std::nullopt);
    emb_norm_ = MakeLayerNorm(*emb, "LayerNorm", h, c.layer_norm_eps);
    auto layers = Holder(*Holder(base, "encoder"), "layer");
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      auto layer = Holder(*layers, std::to_string(i));
      auto attention = Holder(*layer, "attention");
      auto self = Holder(*attention, "self");
      auto attn_out = Holder(*attention, "output");
      auto inter = Holder(*layer, "intermediate");
      auto out = Holder(*layer, "output");
      BertLayerParts p;
      p.query = MakeLinear(*self, "query", h, h, init_std);
      p.key = MakeLinear(*self, "key", h, h, init_std);
      p.value = MakeLinear(*self, "value", h, h, init_std);
      p.attn_dense = MakeLinear(*attn_out, "dense", h, h, init_std);
      p.attn_norm = MakeLayerNorm(*attn_out, "LayerNorm", h, c.layer_norm_eps);
      p.intermediate =
          MakeLinear(*inter, "dense", h, c.intermediate_size, init_std);
      p.output = MakeLinear(*out, "dense", c.intermediate_size, h, init_std);
      p.output_norm = MakeLayerNorm(*out, "LayerNorm", h, c.layer_norm_eps);
      layers_.push_back(p);
    }
    // Hugging Face builds the pooler for the base model, and for BERT's
    // sequence classifier, which classifies the pooled [CLS] state.
    has_pooler_ = head == HeadKind::kNone ||
                  (!roberta_ && head == HeadKind::kSequenceClassification);
    if (has_pooler_) {
      pooler_ = MakeLinear(*Holder(base, "pooler"), "dense", h, h, init_std);
    }
    const int64_t labels = c.num_labels();
    switch (head) {
      case HeadKind::kSequenceClassification:
        if (roberta_) {
          auto classifier = Holder(*this, "classifier");
          cls_dense_ = MakeLinear(*classifier, "dense", h, h, init_std);
          classifier_ =
              MakeLinear(*classifier, "out_proj", h, labels, init_std);
          heads_ = {"classifier.dense.weight", "classifier.dense.bias",
                    "classifier.out_proj.weight", "classifier.out_proj.bias"};
        } else {
          classifier_ = MakeLinear(*this, "classifier", h, labels, init_std);
          heads_ = {"classifier.weight", "classifier.bias"};
        }
        break;
      case HeadKind::kTokenClassification:
        classifier_ = MakeLinear(*this, "classifier", h, labels, init_std);
        heads_ = {"classifier.weight", "classifier.bias"};
        break;
      case HeadKind::kQuestionAnswering:
        classifier_ = MakeLinear(*this, "qa_outputs", h, 2, init_std);
        heads_ = {"qa_outputs.weight", "qa_outputs.bias"};
        break;
      case HeadKind::kMaskedLm: {
        std::shared_ptr<torch::nn::Module> lm;
        if (roberta_) {
          lm = Holder(*this, "lm_head");
          mlm_dense_ = MakeLinear(*lm, "dense", h, h, init_std);
          mlm_norm_ = MakeLayerNorm(*lm, "layer_norm", h, c.layer_norm_eps);
          heads_ = {"lm_head.dense.weight", "lm_head.dense.bias",
                    "lm_head.layer_norm.weight", "lm_head.layer_norm.bias",
                    "lm_head.bias"};
          tied_ = {{"lm_head.decoder.weight",
                    "roberta.embeddings.word_embeddings.weight"},
                   {"lm_head.decoder.bias", "lm_head.bias"}};
        } else {
          lm = Holder(*Holder(*this, "cls"), "predictions");
          auto transform = Holder(*lm, "transform");
          mlm_dense_ = MakeLinear(*transform, "dense", h, h, init_std);
          mlm_norm_ =
              MakeLayerNorm(*transform, "LayerNorm", h, c.layer_norm_eps);
          heads_ = {"cls.predictions.transform.dense.weight",
                    "cls.predictions.transform.dense.bias",
                    "cls.predictions.transform.LayerNorm.weight",
                    "cls.predictions.transform.LayerNorm.bias",
                    "cls.predictions.bias"};
          tied_ = {{"cls.predictions.decoder.weight",
                    "bert.embeddings.word_embeddings.weight"},
                   {"cls.predictions.decoder.bias", "cls.predictions.bias"}};
        }
        mlm_bias_ =
            lm->register_parameter("bias", torch::zeros({c.vocab_size}));
        break;
      }
      default:
        break;
    }
  }

  bool SetGradientCheckpointing(bool on) override {
    checkpointing_ = on;
    return true;
  }

  // One encoder layer; `additive` [B, 1, 1, T] or undefined.
  torch::Tensor Layer(BertLayerParts& p, const torch::Tensor& x,
                      const torch::Tensor& additive) {
    const ModelConfig& c = config();
    const int64_t b = x.size(0), t = x.size(1), h = x.size(2);
    const int64_t heads = c.num_attention_heads, d = h / heads;
    const double scale = std::sqrt(static_cast<double>(d));
    auto split = [&](const torch::Tensor& y) {
      return y.view({b, t, heads, d}).transpose(1, 2);
    };
    torch::Tensor q = split(p.query(x));
    torch::Tensor k = split(p.key(x));
    torch::Tensor v = split(p.value(x));
    torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / scale;
    if (additive.defined()) scores = scores + additive;
    torch::Tensor probs =
        Dropout(torch::softmax(scores, -1), c.attention_dropout);
    torch::Tensor context =
        torch::matmul(probs, v).transpose(1, 2).reshape({b, t, h});
    torch::Tensor attn =
        p.attn_norm(Dropout(p.attn_dense(context), c.hidden_dropout) + x);
    torch::Tensor inter = Activation(c.hidden_act, p.intermediate(attn));
    return p.output_norm(Dropout(p.output(inter), c.hidden_dropout) + attn);
  }

  // The encoder's last hidden states [B, T, H], before any head.
  torch::Tensor ForwardHidden(const ModelInputs& in) override {
    const ModelConfig& c = config();
    const torch::Tensor& ids = in.input_ids;
    torch::Tensor positions;
    if (roberta_) {
      // Positions count real tokens from padding_idx + 1; padding tokens
      // keep padding_idx (Hugging Face's create_position_ids_from_input_ids).
      const int64_t pad = c.pad_token_id.value_or(1);
      torch::Tensor real = ids.ne(pad).to(torch::kLong);
      positions = torch::cumsum(real, 1) * real + pad;
    } else {
      positions = torch::arange(ids.size(1), ids.options().dtype(torch::kLong))
                      .unsqueeze(0);
    }
    torch::Tensor types = in.token_type_ids.defined()
                              ? in.token_type_ids
                              : torch::zeros_like(ids, torch::kLong);
    torch::Tensor x = word_(ids) + token_type_(types);
    x = x + position_(positions);
    x = Dropout(emb_norm_(x), c.hidden_dropout);

    torch::Tensor additive;
    if (in.attention_mask.defined()) {
      additive = (1.0 - in.attention_mask.to(x.scalar_type()))
                     .unsqueeze(1)
                     .unsqueeze(2) *
                 LowestValue(x.scalar_type());
    }
    for (BertLayerParts& p : layers_) {
      if (checkpointing_ && is_training() && RecordingGradients()) {
        BertLayerParts* part = &p;
        x = RecomputeInBackward(
            [this, part, additive](const torch::Tensor& y) {
              return Layer(*part, y, additive);
            },
            x);
      } else {
        x = Layer(p, x, additive);
      }
    }

    return x;
  }

  bool has_lm_head() const override { return head() == HeadKind::kMaskedLm; }

  // The masked-LM head on hidden states [..., H].
  torch::Tensor ProjectHidden(const torch::Tensor& x) override {
    TORCH_CHECK(has_lm_head(), "ProjectHidden needs a masked-LM head");
    const ModelConfig& c = config();
    // RoBERTa's LM head always uses the erf GELU; BERT's the config's.
    torch::Tensor y = mlm_dense_(x);
    y = roberta_ ? torch::gelu(y) : Activation(c.hidden_act, y);
    // Under bf16 autocast the dense output is bfloat16; LayerNorm's
    // weights are float32 and CPU autocast does not cast for it.
    return F::linear(mlm_norm_(y.to(torch::kFloat)), word_->weight, mlm_bias_);
  }

  torch::Tensor forward(const ModelInputs& in) override {
    const ModelConfig& c = config();
    torch::Tensor x = ForwardHidden(in);
    switch (head()) {
      case HeadKind::kSequenceClassification:
        if (roberta_) {
          torch::Tensor y = Dropout(x.select(1, 0), c.classifier_dropout);
          y = Dropout(torch::tanh(cls_dense_(y)), c.classifier_dropout);
          return classifier_(y);
        }
        return classifier_(Dropout(torch::tanh(pooler_(x.select(1, 0))),
                                   c.classifier_dropout));
      case HeadKind::kTokenClassification:
        return classifier_(Dropout(x, c.classifier_dropout));
      case HeadKind::kQuestionAnswering:
        return classifier_(x);
      case HeadKind::kMaskedLm:
        return ProjectHidden(x);
      default:
        return x;
    }
  }

  std::string architecture_class() const override { return class_name_; }
  std::string base_prefix() const override { return prefix_; }
  std::vector<std::string> head_parameter_names() const override {
    return heads_;
  }
  std::vector<std::pair<std::string, std::string>> tied_parameters()
      const override {
    return tied_;
  }
  bool IgnoredOnLoad(const std::string& name) const override {
    // Buffers that older versions saved, and the pooler of checkpoints whose
    // class had one when this class has none (Hugging Face drops it too).
    if (name == "embeddings.position_ids" ||
        name == "embeddings.token_type_ids") {
      return true;
    }
    return !has_pooler_ && absl::StartsWith(name, "pooler.");
  }

 private:
  torch::Tensor Dropout(const torch::Tensor& x, double p) {
    if (!is_training() || p == 0) return x;
    return F::dropout(x, F::DropoutFuncOptions().p(p).training(true));
  }

  bool roberta_;
  bool has_pooler_ = false;
  std::string class_name_;
  std::string prefix_;
  std::vector<std::string> heads_;
  std::vector<std::pair<std::string, std::string>> tied_;
  torch::nn::Embedding word_{nullptr}, position_{nullptr}, token_type_{nullptr};
  torch::nn::LayerNorm emb_norm_{nullptr};
  std::vector<BertLayerParts> layers_;
  bool checkpointing_ = false;
  Linear pooler_{nullptr};
  Linear cls_dense_{nullptr};
  Linear classifier_{nullptr};
  Linear mlm_dense_{nullptr};
  torch::nn::LayerNorm mlm_norm_{nullptr};
  torch::Tensor mlm_bias_;
};

struct DistilLayerParts {
  Linear q{nullptr}, k{nullptr}, v{nullptr}, out{nullptr};
  torch::nn::LayerNorm sa_norm{nullptr};
  Linear lin1{nullptr}, lin2{nullptr};
  torch::nn::LayerNorm out_norm{nullptr};
};

// DistilBERT's LayerNorms use a fixed epsilon whatever the config says.
constexpr double kDistilBertEps = 1e-12;

class DistilBertModelImpl : public TaskModelImpl {
 public:
  DistilBertModelImpl(const ModelConfig& c, HeadKind head, std::string cls)
      : TaskModelImpl(c, head), class_name_(std::move(cls)) {
    const double init_std = c.initializer_range;
    const int64_t h = c.hidden_size;
    qa_dropout_ = c.original.is_object() && c.original.contains("qa_dropout") &&
                          c.original["qa_dropout"].is_number()
                      ? c.original["qa_dropout"].get<double>()
                      : 0.1;
    torch::nn::Module& base =
        head == HeadKind::kNone ? *this : *Holder(*this, "distilbert");
    auto emb = Holder(base, "embeddings");
    word_ = MakeEmbedding(*emb, "word_embeddings", c.vocab_size, h, init_std,
                          c.pad_token_id);
    position_ =
        MakeEmbedding(*emb, "position_embeddings", c.max_position_embeddings, h,
                      init_std, std::nullopt);
    if (c.sinusoidal_positions) {
      // Fixed sin/cos table: position / 10000^(2 * (j / 2) / dim), sin on
      // even columns and cos on odd ones, computed in double, not trained.
      torch::Tensor pos =
          torch::arange(c.max_position_embeddings, torch::kDouble).unsqueeze(1);
      torch::Tensor j = torch::arange(h, torch::kDouble);
      torch::Tensor expo = 2.0 * torch::floor(j / 2.0) / static_cast<double>(h);
      torch::Tensor angle = pos / torch::pow(10000.0, expo).unsqueeze(0);
      torch::Tensor table = torch::empty_like(angle);
      using torch::indexing::None;
      using torch::indexing::Slice;
      table.index_put_({Slice(), Slice(0, None, 2)},
                       torch::sin(angle.index({Slice(), Slice(0, None, 2)})));
      table.index_put_({Slice(), Slice(1, None, 2)},
                       torch::cos(angle.index({Slice(), Slice(1, None, 2)})));
      torch::NoGradGuard no_grad;
      position_->weight.copy_(table.to(torch::kFloat));
      position_->weight.set_requires_grad(false);
    }
    emb_norm_ = MakeLayerNorm(*emb, "LayerNorm", h, kDistilBertEps);
    auto layers = Holder(*Holder(base, "transformer"), "layer");
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      auto layer = Holder(*layers, std::to_string(i));
      auto attention = Holder(*layer, "attention");
      auto ffn = Holder(*layer, "ffn");
      DistilLayerParts p;
      p.q = MakeLinear(*attention, "q_lin", h, h, init_std);
      p.k = MakeLinear(*attention, "k_lin", h, h, init_std);
      p.v = MakeLinear(*attention, "v_lin", h, h, init_std);
      p.out = MakeLinear(*attention, "out_lin", h, h, init_std);
      p.sa_norm = MakeLayerNorm(*layer, "sa_layer_norm", h, kDistilBertEps);
      p.lin1 = MakeLinear(*ffn, "lin1", h, c.intermediate_size, init_std);
      p.lin2 = MakeLinear(*ffn, "lin2", c.intermediate_size, h, init_std);
      p.out_norm =
          MakeLayerNorm(*layer, "output_layer_norm", h, kDistilBertEps);
      layers_.push_back(p);
    }
    const int64_t labels = c.num_labels();
    switch (head) {
      case HeadKind::kSequenceClassification:
        pre_classifier_ = MakeLinear(*this, "pre_classifier", h, h, init_std);
        classifier_ = MakeLinear(*this, "classifier", h, labels, init_std);
        heads_ = {"pre_classifier.weight", "pre_classifier.bias",
                  "classifier.weight", "classifier.bias"};
        break;
      case HeadKind::kTokenClassification:
        classifier_ = MakeLinear(*this, "classifier", h, labels, init_std);
        heads_ = {"classifier.weight", "classifier.bias"};
        break;
      case HeadKind::kQuestionAnswering:
        classifier_ = MakeLinear(*this, "qa_outputs", h, 2, init_std);
        heads_ = {"qa_outputs.weight", "qa_outputs.bias"};
        break;
      case HeadKind::kMaskedLm: {
        vocab_transform_ = MakeLinear(*this, "vocab_transform", h, h, init_std);
        vocab_norm_ =
            MakeLayerNorm(*this, "vocab_layer_norm", h, kDistilBertEps);
        auto projector = Holder(*this, "vocab_projector");
        vocab_bias_ =
            projector->register_parameter("bias", torch::zeros({c.vocab_size}));
        heads_ = {"vocab_transform.weight", "vocab_transform.bias",
                  "vocab_layer_norm.weight", "vocab_layer_norm.bias",
                  "vocab_projector.bias"};
        tied_ = {{"vocab_projector.weight",
                  "distilbert.embeddings.word_embeddings.weight"}};
        break;
      }
      default:
        break;
    }
  }

  bool SetGradientCheckpointing(bool on) override {
    checkpointing_ = on;
    return true;
  }

  // One transformer block; `masked` [B, 1, 1, T] (true at padding keys) or
  // undefined.
  torch::Tensor Layer(DistilLayerParts& p, const torch::Tensor& x,
                      const torch::Tensor& masked) {
    const ModelConfig& c = config();
    const int64_t b = x.size(0), t = x.size(1), h = x.size(2);
    const int64_t heads = c.num_attention_heads, d = h / heads;
    const double scale = std::sqrt(static_cast<double>(d));
    auto split = [&](const torch::Tensor& y) {
      return y.view({b, t, heads, d}).transpose(1, 2);
    };
    // DistilBERT scales the queries before the product and replaces
    // (rather than adds to) the scores of padding keys.
    torch::Tensor q = split(p.q(x)) / scale;
    torch::Tensor k = split(p.k(x));
    torch::Tensor v = split(p.v(x));
    torch::Tensor scores = torch::matmul(q, k.transpose(2, 3));
    if (masked.defined()) {
      scores = scores.masked_fill(masked, LowestValue(scores.scalar_type()));
    }
    torch::Tensor weights =
        Dropout(torch::softmax(scores, -1), c.attention_dropout);
    torch::Tensor context =
        torch::matmul(weights, v).transpose(1, 2).reshape({b, t, h});
    torch::Tensor sa = p.sa_norm(p.out(context) + x);
    torch::Tensor ffn = p.lin2(Activation(c.hidden_act, p.lin1(sa)));
    return p.out_norm(Dropout(ffn, c.hidden_dropout) + sa);
  }

  // The encoder's last hidden states [B, T, H], before any head.
  torch::Tensor ForwardHidden(const ModelInputs& in) override {
    const ModelConfig& c = config();
    const torch::Tensor& ids = in.input_ids;
    torch::Tensor positions =
        torch::arange(ids.size(1), ids.options().dtype(torch::kLong))
            .unsqueeze(0);
    torch::Tensor x = word_(ids) + position_(positions);
    x = Dropout(emb_norm_(x), c.hidden_dropout);

    torch::Tensor masked;  // [B, 1, 1, T], true where padding
    if (in.attention_mask.defined()) {
      masked = in.attention_mask.eq(0).unsqueeze(1).unsqueeze(2);
    }
    for (DistilLayerParts& p : layers_) {
      if (checkpointing_ && is_training() && RecordingGradients()) {
        DistilLayerParts* part = &p;
        x = RecomputeInBackward(
            [this, part, masked](const torch::Tensor& y) {
              return Layer(*part, y, masked);
            },
            x);
      } else {
        x = Layer(p, x, masked);
      }
    }

    return x;
  }

  bool has_lm_head() const override { return head() == HeadKind::kMaskedLm; }

  // The masked-LM head on hidden states [..., H].
  torch::Tensor ProjectHidden(const torch::Tensor& x) override {
    TORCH_CHECK(has_lm_head(), "ProjectHidden needs a masked-LM head");
    torch::Tensor y = Activation(config().hidden_act, vocab_transform_(x));
    // float32 for LayerNorm under bf16 autocast (see BERT's head).
    return F::linear(vocab_norm_(y.to(torch::kFloat)), word_->weight,
                     vocab_bias_);
  }

  torch::Tensor forward(const ModelInputs& in) override {
    const ModelConfig& c = config();
    torch::Tensor x = ForwardHidden(in);
    switch (head()) {
      case HeadKind::kSequenceClassification: {
        torch::Tensor y = torch::relu(pre_classifier_(x.select(1, 0)));
        return classifier_(Dropout(y, c.classifier_dropout));
      }
      case HeadKind::kTokenClassification:
        return classifier_(Dropout(x, c.hidden_dropout));
      case HeadKind::kQuestionAnswering:
        return classifier_(Dropout(x, qa_dropout_));
      case HeadKind::kMaskedLm:
        return ProjectHidden(x);
      default:
        return x;
    }
  }

  std::string architecture_class() const override { return class_name_; }
  std::string base_prefix() const override { return "distilbert"; }
  std::vector<std::string> head_parameter_names() const override {
    return heads_;
  }
  std::vector<std::pair<std::string, std::string>> tied_parameters()
      const override {
    return tied_;
  }
  bool IgnoredOnLoad(const std::string& name) const override {
    return name == "embeddings.position_ids";
  }

 private:
  torch::Tensor Dropout(const torch::Tensor& x, double p) {
    if (!is_training() || p == 0) return x;
    return F::dropout(x, F::DropoutFuncOptions().p(p).training(true));
  }

  std::string class_name_;
  double qa_dropout_ = 0.1;
  std::vector<std::string> heads_;
  std::vector<std::pair<std::string, std::string>> tied_;
  torch::nn::Embedding word_{nullptr}, position_{nullptr};
  torch::nn::LayerNorm emb_norm_{nullptr};
  std::vector<DistilLayerParts> layers_;
  bool checkpointing_ = false;
  Linear pre_classifier_{nullptr};
  Linear classifier_{nullptr};
  Linear vocab_transform_{nullptr};
  torch::nn::LayerNorm vocab_norm_{nullptr};
  torch::Tensor vocab_bias_;
};

}  // namespace

absl::StatusOr<std::string> EncoderClassName(const ModelConfig& config,
                                             HeadKind head) {
  const std::string prefix = ClassPrefix(config);
  switch (head) {
    case HeadKind::kNone:
      return prefix + "Model";
    case HeadKind::kSequenceClassification:
      return prefix + "ForSequenceClassification";
    case HeadKind::kTokenClassification:
      return prefix + "ForTokenClassification";
    case HeadKind::kQuestionAnswering:
      return prefix + "ForQuestionAnswering";
    case HeadKind::kMaskedLm:
      return prefix + "ForMaskedLM";
    case HeadKind::kCtc:
      return absl::InvalidArgumentError(absl::StrCat(
          config.model_type, " models have no CTC head; use wav2vec2"));
    case HeadKind::kCausalLm:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(config.model_type,
                   " models have no causal language-model head in Lathe; "
                   "use a decoder family (gpt2, llama, ...)"));
}

absl::StatusOr<TaskModel> CreateEncoderModel(const ModelConfig& config,
                                             HeadKind head) {
  auto cls = EncoderClassName(config, head);
  if (!cls.ok()) return cls.status();
  if ((head == HeadKind::kSequenceClassification ||
       head == HeadKind::kTokenClassification) &&
      config.num_labels() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(*cls, " needs at least one label (id2label is empty)"));
  }
  try {
    if (config.architecture == Architecture::kDistilBert) {
      return TaskModel(
          std::make_shared<DistilBertModelImpl>(config, head, *cls));
    }
    if (config.architecture == Architecture::kBert ||
        config.architecture == Architecture::kRoberta) {
      return TaskModel(std::make_shared<BertLikeModelImpl>(config, head, *cls));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building ", *cls, ": ", e.what()));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "model_type ", config.model_type, " is not an encoder family"));
}

}  // namespace families
}  // namespace lathe
