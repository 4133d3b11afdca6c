// Preference tuning (method=dpo): the loss against values worked out by hand,
// per-sequence log-probabilities (plain and projected a chunk at a time),
// the preference reader's formats and errors, the DPO task's batches with a
// real tokenizer, and the loss of one batch against the PyTorch reference
// (bench/train/reference.py dpo, run with Debian's python3-torch).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/support/temp_dir.h"
#include "worker/models/model.h"
#include "worker/models/model_config.h"
#include "worker/tasks/lm_data.h"
#include "worker/tasks/lm_tasks.h"
#include "worker/tasks/preference_data.h"
#include "worker/tasks/task.h"

namespace lathe {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string AssetsDir() {
  std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe");
  for (int up = 0; up < 4; ++up) {
    p = p.parent_path();
    if (std::filesystem::exists(p / "assets" / "llama2")) {
      return (p / "assets").string();
    }
  }
  return "";
}

TEST(DpoLossTest, MatchesValuesWorkedOutByHand) {
  // Two pairs, beta 0.1.
  //   pair 0: rewards 0.1 * (-10 + 11) = 0.1 and 0.1 * (-12 + 11) = -0.1,
  //           margin 0.2, loss log(1 + e^-0.2) = 0.598138869...
  //   pair 1: rewards 0.1 * (-5 + 5) = 0 and 0.1 * (-4 + 6) = 0.2,
  //           margin -0.2, loss log(1 + e^0.2) = 0.798138869...
  torch::Tensor pc = torch::tensor({-10.0, -5.0}).requires_grad_(true);
  torch::Tensor pr = torch::tensor({-12.0, -4.0}).requires_grad_(true);
  DpoTerms t = DpoLoss(pc, pr, torch::tensor({-11.0, -5.0}),
                       torch::tensor({-11.0, -6.0}), 0.1);
  EXPECT_NEAR(t.loss.item<double>(), (0.5981388693 + 0.7981388693) / 2, 1e-6);
  EXPECT_NEAR(t.chosen_rewards[0].item<double>(), 0.1, 1e-6);
  EXPECT_NEAR(t.rejected_rewards[0].item<double>(), -0.1, 1e-6);
  EXPECT_NEAR(t.chosen_rewards[1].item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(t.rejected_rewards[1].item<double>(), 0.2, 1e-6);
  EXPECT_FALSE(t.chosen_rewards.requires_grad());
  t.loss.backward();
  // d loss / d policy_chosen_i = -beta * sigmoid(-margin_i) / B, and the
  // opposite for the rejected reply: sigmoid(-0.2) = 0.450166, sigmoid(0.2)
  // = 0.549834.
  EXPECT_NEAR(pc.grad()[0].item<double>(), -0.1 * 0.4501660027 / 2, 1e-7);
  EXPECT_NEAR(pc.grad()[1].item<double>(), -0.1 * 0.5498339973 / 2, 1e-7);
  EXPECT_NEAR(pr.grad()[0].item<double>(), 0.1 * 0.4501660027 / 2, 1e-7);
  // Equal policy and reference: every reward 0, the loss log 2.
  DpoTerms same = DpoLoss(pc, pr, pc.detach(), pr.detach(), 0.5);
  EXPECT_NEAR(same.loss.item<double>(), std::log(2.0), 1e-7);
}

TEST(SequenceLogProbsTest, SumsTheLabelledTokensOfEachRow) {
  torch::manual_seed(5);
  torch::Tensor logits = torch::randn({2, 4, 7});
  torch::Tensor labels =
      torch::tensor({{3, -100, 5, 6}, {-100, -100, -100, -100}}, torch::kLong);
  torch::Tensor got = SequenceLogProbs(logits, labels);
  torch::Tensor lp = torch::log_softmax(logits, -1);
  // Row 0: position 1 predicts label[2] = 5, position 2 predicts 6; the -100
  // at index 1 and the unshifted first label are not scored.
  const double want0 = lp[0][1][5].item<double>() + lp[0][2][6].item<double>();
  EXPECT_NEAR(got[0].item<double>(), want0, 1e-5);
  EXPECT_EQ(got[1].item<double>(), 0.0);
}

TaskModel SmallLlama(int64_t vocab, uint64_t seed) {
  json j = {{"model_type", "llama"},
            {"vocab_size", vocab},
            {"hidden_size", 32},
            {"intermediate_size", 64},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 2},
            {"max_position_embeddings", 128},
            {"tie_word_embeddings", false},
            {"bos_token_id", 1},
            {"eos_token_id", 2}};
  auto config = ModelConfig::FromJson(j);
  EXPECT_TRUE(config.ok()) << config.status();
  torch::manual_seed(seed);
  auto m = CreateModel(*config, HeadKind::kCausalLm);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

TEST(SequenceLogProbsTest, ProjectedInChunksEqualsTheFullLogits) {
  TaskModel model = SmallLlama(50, 3);
  model->eval();
  torch::manual_seed(2);
  ModelInputs in;
  in.input_ids = torch::randint(3, 50, {3, 9}, torch::kLong);
  in.attention_mask = torch::ones({3, 9}, torch::kLong);
  in.attention_mask[2].slice(0, 6) = 0;
  torch::Tensor labels = in.input_ids.clone();
  labels.slice(1, 0, 3) = -100;  // A prompt.
  labels[2].slice(0, 6) = -100;  // Padding.
  auto grads = [&](const torch::Tensor& loss) {
    model->zero_grad();
    loss.backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : model->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  torch::Tensor weights = torch::tensor({1.0, -2.0, 0.5});
  torch::Tensor plain = SequenceLogProbs(model->forward(in), labels);
  std::vector<torch::Tensor> g_plain = grads((plain * weights).sum());
  // 50 logits at a time: one position per chunk, each recomputed in the
  // backward pass.
  torch::Tensor chunked = ProjectedSequenceLogProbs(
      *model, model->ForwardHidden(in), labels, /*max_logits=*/50);
  std::vector<torch::Tensor> g_chunked = grads((chunked * weights).sum());
  EXPECT_TRUE(torch::allclose(plain, chunked, 1e-5, 1e-5)) << plain << chunked;
  ASSERT_EQ(g_plain.size(), g_chunked.size());
  for (size_t i = 0; i < g_plain.size(); ++i) {
    EXPECT_TRUE(torch::allclose(g_plain[i], g_chunked[i], 1e-4, 1e-6)) << i;
  }
}

class PreferenceFiles : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_.path() + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  TempDir dir_;
};

TEST_F(PreferenceFiles, ReadsTextAndChatRows) {
  const std::string path = Write(
      "pairs.jsonl",
      json{{"prompt", "2+2="}, {"chosen", "4"}, {"rejected", "5"}}.dump() +
          "\n\n" +
          json{{"prompt", {{{"role", "user"}, {"content", "Hi"}}}},
               {"chosen", {{{"role", "assistant"}, {"content", "Hello!"}}}},
               {"rejected", "Go away."}}
              .dump() +
          "\n" +
          json{{"chosen",
                {{{"role", "user"}, {"content", "Name a colour"}},
                 {{"role", "assistant"}, {"content", "Blue"}}}},
               {"rejected",
                {{{"role", "user"}, {"content", "Name a colour"}},
                 {{"role", "assistant"}, {"content", "Seven"}}}}}
              .dump() +
          "\n");
  auto rows = ReadPreferenceRows(path, "pairs.jsonl", PreferenceColumns{});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  const PreferenceRow& text = (*rows)[0];
  EXPECT_EQ(text.format, LmFormat::kPromptCompletion);
  EXPECT_EQ(text.chosen.prompt, "2+2=");
  EXPECT_EQ(text.chosen.completion, "4");
  EXPECT_EQ(text.rejected.completion, "5");
  const PreferenceRow& chat = (*rows)[1];
  EXPECT_EQ(chat.format, LmFormat::kChat);
  EXPECT_EQ(chat.line, 3);
  ASSERT_EQ(chat.rejected.messages.size(), 2u);
  EXPECT_EQ(chat.rejected.messages[1]["role"], "assistant");
  EXPECT_EQ(chat.rejected.messages[1]["content"], "Go away.");
  const PreferenceRow& implicit = (*rows)[2];
  ASSERT_EQ(implicit.chosen.messages.size(), 2u);
  EXPECT_EQ(implicit.chosen.messages[1]["content"], "Blue");
  EXPECT_EQ(implicit.rejected.messages[1]["content"], "Seven");
}

TEST_F(PreferenceFiles, ReadsOpenAiPreferenceRows) {
  const json row = {
      {"input",
       {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
        {"tools", json::array()}}},
      {"preferred_output", {{{"role", "assistant"}, {"content", "Hello!"}}}},
      {"non_preferred_output", {{{"role", "assistant"}, {"content", "No."}}}}};
  json with_tools = row;
  with_tools["input"]["tools"] = {{{"type", "function"}}};
  const std::string path =
      Write("openai.jsonl", row.dump() + "\n" + with_tools.dump() + "\n");
  PreferenceColumns columns;
  columns.prompt = "input";
  columns.chosen = "preferred_output";
  columns.rejected = "non_preferred_output";
  std::ofstream(path, std::ios::trunc) << row.dump() << "\n";
  auto rows = ReadPreferenceRows(path, "openai.jsonl", columns);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].format, LmFormat::kChat);
  ASSERT_EQ((*rows)[0].chosen.messages.size(), 2u);
  EXPECT_EQ((*rows)[0].chosen.messages[0]["content"], "Hi");
  EXPECT_EQ((*rows)[0].rejected.messages[1]["content"], "No.");
  std::ofstream(path, std::ios::app) << with_tools.dump() << "\n";
  auto tools = ReadPreferenceRows(path, "openai.jsonl", columns);
  EXPECT_THAT(tools.status().message(),
              HasSubstr("openai.jsonl:2: \"input\".tools: tool definitions "
                        "are not supported"));
}

