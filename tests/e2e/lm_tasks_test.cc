// Whole-system tests for the language-modelling tasks: causal-lm supervised
// fine-tuning of preset:gpt2-tiny on synthetic prompt/completion pairs and
// of preset:llama-tiny on chat messages, and masked-lm on preset:bert-tiny
// with raw text (the spam asset's texts). The real server, worker and
// training child run each job; the fine-tuned checkpoints then generate or
// fill masks with `lathe-train predict` when the build has it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "common/files.h"
#include "nlohmann/json.hpp"
#include "tests/support/system_fixture.h"

namespace lathe {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

const char* const kCountries[][2] = {
    {"France", "Paris"},   {"Japan", "Tokyo"},  {"Italy", "Rome"},
    {"Egypt", "Cairo"},    {"Peru", "Lima"},    {"Spain", "Madrid"},
    {"Chile", "Santiago"}, {"Kenya", "Nairobi"}};

// Prompts "What is the capital of X?" with the answer " Y"; the question's
// wording rotates so the data is not one string.
void WriteCapitals(const std::string& path, int rows, bool chat) {
  static const char* const kForms[] = {"What is the capital of %s?",
                                       "Name the capital of %s.",
                                       "Capital of %s?"};
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    const auto& c = kCountries[i % 8];
    char q[128];
    std::snprintf(q, sizeof(q), kForms[(i / 8) % 3], c[0]);
    if (chat) {
      out << json{{"messages",
                   {{{"role", "user"}, {"content", q}},
                    {{"role", "assistant"}, {"content", c[1]}}}}}
                 .dump()
          << "\n";
    } else {
      out << json{{"prompt", q}, {"completion", std::string(" ") + c[1]}}.dump()
          << "\n";
    }
  }
}

// Preference rows on the same questions: the right capital chosen, another
// country's rejected (`offset` varies which). Odd rows are in chat form (the
// prompt as a user message), even rows plain text.
void WritePreferences(const std::string& path, int rows, int offset) {
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    const auto& c = kCountries[i % 8];
    const char* wrong = kCountries[(i % 8 + 1 + (i / 24 + offset) % 7) % 8][1];
    const std::string q = std::string("What is the capital of ") + c[0] + "?";
    json prompt = q;
    if (i % 2 == 1) prompt = json::array({{{"role", "user"}, {"content", q}}});
    out << json{{"prompt", prompt},
                {"chosen", std::string(" ") + c[1]},
                {"rejected", std::string(" ") + wrong}}
               .dump()
        << "\n";
  }
}

class LmTasksTest : public testing::SharedServerTest {
 protected:
  std::string Submit(const std::string& task, const std::string& model,
                     const std::string& train, const std::string& validation,
                     const std::vector<std::string>& params) {
    testing::SubmitArgs args{
        task,
        model,
        Path(train),
        validation.empty() ? "" : Path(validation),
        {"warmup_ratio=0", "seed=7", "epochs=100", "batch_size=16"}};
    return testing::SubmitJob(*server_, args.AddParams(params));
  }

  json WaitAndGet(const std::string& id) {
    // `lathe wait` exits non-zero for a failed job; callers check the state.
    return testing::WaitAndGet(*server_, id, 800, testing::JobEnd::kAny);
  }

  // Downloads the job's model and runs `lathe-train predict`; one JSON
  // object per row (a line holding a list gives one row per entry).
  std::vector<json> Predict(const std::string& id, const std::string& task,
                            const std::string& input,
                            const std::vector<std::string>& params = {}) {
    const std::string dest =
        testing::DownloadJob(*server_, id, Path(id + "-model"));
    std::vector<json> rows;
    for (json& j : testing::TrainPredict(dest, task, input, params)) {
      if (j.is_array()) {
        for (const json& x : j) rows.push_back(x);
      } else {
        rows.push_back(std::move(j));
      }
    }
    return rows;
  }

  // `vocab_share`: the perplexity must fall below vocab * vocab_share.
  static void ExpectLmMetrics(const json& job, const char* accuracy_key,
                              double vocab, double vocab_share) {
    const json& m = job["eval_metrics"];
    for (const char* k : {"loss", "perplexity", accuracy_key}) {
      ASSERT_TRUE(m.contains(k)) << k << " missing: " << job.dump(2);
    }
    const double loss = m["loss"].get<double>();
    const double ppl = m["perplexity"].get<double>();
    EXPECT_TRUE(std::isfinite(loss)) << job.dump(2);
    EXPECT_NEAR(ppl, std::exp(loss), 1e-6 * ppl + 1e-9) << job.dump(2);
    // An untrained model is near the vocabulary size; training brings it
    // far below.
    EXPECT_LT(ppl, vocab * vocab_share) << job.dump(2);
  }
};

