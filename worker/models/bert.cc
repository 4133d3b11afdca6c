#include "worker/models/bert.h"

#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "common/status.h"

namespace lathe {
namespace {

void InitLinear(torch::nn::Linear& l, double std) {
  torch::NoGradGuard no_grad;
  l->weight.normal_(0.0, std);
  if (l->bias.defined()) l->bias.zero_();
}

void InitEmbedding(torch::nn::Embedding& e, double std, int64_t pad = -1) {
  torch::NoGradGuard no_grad;
  e->weight.normal_(0.0, std);
  if (pad >= 0) e->weight[pad].zero_();
}

torch::nn::LayerNorm MakeLayerNorm(const BertConfig& c) {
  return torch::nn::LayerNorm(
      torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

// A plain container module, so parameter paths nest like Hugging Face's.
std::shared_ptr<torch::nn::Module> Holder(torch::nn::Module& parent,
                                          const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

absl::StatusOr<torch::Tensor> ToFloatTensor(const SafetensorsFile::Tensor& t) {
  torch::ScalarType type;
  if (t.dtype == "F32") {
    type = torch::kFloat32;
  } else if (t.dtype == "F16") {
    type = torch::kFloat16;
  } else if (t.dtype == "BF16") {
    type = torch::kBFloat16;
  } else if (t.dtype == "F64") {
    type = torch::kFloat64;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype ", t.dtype, " is not a floating-point type"));
  }
  // Copies rather than wraps: offsets in the file need not be aligned.
  torch::Tensor out = torch::empty(t.shape, torch::TensorOptions().dtype(type));
  if (t.nbytes > 0) std::memcpy(out.data_ptr(), t.data, t.nbytes);
  return out.to(torch::kFloat32);
}

}  // namespace

BertLayerImpl::BertLayerImpl(const BertConfig& c)
    : heads_(c.num_attention_heads),
      head_dim_(c.hidden_size / c.num_attention_heads) {
  auto attention = Holder(*this, "attention");
  auto self = Holder(*attention, "self");
  query_ = self->register_module(
      "query", torch::nn::Linear(c.hidden_size, c.hidden_size));
  key_ = self->register_module("key",
                               torch::nn::Linear(c.hidden_size, c.hidden_size));
  value_ = self->register_module(
      "value", torch::nn::Linear(c.hidden_size, c.hidden_size));
  auto attn_output = Holder(*attention, "output");
  attn_out_ = attn_output->register_module(
      "dense", torch::nn::Linear(c.hidden_size, c.hidden_size));
  attn_norm_ = attn_output->register_module("LayerNorm", MakeLayerNorm(c));
  auto intermediate = Holder(*this, "intermediate");
  intermediate_ = intermediate->register_module(
      "dense", torch::nn::Linear(c.hidden_size, c.intermediate_size));
  auto output = Holder(*this, "output");
  out_ = output->register_module(
      "dense", torch::nn::Linear(c.intermediate_size, c.hidden_size));
  out_norm_ = output->register_module("LayerNorm", MakeLayerNorm(c));
  attn_dropout_ = register_module(
      "attn_dropout", torch::nn::Dropout(c.attention_probs_dropout_prob));
  hidden_dropout_ = register_module("hidden_dropout",
                                    torch::nn::Dropout(c.hidden_dropout_prob));
  for (torch::nn::Linear* l :
       {&query_, &key_, &value_, &attn_out_, &intermediate_, &out_}) {
    InitLinear(*l, c.initializer_range);
  }
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& x,
                                     const torch::Tensor& additive_mask) {
  const int64_t b = x.size(0), t = x.size(1), h = x.size(2);
  auto split = [&](const torch::Tensor& y) {
    return y.view({b, t, heads_, head_dim_}).transpose(1, 2);  // [B, nh, T, d]
  };
  torch::Tensor q = split(query_(x));
  torch::Tensor k = split(key_(x));
  torch::Tensor v = split(value_(x));
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) /
                         std::sqrt(static_cast<double>(head_dim_));
  scores = scores + additive_mask;
  torch::Tensor probs = attn_dropout_(torch::softmax(scores, -1));
  torch::Tensor context =
      torch::matmul(probs, v).transpose(1, 2).contiguous().view({b, t, h});
  torch::Tensor attn = attn_norm_(hidden_dropout_(attn_out_(context)) + x);
  torch::Tensor inter = torch::gelu(intermediate_(attn));
  return out_norm_(hidden_dropout_(out_(inter)) + attn);
}

BertModelImpl::BertModelImpl(const BertConfig& c) {
  auto embeddings = Holder(*this, "embeddings");
  word_embeddings_ = embeddings->register_module(
      "word_embeddings",
      torch::nn::Embedding(
          torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size)
              .padding_idx(c.pad_token_id)));
  position_embeddings_ = embeddings->register_module(
      "position_embeddings",
      torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
  token_type_embeddings_ = embeddings->register_module(
      "token_type_embeddings",
      torch::nn::Embedding(c.type_vocab_size, c.hidden_size));
  embeddings_norm_ = embeddings->register_module("LayerNorm", MakeLayerNorm(c));
  dropout_ =
      register_module("dropout", torch::nn::Dropout(c.hidden_dropout_prob));
  InitEmbedding(word_embeddings_, c.initializer_range, c.pad_token_id);
  InitEmbedding(position_embeddings_, c.initializer_range);
  InitEmbedding(token_type_embeddings_, c.initializer_range);
  auto encoder = Holder(*this, "encoder");
  layers_ = encoder->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers_->push_back(BertLayer(c));
  }
  auto pooler = Holder(*this, "pooler");
  pooler_ = pooler->register_module(
      "dense", torch::nn::Linear(c.hidden_size, c.hidden_size));
  InitLinear(pooler_, c.initializer_range);
}

torch::Tensor BertModelImpl::forward(const torch::Tensor& input_ids,
                                     const torch::Tensor& token_type_ids,
                                     const torch::Tensor& attention_mask) {
  const int64_t t = input_ids.size(1);
  torch::Tensor positions =
      torch::arange(
          t,
          torch::TensorOptions().dtype(torch::kLong).device(input_ids.device()))
          .unsqueeze(0);
  torch::Tensor x = word_embeddings_(input_ids) +
                    position_embeddings_(positions) +
                    token_type_embeddings_(token_type_ids);
  x = dropout_(embeddings_norm_(x));
  // Padding positions get a large negative score before the softmax.
  torch::Tensor additive =
      (1.0 - attention_mask.to(x.scalar_type())).unsqueeze(1).unsqueeze(2) *
      -10000.0;
  for (const auto& layer : *layers_) {
    x = layer->as<BertLayer>()->forward(x, additive);
  }
  return torch::tanh(pooler_(x.select(1, 0)));
}

BertForSequenceClassificationImpl::BertForSequenceClassificationImpl(
    const BertConfig& config)
    : config_(config) {
  bert_ = register_module("bert", BertModel(config));
  dropout_ = register_module("dropout",
                             torch::nn::Dropout(config.hidden_dropout_prob));
  classifier_ = register_module(
      "classifier", torch::nn::Linear(config.hidden_size, config.num_labels()));
  InitLinear(classifier_, config.initializer_range);
}

torch::Tensor BertForSequenceClassificationImpl::forward(
    const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
    const torch::Tensor& attention_mask) {
  return classifier_(
      dropout_(bert_(input_ids, token_type_ids, attention_mask)));
}

void BertForSequenceClassificationImpl::ResetClassifier() {
  InitLinear(classifier_, config_.initializer_range);
}

absl::StatusOr<BertForSequenceClassification> LoadBertForClassification(
    const std::string& dir, const std::vector<std::string>& labels,
    const LogFn& log) {
  const std::string config_path = dir + "/config.json";
  const std::string weights_path = dir + "/model.safetensors";
  if (!PathExists(config_path)) {
    return absl::NotFoundError(
        absl::StrCat("model directory ", dir, " has no config.json"));
  }
  if (!PathExists(weights_path)) {
    if (PathExists(dir + "/pytorch_model.bin")) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir,
          ": pytorch_model.bin (pickle) is not loaded for safety; "
          "convert it to model.safetensors (e.g. with the safetensors "
          "library's convert script) and retry"));
    }
    if (PathExists(dir + "/model.safetensors.index.json")) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, ": sharded safetensors checkpoints are not supported"));
    }
    return absl::NotFoundError(
        absl::StrCat("model directory ", dir, " has no model.safetensors"));
  }
  ASSIGN_OR_RETURN(std::string config_text, ReadFile(config_path));
  nlohmann::json config_json;
  try {
    config_json = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": invalid JSON: ", e.what()));
  }
  ASSIGN_OR_RETURN(BertConfig config, BertConfig::FromJson(config_json));
  const int64_t saved_labels = config.num_labels();
  const std::vector<std::string> saved_names = config.id2label;
  config.id2label = labels;
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(weights_path));
  try {
    BertForSequenceClassification model(config);
    torch::NoGradGuard no_grad;
    std::set<std::string> used;
    bool classifier_fresh = false;
    for (auto& item : model->named_parameters(/*recurse=*/true)) {
      const std::string& name = item.key();
      torch::Tensor& param = item.value();
      const SafetensorsFile::Tensor* t = file->Find(name);
      std::string found_as = name;
      if (t == nullptr && absl::StartsWith(name, "bert.")) {
        found_as = name.substr(5);
        t = file->Find(found_as);
      }
      const bool is_classifier = absl::StartsWith(name, "classifier.");
      if (is_classifier && (t == nullptr || t->shape != param.sizes().vec() ||
                            saved_labels != config.num_labels())) {
        classifier_fresh = true;
        if (t != nullptr) used.insert(found_as);
        continue;
      }
      if (t == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(weights_path, ": missing tensor \"", name, "\""));
      }
      used.insert(found_as);
      if (t->shape != param.sizes().vec()) {
        return absl::InvalidArgumentError(absl::StrCat(
            weights_path, ": tensor \"", found_as, "\" has shape [",
            absl::StrJoin(t->shape, ","), "], the model expects [",
            absl::StrJoin(param.sizes().vec(), ","), "]"));
      }
      auto value = ToFloatTensor(*t);
      if (!value.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(weights_path, ": tensor \"", found_as,
                         "\": ", value.status().message()));
      }
      param.copy_(*value);
    }
    int ignored = 0;
    for (const auto& [name, t] : file->tensors()) {
      if (used.count(name)) continue;
      // Pre-training heads and the position_ids buffer carry no weights a
      // classifier needs.
      if (absl::StartsWith(name, "cls.") ||
          absl::EndsWith(name, "position_ids")) {
        ++ignored;
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat(weights_path, ": unexpected tensor \"", name, "\""));
    }
    if (ignored > 0 && log) {
      log(absl::StrCat("ignored ", ignored,
                       " pre-training tensors (cls.*, position_ids) in ",
                       weights_path));
    }
    if (!classifier_fresh && saved_names != labels && log) {
      log(absl::StrCat("classifier reused from ", dir, "; its labels [",
                       absl::StrJoin(saved_names, ", "),
                       "] map by index to this job's labels [",
                       absl::StrJoin(labels, ", "), "]"));
    }
    if (classifier_fresh) {
      model->ResetClassifier();
      if (log) {
        log(absl::StrCat("classifier initialised fresh for ", labels.size(),
                         " labels (the checkpoint has ",
                         saved_labels > 0 ? std::to_string(saved_labels) : "no",
                         " classifier labels)"));
      }
    }
    return model;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("loading ", dir, ": ", e.what_without_backtrace()));
  }
}

absl::Status SaveBertWeights(BertForSequenceClassification& model,
                             const std::string& dir) {
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  try {
    for (const auto& item : model->named_parameters(/*recurse=*/true)) {
      torch::Tensor t =
          item.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
      keep.push_back(t);
      TensorView v;
      v.name = item.key();
      v.dtype = "F32";
      v.shape = t.sizes().vec();
      v.data = t.data_ptr();
      v.nbytes = static_cast<size_t>(t.numel()) * sizeof(float);
      views.push_back(std::move(v));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("copying weights: ", e.what_without_backtrace()));
  }
  RETURN_IF_ERROR(
      WriteSafetensors(dir + "/model.safetensors", views, {{"format", "pt"}}));
  return WriteFileAtomic(dir + "/config.json",
                         model->config().ToJson().dump(2) + "\n");
}

}  // namespace lathe
