// Training hyperparameters: names, defaults and ranges, shared by the server
// (which validates a submitted job) and the training child (which uses them).
#ifndef LATHE_COMMON_PARAMS_H_
#define LATHE_COMMON_PARAMS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lathe {

struct TrainParams {
  int64_t epochs = 3;             // 1..1000
  int64_t batch_size = 32;        // 1..4096
  double learning_rate = 1e-4;    // (0, 1]
  double warmup_ratio = 0.1;      // [0, 1]
  double weight_decay = 0.01;     // [0, 1]
  int64_t max_seq_length = 128;   // 8..131072 (and the model's positions)
  int64_t eval_steps = 100;       // 0 = only at the end
  int64_t save_steps = 500;       // 0 = only at the end
  int64_t logging_steps = 10;     // 1..1000000
  int64_t seed = 42;              // any 64-bit integer
  double max_grad_norm = 1.0;     // [0, 1e6]; 0 disables clipping
  double validation_split = 0.1;  // [0, 0.5]; used without validation data
  int64_t max_steps = 0;          // 0 = epochs decide; else stop there
  int64_t num_threads = 0;        // 0 = every core the machine gives

  // Optimisation.
  int64_t gradient_accumulation_steps = 1;   // 1..1024 micro-batches per step
  std::string lr_scheduler_type = "linear";  // linear | cosine | constant
  // 0/1: batches of rows of similar length (less padding); see trainer.cc.
  int64_t group_by_length = 0;
  int64_t bf16 = 0;  // 0/1: bf16 autocast where the device supports it
  // 0/1: recompute each layer's activations in the backward pass.
  int64_t gradient_checkpointing = 0;
  // 1: each data-parallel rank keeps and updates the AdamW moments of the
  // parameters it owns only (optimizer-state sharding, ZeRO stage 1).
  int64_t zero_stage = 0;
  // Method: full | lora | linear-probe (frozen base, trained head) |
  // dpo | dpo-lora (preference tuning of causal-lm, every weight or LoRA).
  std::string method = "full";
  double dpo_beta = 0.1;       // (0, 100]: DPO's KL strength
  int64_t lora_r = 8;          // 1..1024
  double lora_alpha = 16;      // (0, 1e6]
  double lora_dropout = 0.05;  // [0, 1)
  int64_t use_rslora = 0;      // 0/1: scale alpha/sqrt(r) instead of alpha/r
  // Comma-separated module names (q_proj,v_proj); empty: the family's default.
  std::string lora_target_modules;
  int64_t merge_lora = 0;  // 0/1: also write the merged model
  // Speech models: keep the convolutional feature encoder as it is. auto:
  // frozen when training starts from a checkpoint (pre-trained features,
  // the wav2vec 2.0 recipe), trained from a random initialisation.
  std::string freeze_feature_encoder = "auto";  // auto | true | false

  // Evaluation and selection. Empty metric: the task's default.
  std::string metric_for_best_model;
  int64_t early_stopping_patience = 0;  // 0..1000 evaluations; 0 = off

  // Data columns (empty: the task's default names).
  std::string text_column, text_pair_column, label_column;
  std::string prompt_column, completion_column, messages_column;
  std::string question_column, context_column, answers_column;
  std::string tokens_column, tags_column, image_column;
  std::string chosen_column, rejected_column;  // DPO

  // Task-specific.
  int64_t doc_stride = 128;              // 0..512: QA window overlap (tokens)
  int64_t max_answer_length = 30;        // 1..512: QA answer span (tokens)
  double null_score_diff_threshold = 0;  // QA v2: predict "" above it
  int64_t completion_only_loss = 1;      // 0/1: causal-lm loss on completions
  int64_t packing = 0;  // 0/1: causal-lm rows packed into full sequences
  double mlm_probability = 0.15;  // (0, 1): masked-lm masking rate
  int64_t image_size = 0;         // 0..1024: resize side; 0 = the model's
  // Generation for causal-lm predictions.
  int64_t max_new_tokens = 64;  // 1..4096
  double temperature = 0;       // [0, 100]; 0 = greedy
  int64_t top_k = 0;            // 0..1000000; 0 = off
  double top_p = 1;             // (0, 1]
};

// Whether `method` trains LoRA adapters (lora, dpo-lora) or optimises the
// DPO preference loss (dpo, dpo-lora).
bool MethodUsesLora(const std::string& method);
bool IsPreferenceMethod(const std::string& method);

// Parses `params` (name -> decimal text) over the defaults. An unknown name
// or a value out of range is INVALID_ARGUMENT naming `params[NAME]`.
absl::StatusOr<TrainParams> ParseTrainParams(
    const std::map<std::string, std::string>& params);

// Names of every accepted parameter, for help texts.
const char* TrainParamsHelp();

// The same names, in the order of TrainParamsHelp(), for suggestions.
const std::vector<std::string>& TrainParamNames();

// Refuses a hyperparameter that the job's method or task does not use, so
// that a job which names one (lora_r without method=lora, doc_stride on a
// classifier) fails at submit instead of quietly training without it.
// `task` is the job's task name and `params` its hyperparameters as
// submitted; the method is params["method"] ("full" when absent). Call it
// after ParseTrainParams accepted `params`. A name set to its default value
// counts as set. Names that apply to every method and task pass, and so does
// every name when `task` is not a known task (the caller refuses the task).
// Returns INVALID_ARGUMENT naming the first offending name in name order:
//   params[lora_r]: applies only with method=lora (this job: method=full)
//   params[doc_stride]: applies only to question-answering (this job:
//   text-classification)
// The rules, by name (docs/params.md says the same):
//   lora_r, lora_alpha, lora_dropout, use_rslora, lora_target_modules,
//   merge_lora                                    method=lora or dpo-lora
//   dpo_beta, chosen_column, rejected_column      method=dpo or dpo-lora
//   packing, completion_only_loss, completion_column, messages_column,
//   text_column                          not with method=dpo or dpo-lora
//   method=dpo or dpo-lora                        causal-lm only
//   doc_stride, max_answer_length, null_score_diff_threshold,
//   question_column, context_column, answers_column   question-answering
//   completion_only_loss, packing, max_new_tokens, temperature, top_k,
//   top_p, prompt_column, completion_column, messages_column   causal-lm
//   mlm_probability                               masked-lm
//   tokens_column, tags_column                    token-classification
//   image_size, image_column                      image-classification
//   freeze_feature_encoder      audio-classification, speech-recognition
//   text_pair_column                text-classification, text-regression
//   label_column      text-classification, text-regression,
//                     image-classification, audio-classification
//   text_column       every task but question-answering,
//                     image-classification and audio-classification
//   max_seq_length, group_by_length, gradient_checkpointing
//                                   every text task
absl::Status CheckParamsApply(const std::string& task,
                              const std::map<std::string, std::string>& params);

}  // namespace lathe

#endif  // LATHE_COMMON_PARAMS_H_
