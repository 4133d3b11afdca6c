// Whole-system tests for the fine-tuning methods: LoRA (PEFT-layout adapter
// files in the checkpoint, the merged model on request) and the linear probe,
// on a BERT and a GPT-2 preset, through the real server, worker and CLI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/support/system_fixture.h"

namespace lathe {
namespace {

using nlohmann::json;

class MethodsTest : public testing::SentimentServerTest {
 protected:
  // Submits a short sentiment job on `model` with `extra` params; returns
  // its id.
  std::string Submit(const std::string& model,
                     const std::vector<std::string>& extra) {
    testing::SubmitArgs args{"text-classification",
                             model,
                             Path("train.jsonl"),
                             Path("validation.jsonl"),
                             {"batch_size=16", "max_seq_length=32",
                              "warmup_ratio=0", "max_steps=24", "epochs=100"}};
    return testing::SubmitJob(*server_, args.AddParams(extra));
  }

  json WaitAndGet(const std::string& id) {
    return testing::WaitAndGet(*server_, id, 600, testing::JobEnd::kSucceeded);
  }

  std::string Download(const std::string& id, const std::string& name) {
    return testing::DownloadJob(*server_, id, Path(name));
  }
};

struct Case {
  std::string name;
  std::string preset;
  std::string adapted_module;  // One module LoRA adapts by default.
  std::string head;            // modules_to_save
  bool fan_in_fan_out;
};

// Names the case in failure messages (GetParam() = ...), not its bytes.
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name << " (" << c.preset << ")";
}

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
