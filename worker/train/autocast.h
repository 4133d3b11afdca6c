// Mixed precision for the training step. LibTorch.
#ifndef LATHE_WORKER_TRAIN_AUTOCAST_H_
#define LATHE_WORKER_TRAIN_AUTOCAST_H_

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

namespace lathe {

// bf16 autocast over a scope (the forward pass and the loss): matrix
// products and convolutions run in bfloat16, reductions and the loss stay
// in float32 (LibTorch's autocast op lists), the weights and the optimizer
// stay float32. Backward runs outside, as autocast expects.
class Bf16Autocast {
 public:
  Bf16Autocast(bool enabled, const torch::Device& device)
      : enabled_(enabled), cuda_(device.is_cuda()) {
    if (!enabled_) return;
    if (cuda_) {
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
    at::autocast::increment_nesting();
  }
  ~Bf16Autocast() {
    if (!enabled_) return;
    // The casts of weights cached for this scope are dropped when it ends.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    if (cuda_) {
      at::autocast::set_enabled(false);
    } else {
      at::autocast::set_cpu_enabled(false);
    }
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
  bool cuda_;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_AUTOCAST_H_
