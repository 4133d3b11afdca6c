// Lathe's projection layer: the model families' linear maps (torch.nn.Linear
// and Hugging Face's Conv1D) with room for a LoRA adapter. LibTorch.
#ifndef LATHE_WORKER_MODELS_LINEAR_H_
#define LATHE_WORKER_MODELS_LINEAR_H_

#include <torch/torch.h>

#include <cstdint>

namespace lathe {

// y = x W^T + b (weight [out, in], as torch.nn.Linear), or with
// `fan_in_fan_out` y = x W + b (weight [in, out], Hugging Face's Conv1D in
// GPT-2). Registers "weight" and, when `bias`, "bias", so parameter names are
// those of the module it replaces. Initialisation draws exactly what
// torch::nn::Linear draws (Kaiming-uniform weight, uniform bias); the
// fan_in_fan_out form starts with an uninitialised weight and a zero bias
// (the caller initialises it).
//
// A LoRA adapter (AttachLora) adds submodules "lora_A" (weight [r, in]) and
// "lora_B" (weight [out, r]), so its tensors are named
// "<module>.lora_A.weight" and "<module>.lora_B.weight" as PEFT names them
// once the adapter name is dropped; forward then adds
// lora_B(lora_A(dropout(x))) * scaling. Not thread-safe.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, bool fan_in_fan_out = false);

  torch::Tensor forward(const torch::Tensor& x);

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  bool fan_in_fan_out() const { return fan_in_fan_out_; }

  // Attaches a fresh adapter of rank `r` (A Kaiming-uniform as PEFT
  // initialises it, B zero, so the output is unchanged), on the weight's
  // device and dtype. `dropout` in [0, 1) applies to the adapter's input in
  // train() mode only. Replaces an adapter already attached.
  void AttachLora(int64_t r, double scaling, double dropout);
  bool has_lora() const { return !lora_A.is_empty(); }
  int64_t lora_rank() const { return has_lora() ? lora_A->weight.size(0) : 0; }
  double lora_scaling() const { return scaling_; }
  // B A * scaling in the weight's layout ([out, in], or [in, out] with
  // fan_in_fan_out); undefined without an adapter. No gradient.
  torch::Tensor LoraDelta() const;
  // Folds the adapter into the weight (W += delta) and removes it.
  void MergeLora();
  // The adapter's input dropout, in [0, 1).
  void SetLoraDropout(double dropout) { dropout_ = dropout; }
  // Removes the adapter without touching the weight.
  void RemoveLora();

  torch::Tensor weight;
  torch::Tensor bias;  // Undefined without a bias.
  torch::nn::Linear lora_A{nullptr};
  torch::nn::Linear lora_B{nullptr};

 private:
  int64_t in_;
  int64_t out_;
  bool fan_in_fan_out_;
  double scaling_ = 0;
  double dropout_ = 0;
};
TORCH_MODULE(Linear);

}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_LINEAR_H_
