// Whole-system tests for base models: a BERT, a GPT-2 and a Llama-style base
// model in the published Hugging Face layout (written by `lathe-train
// init-model`), pushed to the real server's model store, fine-tuned as text
// classifiers by the real worker, and a fine-tuned checkpoint chained into
// the next job with `job:ID`, and `lathe predict` on the result.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <ostream>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/system_fixture.h"

namespace lathe {
namespace {

using nlohmann::json;
using testing::CommandResult;
using ::testing::HasSubstr;

class BaseModelsTest : public testing::SentimentServerTest {
 protected:
  // Submits a short sentiment fine-tuning job on `model`; returns its id.
  std::string Submit(const std::string& model, int max_steps) {
    return testing::SubmitJob(
        *server_, {"text-classification",
                   model,
                   Path("train.jsonl"),
                   Path("validation.jsonl"),
                   {"learning_rate=2e-3", "batch_size=16", "max_seq_length=32",
                    "warmup_ratio=0", "max_steps=" + std::to_string(max_steps),
                    "epochs=100"}});
  }

  // Waits for `id` to end and returns `lathe get` as JSON.
  json WaitAndGet(const std::string& id) {
    return testing::WaitAndGet(*server_, id, 600, testing::JobEnd::kSucceeded);
  }
};

struct Family {
  std::string preset;
  std::string model_type;
  std::string base_class;        // What init-model writes.
  std::string classifier_class;  // What fine-tuning writes.
  std::string head_tensor;       // The classification head's weight.
  std::string tokenizer_file;
};

// Names the family in failure messages (GetParam() = ...), not its bytes.
void PrintTo(const Family& f, std::ostream* os) {
  *os << f.preset << " (" << f.model_type << ")";
}

class FamilyTest : public BaseModelsTest,
                   public ::testing::WithParamInterface<Family> {};

TEST_P(FamilyTest, PushedBaseModelFineTunesAndItsCheckpointChains) {
  const Family& f = GetParam();
  const std::string name = f.model_type + "-base";
  const std::string base = Path(name);

  // A base model in the published layout, as a user would bring one.
  CommandResult init =
      testing::RunCommand({testing::BinDir() + "/lathe-train", "init-model",
                           f.preset, "--out", base, "--seed", "5"});
  ASSERT_EQ(init.exit_code, 0) << init.out << init.err;
  json base_config = json::parse(*ReadFile(base + "/config.json"));
  EXPECT_EQ(base_config["model_type"], f.model_type);
  EXPECT_EQ(base_config["architectures"][0], f.base_class);
  EXPECT_TRUE(PathExists(base + "/" + f.tokenizer_file));

  CommandResult push = server_->Cli(
      {"models", "push", base, "--name", name, "--output", "json"});
  ASSERT_EQ(push.exit_code, 0) << push.out << push.err;
  CommandResult list = server_->Cli({"models", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr(name));

  const std::string id = Submit(name, 24);
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  ASSERT_TRUE(job["eval_metrics"].contains("accuracy")) << job.dump(2);
  // The sentiment words decide the label; every family learns it.
  EXPECT_GE(job["eval_metrics"]["accuracy"].get<double>(), 0.8) << job.dump(2);

  const std::string dest = Path(name + "-tuned");
  CommandResult dl = server_->Cli({"download", id, "--dest", dest});
  ASSERT_EQ(dl.exit_code, 0) << dl.out << dl.err;
  json config = json::parse(*ReadFile(dest + "/config.json"));
  EXPECT_EQ(config["model_type"], f.model_type);
  EXPECT_EQ(config["architectures"][0], f.classifier_class);
  EXPECT_EQ(config["id2label"]["0"], "negative");
  EXPECT_EQ(config["label2id"]["positive"], 1);
  EXPECT_TRUE(PathExists(dest + "/" + f.tokenizer_file));
  auto weights = SafetensorsFile::Open(dest + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_NE((*weights)->Find(f.head_tensor), nullptr) << f.head_tensor;
  EXPECT_EQ((*weights)->Find(f.head_tensor)->shape[0], 2);
  EXPECT_EQ((*weights)->metadata().at("format"), "pt");

  // Trying the result: `lathe predict` runs the best checkpoint on a worker.
  {
    std::ofstream(Path("predict.jsonl"))
        << R"({"text": "the movie was superb and the food was wonderful"})"
        << "\n"
        << R"({"text": "the movie was horrible and the food was worst"})"
        << "\n";
  }
  CommandResult predict =
      server_->Cli({"predict", "job:" + id, "--input", Path("predict.jsonl"),
                    "--output", "json", "--timeout", "300"});
  ASSERT_EQ(predict.exit_code, 0) << predict.out << predict.err;
  const std::vector<json> rows = testing::ParseJsonLines(predict.out);
  ASSERT_EQ(rows.size(), 2u) << predict.out;
  EXPECT_EQ(rows[0]["label"], "positive") << predict.out;
  EXPECT_EQ(rows[1]["label"], "negative") << predict.out;
  EXPECT_GT(rows[0]["probabilities"]["positive"].get<double>(), 0.5);

  // Chained: the fine-tuned job's best checkpoint is the next job's base.
  const std::string next = Submit("job:" + id, 4);
  json chained = WaitAndGet(next);
  ASSERT_EQ(chained["state"], "SUCCEEDED") << chained.dump(2);
  EXPECT_GE(chained["eval_metrics"]["accuracy"].get<double>(), 0.8)
      << chained.dump(2);
}

INSTANTIATE_TEST_SUITE_P(
    Families, FamilyTest,
    ::testing::Values(Family{"preset:bert-tiny", "bert", "BertForMaskedLM",
                             "BertForSequenceClassification",
                             "classifier.weight", "vocab.txt"},
                      Family{"preset:gpt2-tiny", "gpt2", "GPT2LMHeadModel",
                             "GPT2ForSequenceClassification", "score.weight",
                             "vocab.json"},
                      Family{"preset:llama-tiny", "llama", "LlamaForCausalLM",
                             "LlamaForSequenceClassification", "score.weight",
                             "tokenizer.json"}),
    [](const ::testing::TestParamInfo<Family>& info) {
      return info.param.model_type;
    });

}  // namespace
}  // namespace lathe