TEST_F(PreferenceFiles, ErrorsNameTheFileLineAndField) {
  struct Case {
    json row;
    const char* message;
  };
  const Case cases[] = {
      {{{"prompt", "p"}, {"chosen", "a"}}, "missing field \"rejected\""},
      {{{"chosen", "a"}, {"rejected", "b"}}, "missing field \"prompt\""},
      {{{"prompt", "p"}, {"chosen", 3}, {"rejected", "b"}},
       "field \"chosen\" must be a string or an array of messages"},
      {{{"prompt", "p"},
        {"chosen", {{{"role", "user"}, {"content", "x"}}}},
        {"rejected", "b"}},
       "\"chosen\" must end with an assistant message"},
      {{{"chosen",
         {{{"role", "user"}, {"content", "A"}},
          {{"role", "assistant"}, {"content", "x"}}}},
        {"rejected",
         {{{"role", "user"}, {"content", "B"}},
          {{"role", "assistant"}, {"content", "y"}}}}},
       "differ only in their last message"},
      {{{"prompt", "p"},
        {"chosen", {{{"role", "assistant"}}}},
        {"rejected", "b"}},
       "\"chosen\" message 0 needs string \"role\" and \"content\""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.row.dump());
    const std::string path = Write(
        "bad.jsonl",
        json{{"prompt", "ok"}, {"chosen", "a"}, {"rejected", "b"}}.dump() +
            "\n" + c.row.dump() + "\n");
    auto rows = ReadPreferenceRows(path, "bad.jsonl", PreferenceColumns{});
    ASSERT_FALSE(rows.ok());
    EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(rows.status().message(), HasSubstr("bad.jsonl:2: "));
    EXPECT_THAT(rows.status().message(), HasSubstr(c.message));
  }
  auto empty = ReadPreferenceRows(Write("empty.jsonl", "\n"), "empty.jsonl",
                                  PreferenceColumns{});
  EXPECT_THAT(empty.status().message(), HasSubstr("empty.jsonl: no rows"));
}

