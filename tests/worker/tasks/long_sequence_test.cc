// What long sequences rest on: activation checkpointing gives the gradients
// of the plain backward pass (dropout included), both attention kernels
// agree, a packed batch gives each row the logits and loss it has alone,
// the chunked causal-LM loss equals the plain one in value and gradients,
// and the packing plan keeps every row once within the capacity. Small
// random models built from config.json keys.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/models/attention.h"
#include "worker/models/model.h"
#include "worker/models/model_config.h"
#include "worker/tasks/lm_data.h"
#include "worker/tasks/lm_tasks.h"
#include "worker/tasks/packed_data.h"
#include "worker/train/autocast.h"

namespace lathe {
namespace {

using nlohmann::json;

constexpr int64_t kVocab = 64;

// Every family with transformer layers, small, with dropout everywhere it
// has some (so recomputation must replay the same masks).
json SmallConfig(const std::string& type) {
  if (type == "gpt2") {
    return {{"model_type", "gpt2"}, {"vocab_size", kVocab}, {"n_embd", 32},
            {"n_layer", 2},         {"n_head", 4},          {"n_positions", 64},
            {"resid_pdrop", 0.1},   {"attn_pdrop", 0.1},    {"embd_pdrop", 0.1},
            {"bos_token_id", 0},    {"eos_token_id", 0}};
  }
  if (type == "bert") {
    return {{"model_type", "bert"},
            {"vocab_size", kVocab},
            {"hidden_size", 32},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"intermediate_size", 64},
            {"max_position_embeddings", 64},
            {"hidden_dropout_prob", 0.1},
            {"attention_probs_dropout_prob", 0.1}};
  }
  if (type == "distilbert") {
    return {{"model_type", "distilbert"},
            {"vocab_size", kVocab},
            {"dim", 32},
            {"n_layers", 2},
            {"n_heads", 4},
            {"hidden_dim", 64},
            {"max_position_embeddings", 64},
            {"dropout", 0.1},
            {"attention_dropout", 0.1}};
  }
  return {{"model_type", "llama"},    {"vocab_size", kVocab},
          {"hidden_size", 32},        {"intermediate_size", 64},
          {"num_hidden_layers", 2},   {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"max_position_embeddings", 64},
          {"attention_dropout", 0.1}};
}

TaskModel Make(const std::string& type, HeadKind head, uint64_t seed = 3) {
  auto config = ModelConfig::FromJson(SmallConfig(type));
  EXPECT_TRUE(config.ok()) << config.status();
  torch::manual_seed(seed);
  auto m = CreateModel(*config, head);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

std::map<std::string, torch::Tensor> Grads(TaskModelImpl& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) {
    if (p.value().grad().defined()) {
      out[p.key()] = p.value().grad().clone();
    }
  }
  return out;
}

// One training step's gradients with dropout on, from a fixed seed.
std::map<std::string, torch::Tensor> StepGrads(TaskModelImpl& m,
                                               const ModelInputs& in) {
  m.zero_grad();
  torch::manual_seed(11);
  torch::Tensor out = m.forward(in);
  out.pow(2).mean().backward();
  return Grads(m);
}

ModelInputs TwoRows() {
  torch::manual_seed(1);
  ModelInputs in;
  in.input_ids = torch::randint(1, kVocab, {2, 12}, torch::kLong);
  in.attention_mask = torch::ones({2, 12}, torch::kLong);
  in.attention_mask[1].slice(0, 9) = 0;
  return in;
}

TEST(GradientCheckpointingTest, SameGradientsAsThePlainBackwardPass) {
  for (const std::string type : {"llama", "gpt2", "bert", "distilbert"}) {
    SCOPED_TRACE(type);
    const HeadKind head = type == "llama" || type == "gpt2"
                              ? HeadKind::kCausalLm
                              : HeadKind::kMaskedLm;
    TaskModel m = Make(type, head);
    m->train();
    const ModelInputs in = TwoRows();
    const auto plain = StepGrads(*m, in);
    ASSERT_TRUE(m->SetGradientCheckpointing(true));
    const auto recomputed = StepGrads(*m, in);
    ASSERT_EQ(plain.size(), recomputed.size());
    ASSERT_GT(plain.size(), 10u);
    for (const auto& [name, g] : plain) {
      ASSERT_TRUE(recomputed.count(name)) << name;
      EXPECT_TRUE(torch::allclose(g, recomputed.at(name), 1e-5, 1e-7))
          << name << " differs by "
          << (g - recomputed.at(name)).abs().max().item<double>();
    }
    // The same dropout masks matter: another seed gives other gradients,
    // so the equality above is not a property of any two runs.
    m->zero_grad();
    torch::manual_seed(12);
    m->forward(in).pow(2).mean().backward();
    const auto other = Grads(*m);
    const std::string some = plain.begin()->first;
    EXPECT_FALSE(torch::allclose(plain.at(some), other.at(some), 1e-5, 1e-7))
        << some;
  }
}

// Under bf16 autocast the recomputation must run in bfloat16 too (a float32
// recompute gives visibly different gradients); weights and gradients stay
// float32 either way.
TEST(GradientCheckpointingTest, RecomputesUnderTheSameAutocast) {
  TaskModel m = Make("llama", HeadKind::kCausalLm);
  m->train();
  const ModelInputs in = TwoRows();
  auto bf16_grads = [&] {
    m->zero_grad();
    torch::manual_seed(11);
    torch::Tensor loss;
    {
      Bf16Autocast autocast(true, torch::kCPU);
      loss = m->forward(in).to(torch::kFloat).pow(2).mean();
    }
    loss.backward();
    return Grads(*m);
  };
  const auto plain = bf16_grads();
  m->SetGradientCheckpointing(true);
  const auto recomputed = bf16_grads();
  m->SetGradientCheckpointing(false);
  const auto f32 = StepGrads(*m, in);
  // Largest difference relative to the largest gradient entry.
  auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
        .item<double>();
  };
  double worst_bf16_vs_f32 = 0;
  for (const auto& [name, g] : plain) {
    EXPECT_EQ(g.scalar_type(), torch::kFloat) << name;
    EXPECT_LT(rel(g, recomputed.at(name)), 1e-5) << name;
    worst_bf16_vs_f32 = std::max(worst_bf16_vs_f32, rel(g, f32.at(name)));
  }
  for (const auto& p : m->parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat);
  }
  // bfloat16 matters: the float32 pass gives visibly other gradients.
  EXPECT_GT(worst_bf16_vs_f32, 1e-3);
}

