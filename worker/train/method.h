// The fine-tuning method of a job (params.method): full fine-tuning, LoRA
// adapters, or a linear probe (frozen base, trained head). LibTorch.
#ifndef LATHE_WORKER_TRAIN_METHOD_H_
#define LATHE_WORKER_TRAIN_METHOD_H_

#include <string>

#include "absl/status/status.h"
#include "common/params.h"
#include "worker/models/model.h"

namespace lathe {

// Prepares `model` for params.method before the optimizer is built: "full"
// trains everything (merging adapters the model came with); "linear-probe"
// freezes every parameter but the head's; "lora" attaches adapters (keeping
// matching ones the model came with) and freezes the base. Trainable parameters
// are those with requires_grad. Reports what it did through `log`.
absl::Status ApplyTrainingMethod(TaskModelImpl& model,
                                 const TrainParams& params, const LogFn& log);

// Writes the method's own files into a checkpoint directory `dir` that
// already holds config.json and model.safetensors (LoRA: the PEFT adapter
// files naming `base_model`, and with params.merge_lora the merged model in
// `dir`/merged). Nothing for "full" and "linear-probe".
absl::Status SaveTrainingMethodOutputs(TaskModelImpl& model,
                                       const TrainParams& params,
                                       const std::string& base_model,
                                       const std::string& dir);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_METHOD_H_