TEST_F(LmTasksTest, Gpt2LearnsPromptCompletionPairsAndGenerates) {
  WriteCapitals(Path("capitals_train.jsonl"), 192, false);
  WriteCapitals(Path("capitals_val.jsonl"), 24, false);
  const std::string id =
      Submit("causal-lm", "preset:gpt2-tiny", "capitals_train.jsonl",
             "capitals_val.jsonl",
             {"learning_rate=3e-3", "max_steps=80", "max_seq_length=32"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  ExpectLmMetrics(job, "token_accuracy", 50257, 0.001);
  // The answers (and the EOS after them) follow from the country.
  EXPECT_GE(job["eval_metrics"].value("token_accuracy", 0.0), 0.6)
      << job.dump(2);

  std::ofstream(Path("capitals_in.jsonl"))
      << json{{"prompt", "What is the capital of France?"}}.dump() << "\n"
      << json{{"prompt", "Capital of Japan?"}}.dump() << "\n";
  std::vector<json> rows =
      Predict(id, "causal-lm", Path("capitals_in.jsonl"), {"max_new_tokens=8"});
  ASSERT_EQ(rows.size(), 2u);
  // Greedy decoding gives the learnt answer, then the learnt EOS stops it.
  EXPECT_EQ(rows[0].value("text", ""), " Paris") << rows[0].dump();
  EXPECT_EQ(rows[1].value("text", ""), " Tokyo") << rows[1].dump();
}

TEST_F(LmTasksTest, LlamaLearnsChatMessages) {
  WriteCapitals(Path("chat_train.jsonl"), 192, true);
  WriteCapitals(Path("chat_val.jsonl"), 24, true);
  const std::string id = Submit(
      "causal-lm", "preset:llama-tiny", "chat_train.jsonl", "chat_val.jsonl",
      {"learning_rate=3e-3", "max_steps=80", "max_seq_length=48"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  ExpectLmMetrics(job, "token_accuracy", 32000, 0.001);
  EXPECT_GE(job["eval_metrics"].value("token_accuracy", 0.0), 0.6)
      << job.dump(2);

  std::ofstream(Path("chat_in.jsonl"))
      << json{{"messages",
               {{{"role", "user"}, {"content", "Capital of Peru?"}}}}}
             .dump()
      << "\n";
  std::vector<json> rows =
      Predict(id, "causal-lm", Path("chat_in.jsonl"), {"max_new_tokens=8"});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].value("text", ""), "Lima") << rows[0].dump();
}

TEST_F(LmTasksTest, BertAdaptsToRawTextWithMaskedLm) {
  const std::string spam = testing::BinDir() + "/../assets/spam/train.jsonl";
  std::ifstream in(spam);
  ASSERT_TRUE(in.good()) << "missing " << spam;
  std::ofstream train(Path("texts.jsonl"));
  std::string line;
  for (int n = 0; n < 300 && std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("text")) continue;
    train << json{{"text", j["text"]}}.dump() << "\n";
    ++n;
  }
  train.close();
  const std::string id =
      Submit("masked-lm", "preset:bert-tiny", "texts.jsonl", "",
             {"learning_rate=2e-3", "max_steps=60", "max_seq_length=64",
              "validation_split=0.2"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  // 60 steps of a 2-layer BERT learn which words are common (a run gave
  // perplexity about 1300 and 3% masked-token accuracy), far from the
  // untrained model's ~30000 and 0.
  ExpectLmMetrics(job, "accuracy", 30522, 0.1);
  EXPECT_GT(job["eval_metrics"].value("accuracy", 0.0), 0.01) << job.dump(2);

  std::ofstream(Path("mask_in.jsonl"))
      << json{{"text", "call [MASK] now to claim your prize"}}.dump() << "\n"
      << json{{"text", "no mask here"}}.dump() << "\n";
  std::vector<json> rows = Predict(id, "masked-lm", Path("mask_in.jsonl"));
  ASSERT_EQ(rows.size(), 2u);
  ASSERT_TRUE(rows[0].contains("tokens")) << rows[0].dump();
  ASSERT_EQ(rows[0]["tokens"].size(), 1u) << rows[0].dump();
  EXPECT_EQ(rows[0]["tokens"][0].size(), 5u) << rows[0].dump();
  const std::string filled = rows[0].value("text", "");
  EXPECT_THAT(filled, HasSubstr("now to claim your prize"));
  EXPECT_EQ(filled.find("[MASK]"), std::string::npos) << filled;
  EXPECT_EQ(rows[1].value("text", ""), "no mask here");
  EXPECT_FALSE(rows[1].contains("tokens"));
}

// Sequences longer than the old 512-token limit, packed, with every layer
// recomputed in the backward pass: spam texts as raw text, several to a
// 1024-token sequence.
TEST_F(LmTasksTest, LlamaTrainsOnPackedLongSequencesWithCheckpointing) {
  const std::string spam = testing::BinDir() + "/../assets/spam/train.jsonl";
  std::ifstream in(spam);
  ASSERT_TRUE(in.good()) << "missing " << spam;
  std::ofstream train(Path("long_texts.jsonl"));
  std::string line;
  for (int n = 0; n < 100 && std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("text")) continue;
    train << json{{"text", j["text"]}}.dump() << "\n";
    ++n;
  }
  train.close();
  testing::SubmitArgs args{
      "causal-lm",
      "preset:llama-tiny",
      Path("long_texts.jsonl"),
      "",
      {"warmup_ratio=0", "seed=7", "max_steps=8", "batch_size=1",
       "learning_rate=3e-3", "max_seq_length=1024", "packing=1",
       "gradient_checkpointing=1", "validation_split=0.1", "logging_steps=1"}};
  const std::string id = testing::SubmitJob(*server_, args);
  ASSERT_FALSE(id.empty());
  testing::CommandResult watch = server_->Cli({"watch", id});
  EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err;
  EXPECT_THAT(watch.out, HasSubstr("gradient checkpointing"));
  EXPECT_THAT(watch.out, HasSubstr("tokens/s"));
  // "packing: 90 training rows into M sequences of up to 1024 tokens".
  const size_t at = watch.out.find("packing: 90 training rows into ");
  ASSERT_NE(at, std::string::npos) << watch.out;
  const int packs = std::atoi(watch.out.c_str() + at + 31);
  EXPECT_GT(packs, 0) << watch.out;
  EXPECT_LT(packs, 45) << "fewer than 2 rows a sequence: " << watch.out;
  EXPECT_THAT(watch.out, HasSubstr("sequences of up to 1024 tokens"));
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  EXPECT_EQ(job["train_metrics"]["total_steps"], "8") << job.dump(2);
  EXPECT_GT(job["train_metrics"]["samples_per_second"].get<double>(), 0.0);
  EXPECT_GT(job["train_metrics"].value("tokens_per_second", 0.0), 0.0)
      << job.dump(2);
  // Eight steps of 1024 tokens take the untrained model's perplexity (near
  // the 32000-token vocabulary) far down: a run gave 9400.
  ExpectLmMetrics(job, "token_accuracy", 32000, 0.5);
}

// Preference tuning through the server: DPO on capital-city pairs teaches
// llama-tiny (from random weights) to give the right city a higher reward
// than the wrong one on held-out pairs.
TEST_F(LmTasksTest, DpoLearnsWhichReplyIsPreferred) {
  WritePreferences(Path("prefs_train.jsonl"), 192, 0);
  WritePreferences(Path("prefs_val.jsonl"), 24, 3);
  const std::string id = Submit(
      "causal-lm", "preset:llama-tiny", "prefs_train.jsonl", "prefs_val.jsonl",
      {"method=dpo", "dpo_beta=0.1", "learning_rate=1e-3", "max_steps=120",
       "batch_size=8", "max_seq_length=48", "logging_steps=10"});
  ASSERT_FALSE(id.empty());
  testing::CommandResult watch = server_->Cli({"watch", id});
  EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err;
  EXPECT_THAT(watch.out,
              HasSubstr("dpo: the starting model scored 192 training and 24 "
                        "validation pairs"));
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  const json& m = job["eval_metrics"];
  for (const char* k : {"loss", "reward_accuracy", "reward_margin",
                        "chosen_reward", "rejected_reward"}) {
    ASSERT_TRUE(m.contains(k)) << k << " missing: " << job.dump(2);
  }
  // The untrained policy is its own reference: loss log 2 = 0.693, every
  // reward 0, accuracy 0. A run gave loss 0.27, accuracy 1 and margin 1.8.
  EXPECT_LT(m["loss"].get<double>(), 0.5) << job.dump(2);
  EXPECT_GE(m["reward_accuracy"].get<double>(), 0.9) << job.dump(2);
  EXPECT_GT(m["reward_margin"].get<double>(), 0.5) << job.dump(2);

  // dpo-lora: the same loss on LoRA adapters over the frozen base; the
  // checkpoint holds the adapter beside the model. A run gave loss 0.671,
  // reward accuracy 0.75 and margin 0.046 after 60 steps.
  const std::string lora = Submit(
      "causal-lm", "preset:llama-tiny", "prefs_train.jsonl", "prefs_val.jsonl",
      {"method=dpo-lora", "lora_r=16", "learning_rate=1e-2", "max_steps=60",
       "batch_size=8", "max_seq_length=48"});
  ASSERT_FALSE(lora.empty());
  json lora_job = WaitAndGet(lora);
  ASSERT_EQ(lora_job["state"], "SUCCEEDED") << lora_job.dump(2);
  EXPECT_LT(lora_job["eval_metrics"]["loss"].get<double>(), 0.685)
      << lora_job.dump(2);
  EXPECT_GT(lora_job["eval_metrics"]["reward_margin"].get<double>(), 0.0)
      << lora_job.dump(2);
  const std::string dest =
      testing::DownloadJob(*server_, lora, Path("dpo-lora-model"));
  EXPECT_TRUE(PathExists(dest + "/adapter_model.safetensors")) << dest;

  // Parameters DPO has no use for are refused at submit, naming them.
  testing::CommandResult packed =
      server_->Cli(testing::SubmitCommand({"causal-lm",
                                           "preset:llama-tiny",
                                           Path("prefs_train.jsonl"),
                                           "",
                                           {"method=dpo", "packing=1"}}));
  EXPECT_NE(packed.exit_code, 0);
  EXPECT_THAT(packed.err,
              HasSubstr("params[packing]: does not apply with method=dpo"));
  // A row without its rejected reply fails the job, naming file and line.
  std::ofstream(Path("prefs_bad.jsonl"))
      << json{{"prompt", "a"}, {"chosen", "b"}, {"rejected", "c"}}.dump()
      << "\n"
      << json{{"prompt", "a"}, {"chosen", "b"}}.dump() << "\n";
  const std::string bad = Submit("causal-lm", "preset:llama-tiny",
                                 "prefs_bad.jsonl", "", {"method=dpo"});
  ASSERT_FALSE(bad.empty());
  json failed = WaitAndGet(bad);
  EXPECT_EQ(failed["state"], "FAILED") << failed.dump(2);
  EXPECT_THAT(failed.value("error", ""),
              HasSubstr("prefs_bad.jsonl:2: missing field \"rejected\""))
      << failed.dump(2);
}

TEST_F(LmTasksTest, WrongModelFamiliesFailClearly) {
  WriteCapitals(Path("pairs.jsonl"), 16, false);
  const std::string id = Submit("causal-lm", "preset:bert-tiny", "pairs.jsonl",
                                "", {"max_steps=2"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  EXPECT_EQ(job["state"], "FAILED") << job.dump(2);
  EXPECT_THAT(job.value("error", ""), HasSubstr("causal-lm needs a decoder"))
      << job.dump(2);

  std::ofstream(Path("raw.jsonl")) << json{{"text", "a b c"}}.dump() << "\n"
                                   << json{{"text", "d e f"}}.dump() << "\n";
  const std::string id2 =
      Submit("masked-lm", "preset:gpt2-tiny", "raw.jsonl", "", {"max_steps=2"});
  ASSERT_FALSE(id2.empty());
  json job2 = WaitAndGet(id2);
  EXPECT_EQ(job2["state"], "FAILED") << job2.dump(2);
  EXPECT_THAT(job2.value("error", ""), HasSubstr("masked-lm needs an encoder"))
      << job2.dump(2);
}

}  // namespace
}  // namespace lathe
