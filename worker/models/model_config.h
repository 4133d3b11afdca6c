// The architecture hyperparameters of every model family Lathe implements,
// read from and written to Hugging Face config.json files. No LibTorch.
#ifndef LATHE_WORKER_MODELS_MODEL_CONFIG_H_
#define LATHE_WORKER_MODELS_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lathe {

enum class Architecture {
  kBert,        // model_type "bert"
  kRoberta,     // "roberta" (and "xlm-roberta", "camembert")
  kDistilBert,  // "distilbert"
  kGpt2,        // "gpt2"
  kLlama,       // "llama", "mistral", "qwen2" (RMSNorm, rotary, SwiGLU, GQA)
  kVit,         // "vit" (image classification, ViTForImageClassification)
  kCnn,         // "lathe-cnn" (Lathe's small convolutional network)
  kWav2Vec2,    // "wav2vec2" (speech: CTC and audio classification)
};

// Wav2Vec2's own config.json keys, under their Hugging Face names
// (Wav2Vec2Config's defaults).
struct SpeechConfig {
  // The convolutional feature encoder: channels, kernel and stride per
  // layer; "group" normalises the first layer's output per channel
  // (GroupNorm), "layer" every layer's (LayerNorm over channels).
  std::vector<int64_t> conv_dim = {512, 512, 512, 512, 512, 512, 512};
  std::vector<int64_t> conv_kernel = {10, 3, 3, 3, 3, 2, 2};
  std::vector<int64_t> conv_stride = {5, 2, 2, 2, 2, 2, 2};
  bool conv_bias = false;
  std::string feat_extract_norm = "group";
  std::string feat_extract_activation = "gelu";
  double feat_proj_dropout = 0.0;
  // The convolutional relative position embedding (weight-normalised).
  int64_t num_conv_pos_embeddings = 128;
  int64_t num_conv_pos_embedding_groups = 16;
  // Pre-LayerNorm blocks with a final LayerNorm (large models) or
  // post-LayerNorm blocks after an input LayerNorm (base models).
  bool do_stable_layer_norm = false;
  double activation_dropout = 0.1;
  double final_dropout = 0.1;
  double layerdrop = 0.1;
  // SpecAugment while training.
  bool apply_spec_augment = true;
  double mask_time_prob = 0.05;
  int64_t mask_time_length = 10;
  int64_t mask_time_min_masks = 2;
  double mask_feature_prob = 0.0;
  int64_t mask_feature_length = 10;
  int64_t mask_feature_min_masks = 0;
  // CTC loss: "sum" or "mean", and whether infinite losses become 0.
  std::string ctc_loss_reduction = "sum";
  bool ctc_zero_infinity = false;
  // Wav2Vec2ForSequenceClassification's projector width.
  int64_t classifier_proj_size = 256;
  // The CTC alphabet, token by id (Wav2Vec2CTCTokenizer's vocab.json beside
  // config.json; not a config.json key): "<pad>" is the blank, "|" the
  // word delimiter. Empty for a model without one.
  std::vector<std::string> vocab;
};

// Reads a Wav2Vec2CTCTokenizer vocab.json ({"token": id, ...}) as tokens by
// id; INVALID_ARGUMENT naming the file for malformed JSON, ids that are not
// 0..n-1 each once, a size over 4096 tokens or 1 MiB.
absl::StatusOr<std::vector<std::string>> ReadCtcVocab(const std::string& path);

// Writes vocab.json, tokenizer_config.json (Wav2Vec2CTCTokenizer) and
// special_tokens_map.json for `vocab` into `dir`.
absl::Status WriteCtcTokenizerFiles(const std::string& dir,
                                    const std::vector<std::string>& vocab);

// model_type for config.json ("bert", ...).
std::string ArchitectureName(Architecture a);