TEST(GradientCheckpointingTest, LayersBelowAFrozenEmbeddingStillTrain) {
  TaskModel m = Make("llama", HeadKind::kCausalLm);
  m->train();
  for (auto& p : m->named_parameters()) {
    if (p.key().find("embed_tokens") != std::string::npos) {
      p.value().set_requires_grad(false);
    }
  }
  const ModelInputs in = TwoRows();
  const auto plain = StepGrads(*m, in);
  m->SetGradientCheckpointing(true);
  const auto recomputed = StepGrads(*m, in);
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  ASSERT_TRUE(plain.count(q));
  ASSERT_TRUE(recomputed.count(q)) << "no gradient under checkpointing";
  EXPECT_TRUE(torch::allclose(plain.at(q), recomputed.at(q), 1e-5, 1e-7));
  EXPECT_EQ(plain.size(), recomputed.size());
}

TEST(GradientCheckpointingTest, EvaluationAndImageModelsAreUnchanged) {
  TaskModel m = Make("gpt2", HeadKind::kCausalLm);
  m->eval();
  const ModelInputs in = TwoRows();
  torch::NoGradGuard no_grad;
  const torch::Tensor before = m->forward(in);
  m->SetGradientCheckpointing(true);
  EXPECT_TRUE(torch::equal(before, m->forward(in)));
}

TEST(AttentionTest, PlainAndFusedKernelsAgree) {
  torch::manual_seed(4);
  const torch::Tensor q = torch::randn({2, 4, 10, 8});
  const torch::Tensor k = torch::randn({2, 4, 10, 8});
  const torch::Tensor v = torch::randn({2, 4, 10, 8});
  torch::Tensor pad = torch::ones({2, 10}, torch::kLong);
  pad[1].slice(0, 7) = 0;
  torch::Tensor segments = torch::tensor(
      {{1, 1, 1, 2, 2, 2, 2, 3, 3, 3}, {1, 1, 1, 1, 1, 1, 1, 0, 0, 0}},
      torch::kLong);
  for (const double scale : {1.0 / std::sqrt(8.0), 0.1}) {
    for (const torch::Tensor& mask :
         {DecoderMask(pad, torch::Tensor(), 10, 0, torch::kFloat, torch::kCPU),
          DecoderMask(pad, segments, 10, 3, torch::kFloat, torch::kCPU)}) {
      const torch::Tensor plain =
          Attend(q, k, v, mask, scale, 0, false, AttentionKernel::kPlain);
      const torch::Tensor fused =
          Attend(q, k, v, mask, scale, 0, false, AttentionKernel::kFused);
      EXPECT_LT((plain - fused).abs().max().item<double>(), 1e-5)
          << "scale " << scale;
    }
  }
}

