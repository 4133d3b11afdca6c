// Transformer models with task heads, in torch::nn, with the module tree laid
// out exactly as Hugging Face names the parameters (bert.encoder.layer.0...,
// transformer.h.0.attn.c_attn..., model.layers.0.self_attn.q_proj...,
// classifier, score, qa_outputs, lm_head), so named_parameters() is the
// checkpoint's tensor list and checkpoints move between Lathe and other tools.
#ifndef LATHE_WORKER_MODELS_MODEL_H_
#define LATHE_WORKER_MODELS_MODEL_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/models/model_config.h"

namespace lathe {

enum class HeadKind {
  kNone,                    // Base model: returns the last hidden states
  kSequenceClassification,  // [B, num_labels]
  kTokenClassification,     // [B, T, num_labels]
  kQuestionAnswering,       // [B, T, 2] (start, end)
  kCausalLm,                // [B, T, vocab] (GPT-2, Llama family)
  kMaskedLm,                // [B, T, vocab] (BERT, RoBERTa, DistilBERT)
  kCtc,                     // [B, frames, vocab] (Wav2Vec2ForCTC)
};

// Inputs for one batch, all [B, T] int64 on the model's device (text), or
// pixel_values (images).
// attention_mask is 1 for real tokens, 0 for padding (padding may be on
// either side); token_type_ids may be undefined (zeros are used).
struct ModelInputs {
  torch::Tensor input_ids;
  torch::Tensor attention_mask;
  torch::Tensor token_type_ids;
  // Image models: [B, C, H, W] float, normalised as the model expects.
  torch::Tensor pixel_values;
  // Speech models: [B, samples] float at the model's sampling rate,
  // normalised as its feature extractor says; attention_mask is then
  // [B, samples], 1 for real samples.
  torch::Tensor input_values;
  // Packed sequences (decoders only), both [B, T] int64: each token's
  // position within its own row, and which packed row it belongs to
  // (attention never crosses rows). Undefined: positions 0..T-1, one row.
  torch::Tensor position_ids;
  torch::Tensor segment_ids;
};

// A family's backbone plus one head. Implementations register their
// submodules under the Hugging Face names of the "XForY" class.
class TaskModelImpl : public torch::nn::Module {
 public:
  // Logits as listed for HeadKind; kNone returns hidden states [B, T, H].
  // Sequence classification with decoders (GPT-2, Llama) uses each row's
  // last non-padding token, as Hugging Face does.
  virtual torch::Tensor forward(const ModelInputs& inputs) = 0;

  // Activation checkpointing (gradient_checkpointing=1): while training
  // with gradients, each transformer layer keeps only its input and
  // recomputes its activations in the backward pass (recompute.h). Returns
  // false, changing nothing, for a model without such layers.
  virtual bool SetGradientCheckpointing(bool on) {
    (void)on;
    return false;
  }

  // Causal-LM heads split in two, so a loss can project the hidden states
  // onto the vocabulary a chunk at a time: forward(in) is
  // ProjectHidden(ForwardHidden(in)). Only when has_lm_head().
  virtual bool has_lm_head() const { return false; }
  virtual torch::Tensor ForwardHidden(const ModelInputs& inputs) {
    return forward(inputs);
  }
  virtual torch::Tensor ProjectHidden(const torch::Tensor& hidden) {
    return hidden;
  }

  const ModelConfig& config() const { return config_; }
  // For the task to record what its head means (id2label, problem_type)
  // before saving; the architecture fields must not change.
  ModelConfig* mutable_config() { return &config_; }
  HeadKind head() const { return head_; }
  // The Hugging Face class this is, e.g. "LlamaForSequenceClassification".
  virtual std::string architecture_class() const = 0;
  // Prefix of the backbone's names ("bert", "roberta", "distilbert",
  // "transformer", "model").
  virtual std::string base_prefix() const = 0;
  // Names (from named_parameters()) of the head's parameters, which a base
  // checkpoint may lack and which LoRA and linear probes train in full.
  virtual std::vector<std::string> head_parameter_names() const = 0;
  // Pairs (alias, source) of tied parameters: `alias` is the same tensor as
  // `source` (GPT-2's lm_head.weight and transformer.wte.weight); saving
  // omits the alias, loading re-ties it.
  virtual std::vector<std::pair<std::string, std::string>> tied_parameters()
      const {
    return {};
  }
  // Checkpoint tensors that are skipped silently (buffers that older
  // versions saved, such as GPT-2's attn.bias mask or BERT's
  // embeddings.position_ids), given the name with the prefix stripped.
  virtual bool IgnoredOnLoad(const std::string& name) const { return false; }
  // The name this model knows a checkpoint tensor by, when the family has
  // had two spellings (Wav2Vec2's weight-normalised position convolution).
  virtual std::string CanonicalName(const std::string& name) const {
    return name;
  }

 protected:
  TaskModelImpl(ModelConfig config, HeadKind head)
      : config_(std::move(config)), head_(head) {}

 private:
  ModelConfig config_;
  HeadKind head_;
};
using TaskModel = std::shared_ptr<TaskModelImpl>;

using LogFn = std::function<void(const std::string&)>;

// A model with random initialisation as Hugging Face initialises it
// (normal(0, initializer_range), zero biases, norms 1/0), drawn from torch's
// global generator so torch::manual_seed() makes it reproducible. Heads that
// need labels need config.num_labels() >= 1. INVALID_ARGUMENT for a head the
// family has no Hugging Face class for.
absl::StatusOr<TaskModel> CreateModel(const ModelConfig& config, HeadKind head);

// Loads the Hugging Face directory `dir`: config.json, then
// model.safetensors or model.safetensors.index.json (sharded); any pickle
// (pytorch_model.bin, *.pt, *.pth, *.ckpt) without safetensors is refused
// with a message saying to convert it. Tensors are matched by name with or
// without the base prefix and with the legacy LayerNorm gamma/beta names;
// every dtype is converted to float32. When `labels` is non-empty they
// replace config's id2label. A head missing from the checkpoint (or sized
// for another label count) is initialised fresh and reported through `log`;
// a missing backbone tensor, an unexpected tensor or a shape mismatch is
// INVALID_ARGUMENT naming it. NOT_FOUND when config.json is absent. A
// directory that also holds a PEFT LoRA adapter (adapter_config.json, as
// Lathe's LoRA checkpoints do) gets it applied (lora.h LoadPeftAdapter).
// Does not throw.
absl::StatusOr<TaskModel> LoadModel(const std::string& dir, HeadKind head,
                                    const std::vector<std::string>& labels,
                                    const LogFn& log);

// Writes `dir`/config.json (ToJson(architecture_class())) and
// `dir`/model.safetensors: every parameter and persistent buffer under its
// Hugging Face name, contiguous float32 on the CPU, tied aliases and LoRA
// adapter tensors (saved apart by lora.h) omitted, metadata
// {"format": "pt"}. `dir` must exist. Does not throw.
absl::Status SaveModel(TaskModelImpl& model, const std::string& dir);

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_MODEL_H_
