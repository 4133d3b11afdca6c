// Activation checkpointing: run a function of one tensor so that autograd
// keeps only its input, and recompute its intermediate activations in the
// backward pass. Transformer layers use it under gradient_checkpointing=1,
// and the causal-LM loss uses it to project hidden states onto a large
// vocabulary one chunk at a time. LibTorch.
#ifndef LATHE_WORKER_MODELS_RECOMPUTE_H_
#define LATHE_WORKER_MODELS_RECOMPUTE_H_

#include <torch/torch.h>

#include <functional>

namespace lathe {

using TensorFn = std::function<torch::Tensor(const torch::Tensor&)>;

// Returns fn(x), computed without recording a graph. In the backward pass
// fn(x) is run again with gradients on and back-propagated at once, which
// accumulates the gradients of every parameter fn uses into their .grad and
// passes x's gradient on. The recomputation sees what the first call saw:
// the random generator state of x's device (so dropout draws the same
// masks) and the autocast settings. `fn` must capture what it needs by
// value (it runs after the caller has returned) and must depend on no
// tensor that requires gradients other than x and module parameters.
// Parameters get their gradients even when x does not require any (a frozen
// embedding below LoRA layers).
torch::Tensor RecomputeInBackward(TensorFn fn, const torch::Tensor& x);

// Whether RecomputeInBackward pays off here: gradients are being recorded.
// In evaluation (no grad) the plain call is the same and cheaper.
inline bool RecordingGradients() { return torch::GradMode::is_enabled(); }

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_RECOMPUTE_H_