// One flat struct for all families; the family's config.json key names are
// mapped on read and written back on save (GPT-2's n_embd, DistilBERT's dim,
// ...). Fields a family does not use keep their defaults.
struct ModelConfig {
  Architecture architecture = Architecture::kBert;
  std::string model_type = "bert";  // As read: "qwen2", "mistral", ...

  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t num_key_value_heads = 12;  // Llama family (GQA); = heads otherwise
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;  // BERT, RoBERTa (1)
  // "gelu" (erf), "gelu_new"/"gelu_pytorch_tanh" (tanh form), "relu",
  // "silu"/"swish", "quick_gelu".
  std::string hidden_act = "gelu";
  double layer_norm_eps = 1e-12;  // LayerNorm or RMSNorm epsilon
  double hidden_dropout = 0.1;
  double attention_dropout = 0.1;
  double classifier_dropout = 0.1;  // Head dropout (seq_classif_dropout, ...)
  double initializer_range = 0.02;
  // BERT/RoBERTa: "absolute"; RoBERTa positions start at pad_token_id + 1.
  // DistilBERT: sinusoidal_pos_embds. Llama: rotary with rope_theta.
  bool sinusoidal_positions = false;
  double rope_theta = 10000.0;
  // Llama family: bias on q/k/v projections (Qwen2: true) and on o_proj and
  // the MLP (false for all published ones).
  bool attention_bias = false;
  bool mlp_bias = false;
  // Optional head_dim override (some Llama-family configs); 0: hidden/heads.
  int64_t head_dim = 0;
  bool tie_word_embeddings = false;  // GPT-2 true; Llama configs say
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;

  // Image families (ViT, lathe-cnn): square input side in pixels, ViT's
  // patch side and q/k/v biases, input channels, and the CNN's output
  // channels per convolution block.
  int64_t image_size = 224;
  int64_t patch_size = 16;
  int64_t num_channels = 3;
  bool qkv_bias = true;
  std::vector<int64_t> hidden_sizes;
  // lathe-cnn's head input ("pooling" in config.json): "mean" averages the
  // last block's feature map over its positions (configs written before the
  // key existed); "flatten" keeps the spatial layout, one classifier weight
  // per channel and position.
  std::string cnn_pooling = "mean";

  // Wav2Vec2 (speech): its own keys; vocab_size is the CTC alphabet.
  SpeechConfig speech;

  // Class names by index (id2label); size() is num_labels.
  std::vector<std::string> id2label;
  // The "architectures" entry as read (e.g. "BertForMaskedLM"); on save the
  // head that was trained decides it.
  std::vector<std::string> architectures;
  // Every key of the original config.json, so fields Lathe does not use
  // survive a load/save round trip. ToJson() starts from it.
  nlohmann::json original = nlohmann::json::object();

  int64_t num_labels() const { return static_cast<int64_t>(id2label.size()); }
  int64_t EffectiveHeadDim() const {
    return head_dim > 0 ? head_dim : hidden_size / num_attention_heads;
  }

  // INVALID_ARGUMENT naming the field for non-positive sizes, heads that do
  // not divide the hidden size (or KV heads that do not divide the heads),
  // dropouts outside [0, 1), or an unsupported activation.
  absl::Status Validate() const;

  // Parses config.json. model_type decides the family; INVALID_ARGUMENT
  // naming the field for a missing or malformed value, and naming the
  // model_type when the family is not implemented.
  static absl::StatusOr<ModelConfig> FromJson(const nlohmann::json& j);
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
  // config.json in the family's own key names with `architectures` set to
  // `architecture_class` (e.g. "GPT2ForSequenceClassification"),
  // id2label/label2id, and every other original key kept.
  nlohmann::json ToJson(const std::string& architecture_class) const;
};

// A built-in random-initialisation model and the tokenizer it uses.
struct Preset {
  std::string name;           // "preset:bert-tiny"
  std::string tokenizer_dir;  // Under the assets dir: "bert-base-uncased"
  std::string description;
  ModelConfig config;
  // The learning rate a job from this preset trains with when it sets none
  // (0: the fine-tuning default of docs/params.md). A random start learns
  // at rates that would wreck a pre-trained model.
  double default_learning_rate = 0;
};

// Every preset, for `lathe models list`: preset:bert-tiny (2 layers, hidden
// 128), preset:bert-mini (4 layers, hidden 256), preset:gpt2-tiny,
// preset:llama-tiny, preset:llama-mini (4 layers, hidden 256), each with its
// family's real tokenizer and vocabulary, and the image presets.
const std::vector<Preset>& Presets();
// INVALID_ARGUMENT naming the known presets for an unknown name.
absl::StatusOr<Preset> FindPreset(const std::string& name);

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_MODEL_CONFIG_H_
