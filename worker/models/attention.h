// Decoder attention: the additive mask (causal, sliding window, padding and
// packed rows) and the attention itself, through either the plain
// matmul-softmax-matmul or LibTorch's fused scaled-dot-product attention.
// LibTorch.
#ifndef LATHE_WORKER_MODELS_ATTENTION_H_
#define LATHE_WORKER_MODELS_ATTENTION_H_

#include <torch/torch.h>

#include <cstdint>

namespace lathe {

// The most negative finite value of `dtype`, the additive mask value.
double LowestOf(torch::ScalarType dtype);

// [B or 1, 1, T, T] additive mask: 0 where query i may attend key j, the
// dtype's lowest value elsewhere. Query i attends key j when j <= i, and
// i - j < window when window > 0, and key j is not padding
// (attention_mask[b, j] == 1, when defined), and, when `segments` [B, T] is
// defined, both positions lie in the same packed row (equal segment ids).
torch::Tensor DecoderMask(const torch::Tensor& attention_mask,
                          const torch::Tensor& segments, int64_t t,
                          int64_t window, torch::ScalarType dtype,
                          torch::Device device);

enum class AttentionKernel {
  kPlain,  // matmul, float32 softmax, matmul
  kFused,  // LibTorch's scaled_dot_product_attention
};

// The kernel decoders use: fused where LibTorch has the public
// scaled_dot_product_attention (2.0 and later: flash and memory-efficient
// kernels on CUDA), plain on LibTorch 1.13.
AttentionKernel DefaultAttentionKernel();

// softmax(q k^T * scale + mask) v for q [B, h, T, d], k and v [B, h, S, d]
// and an additive `mask` broadcastable to [B, h, T, S] (undefined: none),
// with dropout on the probabilities while training. The plain kernel takes
// the softmax in float32. The fused one gets q pre-scaled so that its own
// 1/sqrt(d) gives `scale`; on 1.13 it is the private
// _scaled_dot_product_attention, which computes the same thing and lets
// the two be compared there.
torch::Tensor Attend(const torch::Tensor& q, const torch::Tensor& k,
                     const torch::Tensor& v, const torch::Tensor& mask,
                     double scale, double dropout, bool training,
                     AttentionKernel kernel);

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_ATTENTION_H_
