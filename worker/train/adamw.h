// AdamW steps for the training loop. LibTorch's torch::optim::AdamW runs
// about ten tensor operations per parameter per step, three of which allocate
// a parameter-sized temporary; on CPU that is a large share of a small
// model's step (fresh pages for every temporary). AdamWStep applies the same
// update to CPU float32 parameters in one pass over memory, in parallel, and
// keeps the state in the optimizer's own AdamWParamState, so checkpoints and
// resuming do not change. Other parameters (CUDA, other dtypes, amsgrad) take
// LibTorch's step.
// LibTorch.
#ifndef LATHE_WORKER_TRAIN_ADAMW_H_
#define LATHE_WORKER_TRAIN_ADAMW_H_

#include <torch/torch.h>

#include <memory>

namespace lathe {

// The AdamW state of `param`, or null before its first step.
torch::optim::AdamWParamState* FindAdamState(torch::optim::AdamW& optimizer,
                                             const torch::Tensor& param);

// Replaces the AdamW state of `param` (resuming from a checkpoint).
void SetAdamState(torch::optim::AdamW& optimizer, const torch::Tensor& param,
                  std::unique_ptr<torch::optim::AdamWParamState> state);

// Forgets the AdamW state of `param` (another rank keeps it).
void EraseAdamState(torch::optim::AdamW& optimizer, const torch::Tensor& param);

// One optimizer step: for each parameter with a gradient, decoupled weight
// decay, then the moment updates, bias corrections and the update, exactly
// the formula of torch::optim::AdamW::step (results agree to float32
// rounding).
void AdamWStep(torch::optim::AdamW& optimizer);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_ADAMW_H_
