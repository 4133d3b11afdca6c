#include "worker/train/adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <vector>

namespace lathe {
namespace {

// Two identical parameter sets, one stepped by LibTorch's AdamW, the other
// by AdamWStep, with the trainer's two groups (decayed and not) and a
// parameter without a gradient.
struct Twins {
  std::vector<torch::Tensor> a, b;
  std::unique_ptr<torch::optim::AdamW> opt_a, opt_b;
};

Twins MakeTwins() {
  torch::manual_seed(3);
  Twins t;
  for (const auto& shape : std::vector<std::vector<int64_t>>{
           {70000}, {33, 17}, {5}, {1000, 64}, {12}}) {
    torch::Tensor x = torch::randn(shape);
    t.a.push_back(x.clone().requires_grad_(true));
    t.b.push_back(x.clone().requires_grad_(true));
  }
  auto make = [](const std::vector<torch::Tensor>& p) {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(
        std::vector<torch::Tensor>{p[0], p[1], p[3]},
        std::make_unique<torch::optim::AdamWOptions>(
            torch::optim::AdamWOptions(2e-3).weight_decay(0.01).eps(1e-8)));
    groups.emplace_back(
        std::vector<torch::Tensor>{p[2], p[4]},
        std::make_unique<torch::optim::AdamWOptions>(
            torch::optim::AdamWOptions(2e-3).weight_decay(0.0).eps(1e-8)));
    return std::make_unique<torch::optim::AdamW>(
        groups, torch::optim::AdamWOptions(2e-3));
  };
  t.opt_a = make(t.a);
  t.opt_b = make(t.b);
  return t;
}

void SetGradients(Twins& t, int step) {
  for (size_t i = 0; i < t.a.size(); ++i) {
    if (i == 4 && step == 0) {  // No gradient at the first step.
      t.a[i].mutable_grad() = torch::Tensor();
      t.b[i].mutable_grad() = torch::Tensor();
      continue;
    }
    torch::Tensor g = torch::randn(t.a[i].sizes()) * (1 + step);
    t.a[i].mutable_grad() = g.clone();
    t.b[i].mutable_grad() = g.clone();
  }
}

TEST(AdamWTest, MatchesLibTorchAdamW) {
  Twins t = MakeTwins();
  for (int step = 0; step < 5; ++step) {
    SetGradients(t, step);
    t.opt_a->step();
    AdamWStep(*t.opt_b);
  }
  for (size_t i = 0; i < t.a.size(); ++i) {
    const double diff = (t.a[i] - t.b[i]).abs().max().item<double>();
    EXPECT_LT(diff, 1e-6) << "parameter " << i;
    auto* sa = FindAdamState(*t.opt_a, t.a[i]);
    auto* sb = FindAdamState(*t.opt_b, t.b[i]);
    ASSERT_NE(sa, nullptr);
    ASSERT_NE(sb, nullptr);
    EXPECT_EQ(sa->step(), sb->step()) << "parameter " << i;
    EXPECT_EQ(sb->step(), i == 4 ? 4 : 5);
    EXPECT_LT((sa->exp_avg() - sb->exp_avg()).abs().max().item<double>(), 1e-6);
    EXPECT_LT((sa->exp_avg_sq() - sb->exp_avg_sq()).abs().max().item<double>(),
              1e-6);
  }
  // The steps moved the weights (the comparison is not of untouched ones).
  torch::manual_seed(3);
  const torch::Tensor start = torch::randn({70000});
  EXPECT_GT((t.b[0] - start).abs().max().item<double>(), 5e-3);
}

TEST(AdamWTest, ResumesFromStateSetByHand) {
  Twins t = MakeTwins();
  SetGradients(t, 1);
  t.opt_a->step();
  AdamWStep(*t.opt_b);
  // A fresh optimizer given b's state (as a resumed run is) continues alike.
  auto moved = std::make_unique<torch::optim::AdamW>(
      std::vector<torch::Tensor>{t.b[0]},
      torch::optim::AdamWOptions(2e-3).weight_decay(0.01).eps(1e-8));
  auto* s = FindAdamState(*t.opt_b, t.b[0]);
  auto copy = std::make_unique<torch::optim::AdamWParamState>();
  copy->step(s->step());
  copy->exp_avg(s->exp_avg().clone());
  copy->exp_avg_sq(s->exp_avg_sq().clone());
  SetAdamState(*moved, t.b[0], std::move(copy));
  SetGradients(t, 2);
  t.opt_a->step();
  AdamWStep(*moved);
  EXPECT_LT((t.a[0] - t.b[0]).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(FindAdamState(*moved, t.b[0])->step(), 2);
}

// A parameter the fused path cannot take (float64) sends the whole step to
// LibTorch's AdamW, which still gives the same result.
TEST(AdamWTest, OtherDtypesTakeLibTorchsStep) {
  torch::Tensor x = torch::randn({64}, torch::kFloat64);
  torch::Tensor a = x.clone().requires_grad_(true);
  torch::Tensor b = x.clone().requires_grad_(true);
  torch::optim::AdamW oa({a}, torch::optim::AdamWOptions(1e-2));
  torch::optim::AdamW ob({b}, torch::optim::AdamWOptions(1e-2));
  for (int i = 0; i < 3; ++i) {
    torch::Tensor g = torch::randn({64}, torch::kFloat64);
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    oa.step();
    AdamWStep(ob);
  }
  EXPECT_TRUE(torch::equal(a, b));
}

}  // namespace
}  // namespace lathe
