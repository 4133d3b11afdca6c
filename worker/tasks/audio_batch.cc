#include "worker/tasks/audio_batch.h"

#include <algorithm>

namespace lathe {

ModelInputs AudioBatch(const std::vector<const std::vector<float>*>& clips,
                       const torch::Device& device) {
  size_t longest = 1;
  for (const auto* c : clips) longest = std::max(longest, c->size());
  const int64_t b = static_cast<int64_t>(clips.size());
  torch::Tensor values =
      torch::zeros({b, static_cast<int64_t>(longest)}, torch::kFloat32);
  torch::Tensor mask =
      torch::zeros({b, static_cast<int64_t>(longest)}, torch::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const std::vector<float>& c = *clips[static_cast<size_t>(i)];
    const int64_t n = static_cast<int64_t>(c.size());
    if (n == 0) continue;
    values[i].narrow(0, 0, n).copy_(
        torch::from_blob(const_cast<float*>(c.data()), {n}, torch::kFloat32));
    mask[i].narrow(0, 0, n).fill_(1);
  }
  ModelInputs in;
  in.input_values = values.to(device);
  in.attention_mask = mask.to(device);
  return in;
}

}  // namespace lathe
