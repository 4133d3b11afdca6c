// Whole-system tests for the fine-tuning methods: LoRA (PEFT-layout adapter
// files in the checkpoint, the merged model on request) and the linear probe,
// on a BERT and a GPT-2 preset, through the real server, worker and CLI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/files.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"

namespace lathe {
namespace {

using nlohmann::json;
using testing::CommandResult;
using testing::ServerProcess;

json ParseJson(const CommandResult& r) {
  json j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out << r.err;
  return j;
}

class MethodsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    server_ = new ServerProcess(dir_->path() + "/server", 1,
                                {"--allow-root", dir_->path()});
    std::string why;
    started_ = server_->Start(&why);
    if (!started_) start_error_ = new std::string(why);
    testing::WriteSentimentData(dir_->path() + "/train.jsonl", 96, 0);
    testing::WriteSentimentData(dir_->path() + "/validation.jsonl", 32, 1);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    EXPECT_TRUE(testing::ProcessesMatching(dir_->path()).empty())
        << "processes left behind";
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(started_) << (start_error_ ? *start_error_ : "");
  }
  static std::string Path(const std::string& name) {
    return dir_->path() + "/" + name;
  }

  // Submits a short sentiment job on `model` with `extra` params; returns
  // its id.
  std::string Submit(const std::string& model,
                     const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"submit",
                                     "--task",
                                     "text-classification",
                                     "--model",
                                     model,
                                     "--train-data",
                                     Path("train.jsonl"),
                                     "--validation-data",
                                     Path("validation.jsonl"),
                                     "--output",
                                     "json"};
    for (const std::string& p :
         {std::string("batch_size=16"), std::string("max_seq_length=32"),
          std::string("warmup_ratio=0"), std::string("max_steps=24"),
          std::string("epochs=100")}) {
      args.push_back("--param");
      args.push_back(p);
    }
    for (const std::string& p : extra) {
      args.push_back("--param");
      args.push_back(p);
    }
    CommandResult r = server_->Cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return ParseJson(r).value("id", "");
  }

  json WaitAndGet(const std::string& id) {
    CommandResult wait = server_->Cli({"wait", id, "--timeout", "600"});
    EXPECT_EQ(wait.exit_code, 0) << wait.out << wait.err;
    CommandResult get = server_->Cli({"get", id, "--output", "json"});
    EXPECT_EQ(get.exit_code, 0) << get.err;
    return ParseJson(get);
  }

  std::string Download(const std::string& id, const std::string& name) {
    const std::string dest = Path(name);
    CommandResult dl = server_->Cli({"download", id, "--dest", dest});
    EXPECT_EQ(dl.exit_code, 0) << dl.out << dl.err;
    return dest;
  }

  static TempDir* dir_;
  static ServerProcess* server_;
  static bool started_;
  static std::string* start_error_;
};

TempDir* MethodsTest::dir_ = nullptr;
ServerProcess* MethodsTest::server_ = nullptr;
bool MethodsTest::started_ = false;
std::string* MethodsTest::start_error_ = nullptr;

struct Case {
  std::string name;
  std::string preset;
  std::string adapted_module;  // One module LoRA adapts by default.
  std::string head;            // modules_to_save
  bool fan_in_fan_out;
};

class LoraTest : public MethodsTest,
                 public ::testing::WithParamInterface<Case> {};

TEST_P(LoraTest, WritesPeftAdapterAndMergedModel) {
  const Case& c = GetParam();
  const std::string id =
      Submit(c.preset, {"method=lora", "lora_r=4", "lora_alpha=8",
                        "learning_rate=5e-3", "merge_lora=1"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  ASSERT_TRUE(job["eval_metrics"].contains("accuracy")) << job.dump(2);

  const std::string dest = Download(id, c.name + "-lora");
  auto text = ReadFile(dest + "/adapter_config.json");
  ASSERT_TRUE(text.ok()) << text.status();
  json config = json::parse(*text);
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "SEQ_CLS");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8);
  EXPECT_EQ(config["fan_in_fan_out"], c.fan_in_fan_out);
  EXPECT_EQ(config["modules_to_save"], json::array({c.head}));

  auto adapter = SafetensorsFile::Open(dest + "/adapter_model.safetensors");
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  const SafetensorsFile::Tensor* a = (*adapter)->Find(
      "base_model.model." + c.adapted_module + ".lora_A.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape[0], 4);
  ASSERT_NE((*adapter)->Find("base_model.model." + c.head + ".weight"),
            nullptr);

  // model.safetensors is the base with the trained head, adapters apart.
  auto weights = SafetensorsFile::Open(dest + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  for (const auto& [name, t] : (*weights)->tensors()) {
    EXPECT_EQ(name.find("lora_"), std::string::npos) << name;
  }
  // merge_lora=1: the merged model, loadable on its own.
  EXPECT_TRUE(PathExists(dest + "/merged/config.json"));
  auto merged = SafetensorsFile::Open(dest + "/merged/model.safetensors");
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ((*merged)->tensors().size(), (*weights)->tensors().size());

  // The LoRA checkpoint chains: the next job starts from base + adapter.
  const std::string next = Submit(
      "job:" + id, {"method=lora", "lora_r=4", "lora_alpha=8", "max_steps=4"});
  json chained = WaitAndGet(next);
  EXPECT_EQ(chained["state"], "SUCCEEDED") << chained.dump(2);
}

TEST_P(LoraTest, LinearProbeTrainsTheHead) {
  const Case& c = GetParam();
  const std::string id =
      Submit(c.preset, {"method=linear-probe", "learning_rate=1e-2"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  ASSERT_TRUE(job["eval_metrics"].contains("accuracy")) << job.dump(2);
  const std::string dest = Download(id, c.name + "-probe");
  EXPECT_FALSE(PathExists(dest + "/adapter_config.json"));
  auto weights = SafetensorsFile::Open(dest + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_NE((*weights)->Find(c.head + ".weight"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(
    Presets, LoraTest,
    ::testing::Values(Case{"bert", "preset:bert-tiny",
                           "bert.encoder.layer.0.attention.self.query",
                           "classifier", false},
                      Case{"gpt2", "preset:gpt2-tiny",
                           "transformer.h.0.attn.c_attn", "score", true}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace lathe