TEST(AttentionTest, SegmentsConfineAttentionToTheirRow) {
  const torch::Tensor segments =
      torch::tensor({{1, 1, 2, 2, 2, 0}}, torch::kLong);
  const torch::Tensor pad = (segments != 0).to(torch::kLong);
  const torch::Tensor m =
      DecoderMask(pad, segments, 6, 0, torch::kFloat, torch::kCPU)[0][0];
  const torch::Tensor allowed = m.eq(0);
  // Row 2's first token sees only itself; its last sees its own row.
  EXPECT_TRUE(torch::equal(
      allowed[2], torch::tensor({false, false, true, false, false, false})));
  EXPECT_TRUE(torch::equal(
      allowed[4], torch::tensor({false, false, true, true, true, false})));
  EXPECT_TRUE(torch::equal(
      allowed[1], torch::tensor({true, true, false, false, false, false})));
}

// Mean next-token loss of one row's logits [T, V] against its ids.
double RowLoss(const torch::Tensor& logits, const torch::Tensor& ids) {
  return torch::nn::functional::cross_entropy(
             logits.slice(0, 0, logits.size(0) - 1), ids.slice(0, 1))
      .item<double>();
}

TEST(PackingTest, APackedBatchGivesEachRowItsOwnLogitsAndLoss) {
  for (const std::string type : {"llama", "gpt2"}) {
    SCOPED_TRACE(type);
    TaskModel m = Make(type, HeadKind::kCausalLm);
    m->eval();
    torch::NoGradGuard no_grad;
    torch::manual_seed(2);
    const std::vector<torch::Tensor> rows = {
        torch::randint(1, kVocab, {5}, torch::kLong),
        torch::randint(1, kVocab, {7}, torch::kLong),
        torch::randint(1, kVocab, {3}, torch::kLong)};
    // Alone: each row its own batch.
    std::vector<torch::Tensor> alone;
    for (const auto& r : rows) {
      ModelInputs in;
      in.input_ids = r.view({1, -1});
      in.attention_mask = torch::ones_like(in.input_ids);
      alone.push_back(m->forward(in)[0]);
    }
    // Packed: all three in one sequence, padded by 2.
    const int64_t t = 5 + 7 + 3 + 2;
    ModelInputs packed;
    packed.input_ids = torch::zeros({1, t}, torch::kLong);
    packed.attention_mask = torch::zeros({1, t}, torch::kLong);
    packed.position_ids = torch::zeros({1, t}, torch::kLong);
    packed.segment_ids = torch::zeros({1, t}, torch::kLong);
    int64_t at = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t n = rows[i].size(0);
      packed.input_ids[0].slice(0, at, at + n) = rows[i];
      packed.attention_mask[0].slice(0, at, at + n) = 1;
      packed.position_ids[0].slice(0, at, at + n) =
          torch::arange(n, torch::kLong);
      packed.segment_ids[0].slice(0, at, at + n) = static_cast<int64_t>(i + 1);
      at += n;
    }
    const torch::Tensor logits = m->forward(packed)[0];
    at = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t n = rows[i].size(0);
      const torch::Tensor mine = logits.slice(0, at, at + n);
      EXPECT_LT((mine - alone[i]).abs().max().item<double>(), 1e-5)
          << "row " << i;
      EXPECT_NEAR(RowLoss(mine, rows[i]), RowLoss(alone[i], rows[i]), 1e-5);
      at += n;
    }
    // Without segment ids the later rows would see the earlier ones.
    ModelInputs crossing = packed;
    crossing.segment_ids = torch::Tensor();
    const torch::Tensor leaked = m->forward(crossing)[0].slice(0, 5, 12);
    EXPECT_GT((leaked - alone[1]).abs().max().item<double>(), 1e-3);
  }
}