// The DPO task on a real tokenizer (the llama2 asset's SentencePiece BPE):
// batches hold the chosen replies then the rejected ones, scoring the reply
// tokens only; with the starting model as policy the loss is log 2.
class DpoTaskTest : public PreferenceFiles {
 protected:
  void SetUp() override {
    assets_ = AssetsDir();
    if (assets_.empty()) GTEST_SKIP() << "assets not prepared";
    auto tok = Tokenizer::FromDirectory(assets_ + "/llama2");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = *std::move(tok);
    std::string rows;
    const char* kPairs[][3] = {{"The capital of France is", " Paris", " Rome"},
                               {"The capital of Japan is", " Tokyo", " Lima"},
                               {"Two plus two is", " four", " five apples"}};
    for (const auto& p : kPairs) {
      rows +=
          json{{"prompt", p[0]}, {"chosen", p[1]}, {"rejected", p[2]}}.dump() +
          "\n";
    }
    rows += json{{"prompt", {{{"role", "user"}, {"content", "Say hi"}}}},
                 {"chosen", "Hi!"},
                 {"rejected", "No."}}
                .dump() +
            "\n";
    path_ = Write("pairs.jsonl", rows);
    auto params = ParseTrainParams(
        {{"method", "dpo"}, {"dpo_beta", "0.2"}, {"validation_split", "0"}});
    ASSERT_TRUE(params.ok()) << params.status();
    params_ = *params;
    auto task = CreateTrainingTask("causal-lm", params_);
    ASSERT_TRUE(task.ok()) << task.status();
    task_ = *std::move(task);
    model_config_ = SmallLlama(32000, 1)->config();
    context_.params = &params_;
    context_.tokenizer = tokenizer_.get();
    context_.model_config = &model_config_;
    context_.max_length = 64;
    data_.train_path = path_;
    data_.train_name = "pairs.jsonl";
    ASSERT_TRUE(task_->Prepare(data_, context_).ok());
  }

