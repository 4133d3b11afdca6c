// Writing checkpoint directories. A directory appears under its final name
// only once complete (it is written under a temporary name, then renamed),
// and holds the Hugging Face files (config.json, model.safetensors, the
// tokenizer's files, an image processor's config) plus, for a training run,
// the training method's outputs and the training state that resume.h reads
// back. Also the base models of WritePresetModel (trainer.h). LibTorch.
#ifndef LATHE_WORKER_TRAIN_CHECKPOINT_WRITER_H_
#define LATHE_WORKER_TRAIN_CHECKPOINT_WRITER_H_

#include <torch/torch.h>

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "common/params.h"
#include "worker/models/model.h"
#include "worker/tokenizers/tokenizer.h"
#include "worker/train/trainer_state.h"

namespace lathe {

// Writes `dir` (OUT/checkpoint-STEP) for a run at `state`: the model with
// `tokenizer` (null: none), the outputs of params.method (LoRA adapters
// naming `base_model`), and the training state: Adam moments by parameter
// name and generator states in training_state.safetensors, the scalars of
// `state` (with the Adam step counts read from `optimizer`) in
// trainer_state.json, and what `task_files` (may be empty) writes into the
// directory. Reads generator states without drawing from them.
absl::Status WriteTrainingCheckpoint(
    TaskModel& model, const Tokenizer* tokenizer, const TrainParams& params,
    const std::string& base_model, torch::optim::AdamW& optimizer,
    const torch::Device& device, const TrainerState& state,
    const std::string& dir,
    const std::function<absl::Status(const std::string&)>& task_files);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_CHECKPOINT_WRITER_H_
