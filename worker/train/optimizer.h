// The optimizer a training run uses: which parameters it updates, their
// AdamW groups and the learning-rate schedule (the update itself is
// adamw.h's). LibTorch.
#ifndef LATHE_WORKER_TRAIN_OPTIMIZER_H_
#define LATHE_WORKER_TRAIN_OPTIMIZER_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/params.h"
#include "worker/models/model.h"

namespace lathe {

// The model's trainable tensors by name, each once: a tied alias (GPT-2's
// lm_head.weight is transformer.wte.weight) is listed under its source's
// name only, so the optimizer updates it once per step.
std::vector<std::pair<std::string, torch::Tensor>> UniqueParameters(
    const TaskModelImpl& model);

struct TrainingOptimizer {
  std::unique_ptr<torch::optim::AdamW> adamw;
  std::vector<torch::Tensor> trainable;  // Its parameters, in model order.
  int64_t trainable_count = 0;           // Their elements.
  int64_t total_count = 0;               // Elements of every parameter.
};

// AdamW over the parameters with requires_grad, with params' learning rate
// and weight decay. Biases and normalisation weights (the one-dimensional
// parameters of every family here) are not decayed, as in Hugging Face.
// Frozen parameters (LoRA's base, a linear probe's body) stay out.
TrainingOptimizer BuildOptimizer(const TaskModelImpl& model,
                                 const TrainParams& params);

// Hugging Face's schedules: linear warmup from 0, then linear decay to 0,
// half a cosine to 0, or constant.
double LearningRate(const std::string& type, int64_t step0, double base,
                    int64_t warmup, int64_t total);

// Sets the learning rate of every group.
void SetLearningRate(torch::optim::AdamW& optimizer, double lr);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_OPTIMIZER_H_