  std::string assets_, path_;
  std::unique_ptr<Tokenizer> tokenizer_;
  TrainParams params_;
  ModelConfig model_config_;
  std::unique_ptr<Task> task_;
  TaskContext context_;
  TaskData data_;
};

TEST_F(DpoTaskTest, BatchesScoreTheRepliesAndStartAtLogTwo) {
  ASSERT_EQ(task_->train_size(), 4);
  TaskModel reference = SmallLlama(32000, 1);
  reference->eval();
  {
    torch::NoGradGuard no_grad;
    ASSERT_TRUE(task_->BeforeTraining(*reference, torch::kCPU, "").ok());
  }
  TaskBatch b = task_->TrainBatch({0, 3}, torch::kCPU, nullptr);
  EXPECT_EQ(b.examples, 2);
  ASSERT_EQ(b.inputs.input_ids.size(0), 4);
  // Row 0 is pair 0's chosen reply, row 2 its rejected one: the same prompt
  // tokens, unscored; the reply tokens (and EOS) scored.
  const torch::Tensor ids = b.inputs.input_ids;
  const torch::Tensor labels = b.targets.at("labels");
  const std::vector<int64_t> prompt =
      tokenizer_->Encode("The capital of France is", std::nullopt, true).ids;
  const std::vector<int64_t> paris =
      tokenizer_->Encode(" Paris", std::nullopt, false).ids;
  for (size_t i = 0; i < prompt.size(); ++i) {
    EXPECT_EQ(ids[0][i].item<int64_t>(), prompt[i]);
    EXPECT_EQ(ids[2][i].item<int64_t>(), prompt[i]);
    EXPECT_EQ(labels[0][i].item<int64_t>(), kIgnoreLabel);
  }
  for (size_t i = 0; i < paris.size(); ++i) {
    EXPECT_EQ(labels[0][prompt.size() + i].item<int64_t>(), paris[i]);
  }
  EXPECT_EQ(labels[0][prompt.size() + paris.size()].item<int64_t>(),
            *tokenizer_->eos_id());
  EXPECT_EQ(b.targets.at("reference_logps").size(0), 4);
  EXPECT_LT(b.targets.at("reference_logps")[0].item<float>(), 0.f);

  // The starting model as the policy: every reward 0, the loss log 2.
  torch::Tensor start = task_->TrainLoss(*reference, b);
  EXPECT_NEAR(start.item<double>(), std::log(2.0), 1e-5);
  auto metrics = task_->Evaluate(*reference, 2, torch::kCPU);
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ((*metrics)["eval_pairs"], 0);  // validation_split=0.

  // A resumed run reads the reference back from its checkpoint instead of
  // scoring with the model it is given (the checkpoint's).
  ASSERT_TRUE(task_->WriteTrainingFiles(dir_.path()).ok());
  {
    auto resumed = CreateTrainingTask("causal-lm", params_);
    ASSERT_TRUE(resumed.ok());
    ASSERT_TRUE((*resumed)->Prepare(data_, context_).ok());
    TaskModel other = SmallLlama(32000, 4);
    other->eval();
    torch::NoGradGuard no_grad;
    ASSERT_TRUE(
        (*resumed)->BeforeTraining(*other, torch::kCPU, dir_.path()).ok());
    TaskBatch rb = (*resumed)->TrainBatch({0, 3}, torch::kCPU, nullptr);
    EXPECT_TRUE(torch::equal(rb.targets.at("reference_logps"),
                             b.targets.at("reference_logps")));
    auto missing = (*resumed)->BeforeTraining(*other, torch::kCPU,
                                              dir_.path() + "/nowhere");
    EXPECT_THAT(missing.message(), HasSubstr("dpo_reference.safetensors"));
  }

  // Another model as the policy: a different loss, with gradients.
  TaskModel policy = SmallLlama(32000, 9);
  policy->train();
  torch::Tensor loss = task_->TrainLoss(*policy, b);
  EXPECT_GT(std::abs(loss.item<double>() - std::log(2.0)), 1e-4);
  loss.backward();
  int64_t with_grad = 0;
  for (const auto& p : policy->parameters()) {
    with_grad += p.grad().defined() && p.grad().abs().sum().item<double>() > 0;
  }
  EXPECT_GT(with_grad, 0);
}

