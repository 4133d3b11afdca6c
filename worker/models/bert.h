// BERT for sequence classification in torch::nn, with Hugging Face parameter
// names (bert.embeddings..., bert.encoder.layer.N..., bert.pooler...,
// classifier...), so checkpoints load into and out of other tools.
#ifndef LATHE_WORKER_MODELS_BERT_H_
#define LATHE_WORKER_MODELS_BERT_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/models/bert_config.h"

namespace lathe {

// One transformer block; submodule names follow Hugging Face's BertLayer.
class BertLayerImpl : public torch::nn::Module {
 public:
  explicit BertLayerImpl(const BertConfig& config);
  // x: [B, T, H] float; additive_mask: [B, 1, 1, T] (0 keep, large negative
  // drop). Returns [B, T, H].
  torch::Tensor forward(const torch::Tensor& x,
                        const torch::Tensor& additive_mask);

 private:
  int64_t heads_;
  int64_t head_dim_;
  torch::nn::Linear query_{nullptr}, key_{nullptr}, value_{nullptr};
  torch::nn::Linear attn_out_{nullptr};
  torch::nn::LayerNorm attn_norm_{nullptr};
  torch::nn::Linear intermediate_{nullptr};
  torch::nn::Linear out_{nullptr};
  torch::nn::LayerNorm out_norm_{nullptr};
  torch::nn::Dropout attn_dropout_{nullptr};
  torch::nn::Dropout hidden_dropout_{nullptr};
};
TORCH_MODULE(BertLayer);

// Embeddings + encoder + pooler (Hugging Face's BertModel).
class BertModelImpl : public torch::nn::Module {
 public:
  explicit BertModelImpl(const BertConfig& config);
  // input_ids, token_type_ids, attention_mask: [B, T] int64, mask 1 for real
  // tokens and 0 for padding. Returns the pooled output [B, H].
  torch::Tensor forward(const torch::Tensor& input_ids,
                        const torch::Tensor& token_type_ids,
                        const torch::Tensor& attention_mask);

 private:
  torch::nn::Embedding word_embeddings_{nullptr};
  torch::nn::Embedding position_embeddings_{nullptr};
  torch::nn::Embedding token_type_embeddings_{nullptr};
  torch::nn::LayerNorm embeddings_norm_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  torch::nn::Linear pooler_{nullptr};
};
TORCH_MODULE(BertModel);

// Hugging Face's BertForSequenceClassification. Parameters are initialised
// like Hugging Face (normal(0, initializer_range) weights, zero biases,
// LayerNorm 1/0) from torch's global generator, so torch::manual_seed()
// before construction makes the initial weights reproducible.
class BertForSequenceClassificationImpl : public torch::nn::Module {
 public:
  // config.num_labels() must be >= 1.
  explicit BertForSequenceClassificationImpl(const BertConfig& config);
  // Returns logits [B, num_labels].
  torch::Tensor forward(const torch::Tensor& input_ids,
                        const torch::Tensor& token_type_ids,
                        const torch::Tensor& attention_mask);
  const BertConfig& config() const { return config_; }
  // Re-draws the classifier weights (normal) and zeroes its bias.
  void ResetClassifier();

 private:
  BertConfig config_;
  BertModel bert_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear classifier_{nullptr};
};
TORCH_MODULE(BertForSequenceClassification);

using LogFn = std::function<void(const std::string&)>;

// Loads `dir` (config.json + model.safetensors, as written by
// SaveBertCheckpoint or Hugging Face) into a new model with `labels` as its
// classes. Tensors are matched by name, with or without the "bert." prefix.
// A classifier that is missing or sized for a different label count is
// initialised fresh (reported through `log`); a missing encoder tensor, an
// unexpected tensor or a shape mismatch is INVALID_ARGUMENT naming it.
// pytorch_model.bin (pickle) is refused. NOT_FOUND when `dir` lacks
// config.json. Does not throw.
absl::StatusOr<BertForSequenceClassification> LoadBertForClassification(
    const std::string& dir, const std::vector<std::string>& labels,
    const LogFn& log);

// Copies every parameter of `model` (as contiguous float32 on the CPU) into
// `dir`/model.safetensors and writes config.json. `dir` must exist.
absl::Status SaveBertWeights(BertForSequenceClassification& model,
                             const std::string& dir);

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_BERT_H_
