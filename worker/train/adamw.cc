#include "worker/train/adamw.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

namespace lathe {
namespace {

// AdamW keys its per-parameter state by the parameter's TensorImpl: as a
// string in LibTorch 1.x, as a pointer in later releases.
template <typename Key>
Key StateKey(const torch::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;
    os << static_cast<const void*>(param.unsafeGetTensorImpl());
    return os.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

using StateMap =
    std::decay_t<decltype(std::declval<torch::optim::AdamW&>().state())>;
using Key = typename StateMap::key_type;

bool Fusable(const torch::Tensor& p, const torch::Tensor& g,
             const torch::optim::AdamWParamState* s) {
  auto ok = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 &&
           t.is_contiguous() && !t.is_sparse();
  };
  return ok(p) && ok(g) && g.numel() == p.numel() &&
         (s == nullptr || (ok(s->exp_avg()) && ok(s->exp_avg_sq())));
}

// p, m, v updated in place from g, element by element, in the order of
// LibTorch's operations: p *= 1 - lr*wd; m = m*b1 + (1-b1)*g;
// v = v*b2 + (1-b2)*g*g; p += -step_size * m / (sqrt(v)/sqrt(bc2) + eps).
void FusedUpdate(float* p, const float* g, float* m, float* v, int64_t n,
                 float decay, float b1, float one_minus_b1, float b2,
                 float one_minus_b2, float sqrt_bc2, float eps,
                 float neg_step) {
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      const float pi = p[i] * decay;
      const float mi = m[i] * b1 + one_minus_b1 * gi;
      const float vi = v[i] * b2 + one_minus_b2 * (gi * gi);
      const float denom = std::sqrt(vi) / sqrt_bc2 + eps;
      m[i] = mi;
      v[i] = vi;
      p[i] = pi + neg_step * (mi / denom);
    }
  });
}

}  // namespace

torch::optim::AdamWParamState* FindAdamState(torch::optim::AdamW& optimizer,
                                             const torch::Tensor& param) {
  auto& state = optimizer.state();
  auto it = state.find(StateKey<Key>(param));
  if (it == state.end()) return nullptr;
  return static_cast<torch::optim::AdamWParamState*>(it->second.get());
}

void SetAdamState(torch::optim::AdamW& optimizer, const torch::Tensor& param,
                  std::unique_ptr<torch::optim::AdamWParamState> state) {
  optimizer.state()[StateKey<Key>(param)] = std::move(state);
}

void EraseAdamState(torch::optim::AdamW& optimizer,
                    const torch::Tensor& param) {
  optimizer.state().erase(StateKey<Key>(param));
}

void AdamWStep(torch::optim::AdamW& optimizer) {
  torch::NoGradGuard no_grad;
  bool all_fusable = true;
  for (auto& group : optimizer.param_groups()) {
    const auto& o =
        static_cast<const torch::optim::AdamWOptions&>(group.options());
    if (o.amsgrad()) all_fusable = false;
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (!Fusable(p, p.grad(), FindAdamState(optimizer, p))) {
        all_fusable = false;
      }
    }
  }
  if (!all_fusable) {
    optimizer.step();
    return;
  }
  for (auto& group : optimizer.param_groups()) {
    const auto& o =
        static_cast<const torch::optim::AdamWOptions&>(group.options());
    const double beta1 = std::get<0>(o.betas());
    const double beta2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      torch::optim::AdamWParamState* s = FindAdamState(optimizer, p);
      if (s == nullptr) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        s = fresh.get();
        SetAdamState(optimizer, p, std::move(fresh));
      }
      s->step(s->step() + 1);
      const double bc1 = 1 - std::pow(beta1, s->step());
      const double bc2 = 1 - std::pow(beta2, s->step());
      const double decay =
          o.weight_decay() != 0 ? 1 - o.lr() * o.weight_decay() : 1.0;
      FusedUpdate(
          p.data_ptr<float>(), p.grad().data_ptr<float>(),
          s->exp_avg().data_ptr<float>(), s->exp_avg_sq().data_ptr<float>(),
          p.numel(), static_cast<float>(decay), static_cast<float>(beta1),
          static_cast<float>(1 - beta1), static_cast<float>(beta2),
          static_cast<float>(1 - beta2), static_cast<float>(std::sqrt(bc2)),
          static_cast<float>(o.eps()), static_cast<float>(-(o.lr() / bc1)));
    }
  }
}

}  // namespace lathe
