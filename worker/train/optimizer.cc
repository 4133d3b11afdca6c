#include "worker/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace lathe {

std::vector<std::pair<std::string, torch::Tensor>> UniqueParameters(
    const TaskModelImpl& model) {
  std::set<std::string> aliases;
  for (const auto& [alias, source] : model.tied_parameters()) {
    aliases.insert(alias);
  }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  std::set<const void*> seen;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (aliases.count(item.key())) continue;
    if (!seen.insert(item.value().unsafeGetTensorImpl()).second) continue;
    out.emplace_back(item.key(), item.value());
  }
  return out;
}

TrainingOptimizer BuildOptimizer(const TaskModelImpl& model,
                                 const TrainParams& params) {
  TrainingOptimizer out;
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& [key, value] : UniqueParameters(model)) {
    out.total_count += value.numel();
    if (!value.requires_grad()) continue;
    out.trainable_count += value.numel();
    (value.dim() <= 1 ? no_decay : decay).push_back(value);
    out.trainable.push_back(value);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(params.learning_rate)
                              .weight_decay(params.weight_decay)
                              .eps(1e-8)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(params.learning_rate)
                              .weight_decay(0.0)
                              .eps(1e-8)));
  out.adamw = std::make_unique<torch::optim::AdamW>(
      groups, torch::optim::AdamWOptions(params.learning_rate));
  return out;
}

double LearningRate(const std::string& type, int64_t step0, double base,
                    int64_t warmup, int64_t total) {
  if (step0 < warmup) return base * step0 / std::max<int64_t>(1, warmup);
  if (type == "constant") return base;
  const double progress = static_cast<double>(step0 - warmup) /
                          std::max<int64_t>(1, total - warmup);
  if (type == "cosine") {
    return base * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return base * std::max(0.0, 1.0 - progress);
}

void SetLearningRate(torch::optim::AdamW& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

}  // namespace lathe