// Lathe's loss on one batch against bench/train/reference.py computing DPO
// from its own Llama and log-softmax, with the same two models' weights.
TEST_F(DpoTaskTest, LossAgreesWithThePyTorchReference) {
  const std::string script =
      std::string(LATHE_SOURCE_DIR) + "/bench/train/reference.py";
  TaskModel reference = SmallLlama(32000, 1);
  TaskModel policy = SmallLlama(32000, 9);
  reference->eval();
  policy->eval();
  torch::NoGradGuard no_grad;
  ASSERT_TRUE(task_->BeforeTraining(*reference, torch::kCPU, "").ok());
  TaskBatch b = task_->TrainBatch({0, 1, 2, 3}, torch::kCPU, nullptr);
  const double lathe = task_->TrainLoss(*policy, b).item<double>();

  const std::string ref_dir = dir_.path() + "/reference";
  const std::string pol_dir = dir_.path() + "/policy";
  for (const auto& [dir, model] :
       {std::pair<std::string, TaskModel*>{ref_dir, &reference},
        {pol_dir, &policy}}) {
    std::filesystem::create_directories(dir);
    ASSERT_TRUE(SaveModel(**model, dir).ok());
  }
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  for (const auto& [name, t] : {std::pair<std::string, torch::Tensor>{
                                    "attention_mask", b.inputs.attention_mask},
                                {"input_ids", b.inputs.input_ids},
                                {"labels", b.targets.at("labels")}}) {
    keep.push_back(t.to(torch::kFloat).contiguous());
    TensorView v;
    v.name = name;
    v.dtype = "F32";
    v.shape = t.sizes().vec();
    v.data = keep.back().data_ptr();
    v.nbytes = keep.back().numel() * sizeof(float);
    views.push_back(v);
  }
  const std::string batch = dir_.path() + "/batch.safetensors";
  ASSERT_TRUE(WriteSafetensors(batch, views, {}).ok());
  const std::string cmd = "/usr/bin/python3 " + script + " dpo --policy " +
                          pol_dir + " --reference " + ref_dir + " --batch " +
                          batch + " --beta 0.2 --threads 1 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) {
    out.append(buf, n);
  }
  ASSERT_EQ(::pclose(pipe), 0) << out;
  json j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  const double want = j["loss"].get<double>();
  EXPECT_NEAR(lathe, want, 1e-5 * std::abs(want) + 1e-6) << out;
  // A non-trivial batch: the two models disagree.
  EXPECT_GT(std::abs(want - std::log(2.0)), 1e-4) << out;
}

TEST(DpoParamsTest, MethodAndItsParametersApplyOnlyWhereTheyCan) {
  EXPECT_TRUE(CheckParamsApply("causal-lm", {{"method", "dpo"},
                                             {"dpo_beta", "0.5"},
                                             {"chosen_column", "good"}})
                  .ok());
  EXPECT_TRUE(
      CheckParamsApply("causal-lm", {{"method", "dpo-lora"}, {"lora_r", "4"}})
          .ok());
  EXPECT_THAT(
      CheckParamsApply("text-classification", {{"method", "dpo"}}).message(),
      HasSubstr("params[method]: dpo applies only to causal-lm"));
  EXPECT_THAT(
      CheckParamsApply("causal-lm", {{"method", "full"}, {"dpo_beta", "1"}})
          .message(),
      HasSubstr("params[dpo_beta]: applies only with method=dpo or "
                "method=dpo-lora"));
  EXPECT_THAT(
      CheckParamsApply("causal-lm", {{"method", "dpo"}, {"packing", "1"}})
          .message(),
      HasSubstr("params[packing]: does not apply with method=dpo"));
  EXPECT_THAT(
      CheckParamsApply("causal-lm", {{"method", "dpo"}, {"lora_r", "4"}})
          .message(),
      HasSubstr("params[lora_r]: applies only with method=lora or "
                "method=dpo-lora"));
  EXPECT_THAT(ParseTrainParams({{"dpo_beta", "0"}}).status().message(),
              HasSubstr("params[dpo_beta]: 0 is out of range (0, 100]"));
  auto task =
      CreateTrainingTask("masked-lm", *ParseTrainParams({{"method", "dpo"}}));
  EXPECT_THAT(task.status().message(),
              HasSubstr("params[method]: dpo applies only to causal-lm"));
}

}  // namespace
}  // namespace lathe
