#include "worker/models/attention.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <tuple>

namespace lathe {

double LowestOf(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kDouble:
      return std::numeric_limits<double>::lowest();
    case torch::kHalf:
      return -65504.0;
    case torch::kBFloat16:
      return -3.3895313892515355e38;
    default:
      return std::numeric_limits<float>::lowest();
  }
}

torch::Tensor DecoderMask(const torch::Tensor& attention_mask,
                          const torch::Tensor& segments, int64_t t,
                          int64_t window, torch::ScalarType dtype,
                          torch::Device device) {
  auto bool_opts = torch::TensorOptions().dtype(torch::kBool).device(device);
  torch::Tensor allowed = torch::ones({t, t}, bool_opts).tril();
  if (window > 0 && window < t) {
    allowed = allowed.triu(-(window - 1));
  }
  allowed = allowed.view({1, 1, t, t});
  if (attention_mask.defined()) {
    allowed = allowed.logical_and(
        attention_mask.to(torch::kBool).view({-1, 1, 1, t}));
  }
  if (segments.defined()) {
    torch::Tensor same =
        segments.unsqueeze(2).eq(segments.unsqueeze(1)).unsqueeze(1);
    allowed = allowed.logical_and(same);
  }
  return torch::zeros(allowed.sizes(),
                      torch::TensorOptions().dtype(dtype).device(device))
      .masked_fill(allowed.logical_not(), LowestOf(dtype));
}

AttentionKernel DefaultAttentionKernel() {
#if TORCH_VERSION_MAJOR >= 2
  return AttentionKernel::kFused;
#else
  return AttentionKernel::kPlain;
#endif
}

torch::Tensor Attend(const torch::Tensor& q, const torch::Tensor& k,
                     const torch::Tensor& v, const torch::Tensor& mask,
                     double scale, double dropout, bool training,
                     AttentionKernel kernel) {
  const double p = training ? dropout : 0.0;
  if (kernel == AttentionKernel::kFused) {
    const double own = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    torch::Tensor qs = scale == own ? q : q * (scale / own);
    c10::optional<torch::Tensor> m;
    if (mask.defined()) m = mask.to(q.scalar_type());
#if TORCH_VERSION_MAJOR >= 2
    return at::scaled_dot_product_attention(qs, k, v, m, p);
#else
    return std::get<0>(at::_scaled_dot_product_attention(qs, k, v, m, p));
#endif
  }
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1));
  if (scale != 1.0) scores = scores * scale;
  if (mask.defined()) scores = scores + mask;
  torch::Tensor probs =
      torch::softmax(scores, -1, torch::kFloat).to(q.scalar_type());
  if (p > 0) probs = torch::dropout(probs, p, /*train=*/true);
  return torch::matmul(probs, v);
}

}  // namespace lathe