TEST(ChunkedLossTest, EqualsThePlainLossInValueAndGradients) {
  TaskModel m = Make("llama", HeadKind::kCausalLm);
  ASSERT_TRUE(m->has_lm_head());
  // No dropout: both losses must see the same forward.
  m->eval();
  ModelInputs in = TwoRows();
  torch::Tensor labels = in.input_ids.clone();
  labels[1].slice(0, 9) = kIgnoreLabel;
  labels[0].slice(0, 0, 3) = kIgnoreLabel;
  m->zero_grad();
  torch::Tensor plain = CausalLmLoss(m->forward(in), labels);
  plain.backward();
  const auto plain_grads = Grads(*m);
  // 3 positions' logits at a time: 15 labelled positions in 5 chunks.
  for (const int64_t budget : {kVocab * 3, int64_t{1} << 20}) {
    SCOPED_TRACE(budget);
    m->zero_grad();
    torch::Tensor chunked =
        ChunkedCausalLmLoss(*m, m->ForwardHidden(in), labels, budget);
    EXPECT_NEAR(chunked.item<double>(), plain.item<double>(), 1e-6);
    chunked.backward();
    const auto grads = Grads(*m);
    ASSERT_EQ(grads.size(), plain_grads.size());
    for (const auto& [name, g] : plain_grads) {
      EXPECT_TRUE(torch::allclose(g, grads.at(name), 1e-5, 1e-7)) << name;
    }
  }
  // No labelled position: zero, with a graph.
  torch::Tensor none = torch::full_like(labels, kIgnoreLabel);
  torch::Tensor zero =
      ChunkedCausalLmLoss(*m, m->ForwardHidden(in), none, kVocab * 3);
  EXPECT_EQ(zero.item<double>(), 0.0);
  EXPECT_TRUE(zero.requires_grad());
}

// Masked-lm's training loss applies the LM head at the masked positions
// only: the same value and gradients as the head over every position.
TEST(ChunkedLossTest, MaskedLmHeadOnlyAtMaskedPositions) {
  for (const std::string type : {"bert", "distilbert"}) {
    SCOPED_TRACE(type);
    TaskModel m = Make(type, HeadKind::kMaskedLm);
    ASSERT_TRUE(m->has_lm_head());
    m->eval();
    ModelInputs in = TwoRows();
    torch::Tensor labels = torch::full_like(in.input_ids, kIgnoreLabel);
    for (int64_t j : {1, 4, 7}) labels[0][j] = in.input_ids[0][j];
    for (int64_t j : {2, 8}) labels[1][j] = in.input_ids[1][j];
    m->zero_grad();
    torch::Tensor logits = m->forward(in);
    torch::Tensor plain = torch::nn::functional::cross_entropy(
        logits.reshape({-1, kVocab}), labels.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(
            kIgnoreLabel));
    plain.backward();
    const auto plain_grads = Grads(*m);
    for (const int64_t budget : {kVocab * 2, int64_t{1} << 20}) {
      SCOPED_TRACE(budget);
      m->zero_grad();
      torch::Tensor hidden = m->ForwardHidden(in);
      torch::Tensor flat = labels.reshape({-1});
      torch::Tensor keep = (flat != kIgnoreLabel).nonzero().squeeze(1);
      torch::Tensor loss = ProjectedLmLoss(
          *m, hidden.reshape({-1, hidden.size(-1)}).index_select(0, keep),
          flat.index_select(0, keep), budget);
      EXPECT_NEAR(loss.item<double>(), plain.item<double>(), 1e-6);
      loss.backward();
      const auto grads = Grads(*m);
      ASSERT_EQ(grads.size(), plain_grads.size());
      for (const auto& [name, g] : plain_grads) {
        EXPECT_TRUE(torch::allclose(g, grads.at(name), 1e-5, 1e-7)) << name;
      }
    }
  }
}

TEST(PackRowsTest, EveryRowOnceWithinCapacity) {
  const std::vector<int64_t> lengths = {5, 9, 2, 7, 3, 8, 1, 4, 10, 6};
  const auto packs = PackRows(lengths, 10);
  std::multiset<size_t> seen;
  for (const auto& pack : packs) {
    int64_t total = 0;
    for (size_t i : pack) {
      seen.insert(i);
      total += lengths[i];
    }
    EXPECT_LE(total, 10);
    EXPECT_TRUE(std::is_sorted(pack.begin(), pack.end()));
  }
  EXPECT_EQ(seen.size(), lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) EXPECT_EQ(seen.count(i), 1u);
  // 55 tokens fit in 6 packs of 10 at best; best fit reaches it here.
  EXPECT_EQ(packs.size(), 6u);
  for (size_t p = 1; p < packs.size(); ++p) {
    EXPECT_LT(packs[p - 1].front(), packs[p].front());
  }
  EXPECT_EQ(PackRows(lengths, 10), packs);
  // The plan bench/train/reference.py's pack_rows gives for the same rows.
  EXPECT_EQ(packs, (std::vector<std::vector<size_t>>{
                       {0}, {1, 6}, {2, 5}, {3, 4}, {7, 9}, {8}}));
}

TEST(PackRowsTest, ExactFitsAndOversizedRows) {
  EXPECT_EQ(PackRows({4, 4, 4, 4}, 8),
            (std::vector<std::vector<size_t>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(PackRows({12, 3}, 8), (std::vector<std::vector<size_t>>{{0}, {1}}));
  EXPECT_TRUE(PackRows({}, 8).empty());
}

}  // namespace
}  // namespace lathe
