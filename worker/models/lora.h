// Parameter-efficient fine-tuning of the model families: LoRA adapters on
// their projections (Lathe's Linear, linear.h) and linear probes, with the
// adapters saved and loaded in PEFT's layout (adapter_config.json and
// adapter_model.safetensors, tensors named
// "base_model.model.<Hugging Face name>.lora_A.weight"), and merging.
//
// Which parameters train:
//   LoRA: the adapters, and the head when it is new to the task (sequence
//     and token classification, question answering), as PEFT's
//     modules_to_save does for those task types. Language-model heads
//     (causal and masked) are pretrained and stay frozen, as in PEFT.
//   Linear probe: the head's parameters only (head_parameter_names()).
// Frozen parameters have requires_grad false; the optimizer must take only
// parameters with requires_grad. LibTorch; not thread-safe.
#ifndef LATHE_WORKER_MODELS_LORA_H_
#define LATHE_WORKER_MODELS_LORA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/params.h"
#include "worker/models/model.h"

namespace lathe {

struct LoraOptions {
  int64_t r = 8;            // 1..1024
  double alpha = 16;        // > 0
  double dropout = 0.05;    // [0, 1), on the adapter input in train() only
  bool use_rslora = false;  // scaling alpha / sqrt(r) instead of alpha / r
  // Module names matched against the last components of each projection's
  // name ("q_proj" matches "model.layers.0.self_attn.q_proj"; a dotted
  // name such as "attention.self.query" matches a suffix). Empty: the
  // family's default (DefaultLoraTargets).
  std::vector<std::string> target_modules;
  // Recorded in adapter_config.json: the model the adapter applies to.
  std::string base_model_name_or_path;

  double scaling() const;
};

// PEFT's default targets for the family: BERT, RoBERTa and ViT
// {"query", "value"}, DistilBERT {"q_lin", "v_lin"}, GPT-2 {"c_attn"}, the
// Llama family {"q_proj", "v_proj"}. INVALID_ARGUMENT for a family without
// defaults (name the targets explicitly).
absl::StatusOr<std::vector<std::string>> DefaultLoraTargets(
    const ModelConfig& config);

// Splits "q_proj, v_proj" on commas, trimming spaces, dropping empties.
std::vector<std::string> ParseTargetModules(const std::string& csv);

// Builds LoraOptions from a job's params (lora_r, lora_alpha, lora_dropout,
// use_rslora, lora_target_modules); INVALID_ARGUMENT naming the param when
// out of range.
absl::StatusOr<LoraOptions> LoraOptionsFromParams(const TrainParams& params);

// Attaches adapters to every backbone projection that a target matches
// (head modules are never adapted), then freezes every parameter but the
// adapters and a new head (see above). When the model already holds
// adapters (LoadModel applies a checkpoint's) on exactly the modules these
// options select, with the same rank and scaling, they are kept and train
// on (resuming, or continuing an adapter); otherwise they are merged into
// the weights first and fresh adapters attached. INVALID_ARGUMENT naming an
// unknown target module (listing the projections there are) or a bad
// option. Logs the adapted modules and the trainable parameter counts.
absl::Status ApplyLora(TaskModelImpl& model, const LoraOptions& options,
                       const LogFn& log);

// Freezes every parameter but head_parameter_names(); INVALID_ARGUMENT when
// the model has no head parameters of its own (a tied LM head, a base
// model). Merges adapters the model holds first.
absl::Status ApplyLinearProbe(TaskModelImpl& model, const LogFn& log);

// Names (from named_modules()) of the projections that hold adapters.
std::vector<std::string> LoraModuleNames(TaskModelImpl& model);

// Folds every adapter into its weight (W += B A * scaling, transposed for
// the Conv1D layout) and removes it: SaveModel then writes a plain model.
// Keeps requires_grad as it is. Does not throw.
absl::Status MergeLora(TaskModelImpl& model);

// Names of the parameters a LoRA model trains besides its adapters (a new
// head), and the number of elements with requires_grad.
std::vector<std::string> LoraTrainedHeadNames(TaskModelImpl& model);
int64_t TrainableParameterCount(TaskModelImpl& model);

// Writes `dir`/adapter_config.json (peft_type LORA, task_type, r,
// lora_alpha, lora_dropout, use_rslora, target_modules, fan_in_fan_out,
// bias "none", modules_to_save, base_model_name_or_path, inference_mode
// true) and `dir`/adapter_model.safetensors: each adapter's lora_A/lora_B
// and the trained head's tensors, float32, named "base_model.model." + the
// Hugging Face name, as PEFT's save_pretrained writes them. `dir` must
// exist. FAILED_PRECONDITION when the model holds no adapters.
absl::Status SavePeftAdapter(TaskModelImpl& model, const LoraOptions& options,
                             const std::string& dir);

// Reads a PEFT LoRA adapter from `dir` (as SavePeftAdapter writes it, or as
// PEFT's save_pretrained does) onto `model`, a loaded base: attaches an
// adapter to each module the file names (rank from the tensors, scaling
// from lora_alpha, r and use_rslora), loads the tensors and any head
// tensors (a head sized for other labels is skipped and logged). Parameters
// keep requires_grad true (ApplyLora or ApplyLinearProbe decide training).
// NOT_FOUND when adapter_config.json is absent; INVALID_ARGUMENT naming the
// field or tensor for anything Lathe cannot apply exactly (another
// peft_type, rank or alpha patterns, DoRA, a module that is not a
// projection of the model, a shape mismatch).
absl::Status LoadPeftAdapter(TaskModelImpl& model, const std::string& dir,
                             const LogFn& log);

// Writes `dir`/config.json and `dir`/model.safetensors of the merged model
// without changing `model` (the adapted weights are restored bit for bit).
// `dir` must exist.
absl::Status SaveMergedModel(TaskModelImpl& model, const std::string& dir);

// ----------------------------------------------------------- for trainers

// Prepares a freshly loaded model for params.method before the optimizer is
// built: "full" merges adapters the model came with (a LoRA checkpoint as
// base) and trains everything; "linear-probe" is ApplyLinearProbe; "lora"
// is ApplyLora with LoraOptionsFromParams. INVALID_ARGUMENT for another
// method.
absl::Status ApplyMethod(TaskModelImpl& model, const TrainParams& params,
                         const LogFn& log);

// Writes the method's files into checkpoint directory `dir`, which already
// holds config.json and model.safetensors (SaveModel: the base and head,
// adapters left out) and the tokenizer files. For "lora": the PEFT adapter
// files, and when `write_merged` also `dir`/merged/ with the merged model's
// config.json and model.safetensors and copies of the tokenizer files found
// in `dir`. Nothing for the other methods. `base_model` is recorded as
// base_model_name_or_path.
absl::Status SaveMethodOutputs(TaskModelImpl& model, const TrainParams& params,
                               const std::string& dir,
                               const std::string& base_model,
                               bool write_merged);

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_LORA_H_
