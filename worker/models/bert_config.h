// BERT architecture hyperparameters, read from and written to a Hugging Face
// config.json. No LibTorch.
#ifndef LATHE_WORKER_MODELS_BERT_CONFIG_H_
#define LATHE_WORKER_MODELS_BERT_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lathe {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";  // Only "gelu" (erf form) is supported.
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  double initializer_range = 0.02;
  // Class names by index; size() is num_labels. Empty: no classifier labels
  // known (e.g. an encoder-only checkpoint).
  std::vector<std::string> id2label;

  int64_t num_labels() const { return static_cast<int64_t>(id2label.size()); }

  // INVALID_ARGUMENT when sizes are not positive, hidden_size is not a
  // multiple of num_attention_heads, dropouts are outside [0, 1), or the
  // activation is unsupported.
  absl::Status Validate() const;

  // Parses a config.json object (model_type must be "bert" when present).
  static absl::StatusOr<BertConfig> FromJson(const nlohmann::json& j);
  // A config.json for BertForSequenceClassification with id2label/label2id.
  nlohmann::json ToJson() const;

  // "preset:bert-tiny" (2 layers, hidden 128, 2 heads, intermediate 512) and
  // "preset:bert-mini" (4 layers, hidden 256, 4 heads, intermediate 1024),
  // both with the bert-base-uncased vocabulary size and 512 positions.
  // INVALID_ARGUMENT naming the known presets otherwise.
  static absl::StatusOr<BertConfig> Preset(const std::string& name);
};

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_BERT_CONFIG_H_
