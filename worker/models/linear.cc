#include "worker/models/linear.h"

#include <cmath>
#include <vector>

namespace lathe {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool bias, bool fan_in_fan_out)
    : in_(in), out_(out), fan_in_fan_out_(fan_in_fan_out) {
  if (fan_in_fan_out_) {
    weight = register_parameter("weight", torch::empty({in, out}));
    if (bias) this->bias = register_parameter("bias", torch::zeros({out}));
    return;
  }
  weight = register_parameter("weight", torch::empty({out, in}));
  if (bias) this->bias = register_parameter("bias", torch::empty({out}));
  // The same draws, in the same order, as torch::nn::Linear's reset, so a
  // seeded model draws the same numbers it drew before this class existed.
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias) {
    const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0;
    torch::nn::init::uniform_(this->bias, -bound, bound);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y;
  if (fan_in_fan_out_) {
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = out_;
    torch::Tensor flat = x.reshape({-1, x.size(-1)});
    y = bias.defined() ? torch::addmm(bias, flat, weight)
                       : torch::matmul(flat, weight);
    y = y.view(shape);
  } else {
    y = torch::linear(x, weight, bias);
  }
  if (!has_lora()) return y;
  torch::Tensor h = x;
  if (dropout_ > 0 && is_training()) {
    h = torch::dropout(h, dropout_, /*train=*/true);
  }
  return y + lora_B(lora_A(h)) * scaling_;
}

void LinearImpl::AttachLora(int64_t r, double scaling, double dropout) {
  RemoveLora();
  const auto options = weight.options();
  // torch::nn::Linear's own reset is Kaiming-uniform with a = sqrt(5), the
  // initialisation PEFT gives lora_A.
  lora_A = register_module(
      "lora_A",
      torch::nn::Linear(torch::nn::LinearOptions(in_, r).bias(false)));
  lora_B = register_module(
      "lora_B",
      torch::nn::Linear(torch::nn::LinearOptions(r, out_).bias(false)));
  {
    torch::NoGradGuard no_grad;
    lora_B->weight.zero_();
  }
  lora_A->to(options.device(), options.dtype().toScalarType());
  lora_B->to(options.device(), options.dtype().toScalarType());
  lora_A->train(is_training());
  lora_B->train(is_training());
  scaling_ = scaling;
  dropout_ = dropout;
}

torch::Tensor LinearImpl::LoraDelta() const {
  if (!has_lora()) return torch::Tensor();
  torch::NoGradGuard no_grad;
  torch::Tensor delta =
      torch::matmul(lora_B->weight, lora_A->weight) * scaling_;  // [out, in]
  if (fan_in_fan_out_) delta = delta.t();
  return delta.to(weight.scalar_type());
}

void LinearImpl::MergeLora() {
  if (!has_lora()) return;
  torch::Tensor delta = LoraDelta();
  {
    torch::NoGradGuard no_grad;
    weight.add_(delta);
  }
  RemoveLora();
}

void LinearImpl::RemoveLora() {
  if (!has_lora()) return;
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A = torch::nn::Linear(nullptr);
  lora_B = torch::nn::Linear(nullptr);
  scaling_ = 0;
  dropout_ = 0;
}

}  // namespace lathe
