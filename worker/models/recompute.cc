#include "worker/models/recompute.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/ivalue.h>
#include <torch/torch.h>

#include <optional>
#include <utility>

namespace lathe {
namespace {

// What the forward call saw, kept for the recomputation.
struct Saved : torch::CustomClassHolder {
  TensorFn fn;
  bool input_required_grad = false;
  torch::Device device{torch::kCPU};
  torch::Tensor rng_state;  // Of device's default generator.
  bool cpu_autocast = false;
  bool gpu_autocast = false;
  at::ScalarType cpu_autocast_dtype = at::kBFloat16;
  at::ScalarType gpu_autocast_dtype = at::kHalf;
};

at::Generator DefaultGenerator(const torch::Device& device) {
  return at::globalContext().defaultGenerator(device);
}

torch::Tensor GetRngState(const torch::Device& device) {
  at::Generator gen = DefaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void SetRngState(const torch::Device& device, const torch::Tensor& state) {
  at::Generator gen = DefaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// Sets autocast as `s` recorded it for the scope, then puts back what was.
class AutocastAs {
 public:
  explicit AutocastAs(const Saved& s)
      : cpu_(at::autocast::is_cpu_enabled()),
        gpu_(at::autocast::is_enabled()),
        cpu_dtype_(at::autocast::get_autocast_cpu_dtype()),
        gpu_dtype_(at::autocast::get_autocast_gpu_dtype()) {
    at::autocast::set_cpu_enabled(s.cpu_autocast);
    at::autocast::set_enabled(s.gpu_autocast);
    at::autocast::set_autocast_cpu_dtype(s.cpu_autocast_dtype);
    at::autocast::set_autocast_gpu_dtype(s.gpu_autocast_dtype);
    nested_ = s.cpu_autocast || s.gpu_autocast;
    if (nested_) at::autocast::increment_nesting();
  }
  ~AutocastAs() {
    if (nested_ && at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_cpu_enabled(cpu_);
    at::autocast::set_enabled(gpu_);
    at::autocast::set_autocast_cpu_dtype(cpu_dtype_);
    at::autocast::set_autocast_gpu_dtype(gpu_dtype_);
  }
  AutocastAs(const AutocastAs&) = delete;
  AutocastAs& operator=(const AutocastAs&) = delete;

 private:
  bool cpu_, gpu_;
  at::ScalarType cpu_dtype_, gpu_dtype_;
  bool nested_ = false;
};

class Recompute : public torch::autograd::Function<Recompute> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               torch::Tensor x,
                               c10::intrusive_ptr<Saved> saved) {
    ctx->save_for_backward({x});
    torch::Tensor out;
    {
      torch::NoGradGuard no_grad;
      out = saved->fn(x);
    }
    ctx->saved_data["saved"] = c10::IValue::make_capsule(std::move(saved));
    return out;
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    auto saved = c10::static_intrusive_pointer_cast<Saved>(
        ctx->saved_data["saved"].toCapsule());
    torch::Tensor x =
        ctx->get_saved_variables()[0].detach().requires_grad_(true);
    // Draw the same random numbers as the forward call did, then put the
    // generator back where the backward pass found it.
    torch::Tensor now = GetRngState(saved->device);
    SetRngState(saved->device, saved->rng_state);
    torch::Tensor out;
    {
      torch::AutoGradMode grad_on(true);
      AutocastAs autocast(*saved);
      out = saved->fn(x);
    }
    SetRngState(saved->device, now);
    if (out.requires_grad()) {
      torch::autograd::backward({out}, {grads[0]});
    }
    torch::Tensor dx;
    if (saved->input_required_grad) dx = x.grad();
    return {dx, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor RecomputeInBackward(TensorFn fn, const torch::Tensor& x) {
  auto saved = c10::make_intrusive<Saved>();
  saved->fn = std::move(fn);
  saved->input_required_grad = x.requires_grad();
  saved->device = x.device();
  saved->rng_state = GetRngState(x.device());
  saved->cpu_autocast = at::autocast::is_cpu_enabled();
  saved->gpu_autocast = at::autocast::is_enabled();
  saved->cpu_autocast_dtype = at::autocast::get_autocast_cpu_dtype();
  saved->gpu_autocast_dtype = at::autocast::get_autocast_gpu_dtype();
  // An input without gradients would leave the output without a backward
  // function, and fn's parameters without gradients: give autograd a leaf
  // whose own gradient is dropped.
  torch::Tensor in = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return Recompute::apply(in, std::move(saved));
}

}  // namespace lathe
