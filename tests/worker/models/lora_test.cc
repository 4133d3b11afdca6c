// LoRA adapters and linear probes on every model family: exact identity at
// initialisation, frozen base weights under training, merging, parameter
// counts, PEFT-layout files and their round trip, rsLoRA scaling, errors.
#include "worker/models/lora.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "worker/models/linear.h"
#include "worker/models/model.h"
#include "worker/models/model_config.h"

namespace lathe {
namespace {

using json = nlohmann::json;

std::string NewDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("lathe_lora_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// A small config of `family` (bert, roberta, distilbert, gpt2, llama) with a
// 100-token vocabulary and three labels.
ModelConfig SmallConfig(const std::string& family) {
  const std::string preset = family == "gpt2"    ? "preset:gpt2-tiny"
                             : family == "llama" ? "preset:llama-tiny"
                                                 : "preset:bert-tiny";
  auto p = FindPreset(preset);
  EXPECT_TRUE(p.ok()) << p.status();
  ModelConfig c = p->config;
  c.vocab_size = 100;
  c.id2label = {"a", "b", "c"};
  if (family == "gpt2") {
    c.bos_token_id = 99;
    c.eos_token_id = 99;
  } else if (family == "roberta") {
    c.architecture = Architecture::kRoberta;
    c.model_type = "roberta";
    c.pad_token_id = 1;
    c.type_vocab_size = 1;
    c.max_position_embeddings = 514;
  } else if (family == "distilbert") {
    c.architecture = Architecture::kDistilBert;
    c.model_type = "distilbert";
  }
  return c;
}

TaskModel Make(const std::string& family, HeadKind head, uint64_t seed = 1) {
  torch::manual_seed(seed);
  auto m = CreateModel(SmallConfig(family), head);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

// Two rows of 7 tokens; the second is right-padded by 2.
ModelInputs Inputs() {
  torch::manual_seed(99);
  ModelInputs in;
  in.input_ids = torch::randint(3, 100, {2, 7}, torch::kLong);
  in.attention_mask = torch::ones({2, 7}, torch::kLong);
  in.attention_mask[1].slice(0, 5).zero_();
  return in;
}

torch::Tensor Forward(TaskModelImpl& m, const ModelInputs& in) {
  torch::NoGradGuard no_grad;
  m.eval();
  return m.forward(in);
}

std::map<std::string, LinearImpl*> Projections(TaskModelImpl& m) {
  std::map<std::string, LinearImpl*> out;
  for (const auto& item : m.named_modules("", false)) {
    if (auto* l = item.value()->as<LinearImpl>()) out[item.key()] = l;
  }
  return out;
}

// Gives every adapter's B (zero at attachment) random values, so the
// adapters change the output.
void RandomiseB(TaskModelImpl& m, uint64_t seed = 7) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (const auto& [name, l] : Projections(m)) {
    if (l->has_lora()) l->lora_B->weight.normal_(0.0, 0.2);
  }
}

LoraOptions Options(int64_t r = 4, double alpha = 8) {
  LoraOptions o;
  o.r = r;
  o.alpha = alpha;
  o.dropout = 0.1;
  return o;
}

const std::vector<std::string> kFamilies = {"bert", "roberta", "distilbert",
                                            "gpt2", "llama"};

TEST(LoraTest, ZeroBLeavesTheOutputExactlyUnchanged) {
  for (const std::string& family : kFamilies) {
    SCOPED_TRACE(family);
    TaskModel m = Make(family, HeadKind::kSequenceClassification);
    const ModelInputs in = Inputs();
    const torch::Tensor base = Forward(*m, in);
    ASSERT_TRUE(ApplyLora(*m, Options(), nullptr).ok());
    EXPECT_FALSE(LoraModuleNames(*m).empty());
    EXPECT_TRUE(torch::equal(base, Forward(*m, in)));
  }
}

TEST(LoraTest, DefaultTargetsPerFamily) {
  const std::map<std::string, std::set<std::string>> expected = {
      {"bert", {"query", "value"}},
      {"roberta", {"query", "value"}},
      {"distilbert", {"q_lin", "v_lin"}},
      {"gpt2", {"c_attn"}},
      {"llama", {"q_proj", "v_proj"}}};
  for (const std::string& family : kFamilies) {
    SCOPED_TRACE(family);
    TaskModel m = Make(family, HeadKind::kSequenceClassification);
    ASSERT_TRUE(ApplyLora(*m, Options(), nullptr).ok());
    std::set<std::string> last;
    const std::vector<std::string> names = LoraModuleNames(*m);
    for (const std::string& n : names) last.insert(n.substr(n.rfind('.') + 1));
    EXPECT_EQ(last, expected.at(family));
    // Two layers, one adapter per target per layer.
    EXPECT_EQ(names.size(), 2 * expected.at(family).size());
  }
}

TEST(LoraTest, OneStepChangesOnlyAdaptersAndHead) {
  for (const std::string family : {"bert", "gpt2", "llama"}) {
    SCOPED_TRACE(family);
    TaskModel m = Make(family, HeadKind::kSequenceClassification);
    ASSERT_TRUE(ApplyLora(*m, Options(), nullptr).ok());
    const ModelInputs in = Inputs();
    const torch::Tensor before_out = Forward(*m, in);
    std::map<std::string, torch::Tensor> before;
    std::vector<torch::Tensor> trainable;
    for (const auto& item : m->named_parameters(true)) {
      before[item.key()] = item.value().detach().clone();
      if (item.value().requires_grad()) trainable.push_back(item.value());
    }
    // No weight decay: a parameter moves only where its gradient is not 0.
    torch::optim::AdamW opt(trainable,
                            torch::optim::AdamWOptions(1e-2).weight_decay(0));
    m->train();
    torch::Tensor logits = m->forward(in);
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits, torch::tensor({0, 2}, torch::kLong));
    opt.zero_grad();
    loss.backward();
    opt.step();
    const std::vector<std::string> head_list = m->head_parameter_names();
    const std::set<std::string> head(head_list.begin(), head_list.end());
    size_t changed_b = 0, unchanged_a = 0;
    for (const auto& item : m->named_parameters(true)) {
      const std::string& n = item.key();
      const bool same = torch::equal(before.at(n), item.value().detach());
      if (n.find(".lora_B.") != std::string::npos) {
        changed_b += same ? 0 : 1;
      } else if (n.find(".lora_A.") != std::string::npos) {
        // B starts at zero, so A's first gradient is zero.
        unchanged_a += same ? 1 : 0;
      } else if (head.count(n)) {
        EXPECT_FALSE(same) << n;
      } else {
        EXPECT_TRUE(same) << n << " is a base weight and changed";
        EXPECT_FALSE(item.value().grad().defined()) << n;
      }
    }
    EXPECT_EQ(changed_b, LoraModuleNames(*m).size());
    EXPECT_EQ(unchanged_a, LoraModuleNames(*m).size());
    EXPECT_FALSE(torch::allclose(before_out, Forward(*m, in)));
  }
}

TEST(LoraTest, MergedModelMatchesTheAdaptedOne) {
  for (const std::string family : {"bert", "gpt2", "llama"}) {
    SCOPED_TRACE(family);
    TaskModel m = Make(family, HeadKind::kSequenceClassification);
    LoraOptions o = Options();
    // Every projection of the first layer's attention and MLP, so Conv1D's
    // transposed layout is merged for c_attn, c_proj and c_fc alike.
    if (family == "gpt2") o.target_modules = {"c_attn", "c_proj", "c_fc"};
    if (family == "llama") {
      o.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                          "gate_proj", "up_proj", "down_proj"};
    }
    if (family == "bert") o.target_modules = {"query", "key", "value", "dense"};
    ASSERT_TRUE(ApplyLora(*m, o, nullptr).ok());
    RandomiseB(*m);
    const ModelInputs in = Inputs();
    const torch::Tensor base_free = Forward(*m, in);

    // SaveMergedModel leaves the model as it was.
    const std::string merged_dir = NewDir("merged_" + family);
    std::map<std::string, torch::Tensor> before;
    for (const auto& item : m->named_parameters(true)) {
      before[item.key()] = item.value().detach().clone();
    }
    ASSERT_TRUE(SaveMergedModel(*m, merged_dir).ok());
    for (const auto& item : m->named_parameters(true)) {
      EXPECT_TRUE(torch::equal(before.at(item.key()), item.value()))
          << item.key();
    }
    EXPECT_TRUE(torch::equal(base_free, Forward(*m, in)));
    auto reloaded =
        LoadModel(merged_dir, HeadKind::kSequenceClassification, {}, nullptr);
    ASSERT_TRUE(reloaded.ok()) << reloaded.status();
    EXPECT_TRUE(LoraModuleNames(**reloaded).empty());
    EXPECT_TRUE(torch::allclose(base_free, Forward(**reloaded, in), 0, 1e-5));

    ASSERT_TRUE(MergeLora(*m).ok());
    EXPECT_TRUE(LoraModuleNames(*m).empty());
    for (const auto& item : m->named_parameters(true)) {
      EXPECT_EQ(item.key().find(".lora_"), std::string::npos) << item.key();
    }
    const torch::Tensor merged = Forward(*m, in);
    EXPECT_LE((merged - base_free).abs().max().item<double>(), 1e-5);
  }
}

TEST(LoraTest, TrainableParametersAreAdaptersAndHead) {
  struct Case {
    std::string family;
    int64_t adapters;
    int64_t head;
  };
  const int64_t r = 4, h = 128, labels = 3;
  // Two layers; BERT: query and value, h -> h each; classifier h x 3 + 3.
  // GPT-2: c_attn, h -> 3h; score (no bias). Llama: q_proj h -> 4 * 32,
  // v_proj h -> 2 * 32 (two KV heads of 32); score (no bias).
  const std::vector<Case> cases = {
      {"bert", 2 * 2 * (r * h + h * r), h * labels + labels},
      {"gpt2", 2 * (r * h + 3 * h * r), h * labels},
      {"llama", 2 * ((r * h + 128 * r) + (r * h + 64 * r)), h * labels}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.family);
    TaskModel m = Make(c.family, HeadKind::kSequenceClassification);
    int64_t total = 0;
    for (const auto& item : m->named_parameters(true)) {
      total += item.value().numel();
    }
    std::vector<std::string> log;
    ASSERT_TRUE(ApplyLora(*m, Options(r), [&](const std::string& line) {
                  log.push_back(line);
                }).ok());
    const int64_t trainable = TrainableParameterCount(*m);
    std::cout << c.family << ": base " << total << " parameters; trainable "
              << trainable << " = adapters " << c.adapters << " + head "
              << c.head << "\n";
    EXPECT_EQ(trainable, c.adapters + c.head);
    ASSERT_FALSE(log.empty());
    EXPECT_NE(
        log.back().find("trainable parameters " + std::to_string(trainable) +
                        " of " + std::to_string(total + c.adapters)),
        std::string::npos)
        << log.back();
  }
}

TEST(LoraTest, CausalLmTrainsAdaptersOnly) {
  TaskModel m = Make("llama", HeadKind::kCausalLm);
  ASSERT_TRUE(ApplyLora(*m, Options(), nullptr).ok());
  for (const auto& item : m->named_parameters(true)) {
    EXPECT_EQ(item.value().requires_grad(),
              item.key().find(".lora_") != std::string::npos)
        << item.key();
  }
}

TEST(LoraTest, PeftFilesAndRoundTrip) {
  for (const std::string family : {"bert", "gpt2", "llama"}) {
    SCOPED_TRACE(family);
    TaskModel m = Make(family, HeadKind::kSequenceClassification);
    LoraOptions o = Options(4, 16);
    o.base_model_name_or_path = "preset:" + family + "-tiny";
    ASSERT_TRUE(ApplyLora(*m, o, nullptr).ok());
    RandomiseB(*m);
    const ModelInputs in = Inputs();
    const torch::Tensor adapted = Forward(*m, in);
    const std::string dir = NewDir("peft_" + family);
    ASSERT_TRUE(SaveModel(*m, dir).ok());
    ASSERT_TRUE(SavePeftAdapter(*m, o, dir).ok());

    auto text = ReadFile(dir + "/adapter_config.json");
    ASSERT_TRUE(text.ok());
    const json config = json::parse(*text);
    EXPECT_EQ(config["peft_type"], "LORA");
    EXPECT_EQ(config["task_type"], "SEQ_CLS");
    EXPECT_EQ(config["r"], 4);
    EXPECT_EQ(config["lora_alpha"], 16);
    EXPECT_DOUBLE_EQ(config["lora_dropout"].get<double>(), 0.1);
    EXPECT_EQ(config["use_rslora"], false);
    EXPECT_EQ(config["bias"], "none");
    EXPECT_EQ(config["inference_mode"], true);
    EXPECT_EQ(config["base_model_name_or_path"], o.base_model_name_or_path);
    EXPECT_EQ(config["fan_in_fan_out"], family == "gpt2");
    const std::string head = family == "bert" ? "classifier" : "score";
    EXPECT_EQ(config["modules_to_save"], json::array({head}));
    const std::vector<std::string> targets =
        family == "bert"   ? std::vector<std::string>{"query", "value"}
        : family == "gpt2" ? std::vector<std::string>{"c_attn"}
                           : std::vector<std::string>{"q_proj", "v_proj"};
    EXPECT_EQ(config["target_modules"], json(targets));

    auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    std::map<std::string, std::vector<int64_t>> expected;
    const int64_t h = 128;
    for (int layer = 0; layer < 2; ++layer) {
      const std::string l = std::to_string(layer);
      if (family == "bert") {
        for (const char* t : {"query", "value"}) {
          const std::string base = "base_model.model.bert.encoder.layer." + l +
                                   ".attention.self." + t;
          expected[base + ".lora_A.weight"] = {4, h};
          expected[base + ".lora_B.weight"] = {h, 4};
        }
      } else if (family == "gpt2") {
        const std::string base =
            "base_model.model.transformer.h." + l + ".attn.c_attn";
        expected[base + ".lora_A.weight"] = {4, h};
        expected[base + ".lora_B.weight"] = {3 * h, 4};
      } else {
        const std::string base =
            "base_model.model.model.layers." + l + ".self_attn.";
        expected[base + "q_proj.lora_A.weight"] = {4, h};
        expected[base + "q_proj.lora_B.weight"] = {128, 4};
        expected[base + "v_proj.lora_A.weight"] = {4, h};
        expected[base + "v_proj.lora_B.weight"] = {64, 4};
      }
    }
    expected["base_model.model." + head + ".weight"] = {3, h};
    if (family == "bert") expected["base_model.model.classifier.bias"] = {3};
    std::map<std::string, std::vector<int64_t>> actual;
    for (const auto& [name, t] : (*file)->tensors()) {
      actual[name] = t.shape;
      EXPECT_EQ(t.dtype, "F32") << name;
    }
    EXPECT_EQ(actual, expected);

    // model.safetensors holds the base and head only.
    auto weights = SafetensorsFile::Open(dir + "/model.safetensors");
    ASSERT_TRUE(weights.ok());
    for (const auto& [name, t] : (*weights)->tensors()) {
      EXPECT_EQ(name.find("lora_"), std::string::npos) << name;
    }

    // LoadModel applies the adapter found next to the weights.
    std::vector<std::string> log;
    auto loaded =
        LoadModel(dir, HeadKind::kSequenceClassification, {},
                  [&](const std::string& line) { log.push_back(line); });
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(LoraModuleNames(**loaded), LoraModuleNames(*m));
    EXPECT_TRUE(torch::equal(adapted, Forward(**loaded, in)));

    // LoadPeftAdapter onto a base loaded without it, as for a PEFT adapter
    // shipped apart from its base.
    const std::string base_dir = NewDir("peft_base_" + family);
    std::filesystem::copy_file(dir + "/config.json", base_dir + "/config.json");
    std::filesystem::copy_file(dir + "/model.safetensors",
                               base_dir + "/model.safetensors");
    auto base =
        LoadModel(base_dir, HeadKind::kSequenceClassification, {}, nullptr);
    ASSERT_TRUE(base.ok()) << base.status();
    EXPECT_TRUE(LoraModuleNames(**base).empty());
    EXPECT_FALSE(torch::allclose(adapted, Forward(**base, in)));
    ASSERT_TRUE(LoadPeftAdapter(**base, dir, nullptr).ok());
    EXPECT_TRUE(torch::equal(adapted, Forward(**base, in)));
  }
}

TEST(LoraTest, ResumingKeepsTheLoadedAdapterAndNewSettingsMergeIt) {
  TaskModel m = Make("bert", HeadKind::kSequenceClassification);
  const LoraOptions o = Options();
  ASSERT_TRUE(ApplyLora(*m, o, nullptr).ok());
  RandomiseB(*m);
  const ModelInputs in = Inputs();
  const torch::Tensor adapted = Forward(*m, in);
  const std::string dir = NewDir("resume");
  ASSERT_TRUE(SaveModel(*m, dir).ok());
  ASSERT_TRUE(SavePeftAdapter(*m, o, dir).ok());

  auto same = LoadModel(dir, HeadKind::kSequenceClassification, {}, nullptr);
  ASSERT_TRUE(same.ok());
  ASSERT_TRUE(ApplyLora(**same, o, nullptr).ok());
  EXPECT_TRUE(torch::equal(adapted, Forward(**same, in)));
  auto params = (*same)->named_parameters(true);
  const std::string b =
      "bert.encoder.layer.0.attention.self.query.lora_B.weight";
  ASSERT_NE(params.find(b), nullptr);
  EXPECT_GT(params.find(b)->abs().sum().item<double>(), 0);  // Kept.
  EXPECT_TRUE(params.find(b)->requires_grad());

  auto other = LoadModel(dir, HeadKind::kSequenceClassification, {}, nullptr);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(ApplyLora(**other, Options(/*r=*/2), nullptr).ok());
  // The old adapter is in the weights now; the fresh one starts at zero.
  EXPECT_LE((adapted - Forward(**other, in)).abs().max().item<double>(), 1e-5);
  auto fresh = (*other)->named_parameters(true);
  ASSERT_NE(fresh.find(b), nullptr);
  EXPECT_EQ(fresh.find(b)->size(1), 2);
  EXPECT_EQ(fresh.find(b)->abs().sum().item<double>(), 0);
}

TEST(LoraTest, ScalingAndRsLora) {
  for (const bool fan_in_fan_out : {false, true}) {
    SCOPED_TRACE(fan_in_fan_out);
    torch::manual_seed(3);
    Linear l(6, 5, /*bias=*/true, fan_in_fan_out);
    {
      torch::NoGradGuard no_grad;
      l->weight.normal_();
      l->bias.normal_();
    }
    const double scaling = 16.0 / std::sqrt(4.0);  // rsLoRA: alpha/sqrt(r)
    l->AttachLora(4, scaling, 0.0);
    {
      torch::NoGradGuard no_grad;
      l->lora_B->weight.normal_();
    }
    l->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::randn({3, 2, 6});
    const torch::Tensor w = fan_in_fan_out ? l->weight.t() : l->weight;
    const torch::Tensor expected =
        torch::matmul(x, w.t()) + l->bias +
        scaling * torch::matmul(torch::matmul(x, l->lora_A->weight.t()),
                                l->lora_B->weight.t());
    EXPECT_TRUE(torch::allclose(l->forward(x), expected, 1e-5, 1e-5));
    EXPECT_EQ(l->LoraDelta().sizes(), l->weight.sizes());
  }

  LoraOptions o = Options(/*r=*/16, /*alpha=*/8);
  EXPECT_DOUBLE_EQ(o.scaling(), 0.5);
  o.use_rslora = true;
  EXPECT_DOUBLE_EQ(o.scaling(), 2.0);
  TaskModel m = Make("llama", HeadKind::kSequenceClassification);
  ASSERT_TRUE(ApplyLora(*m, o, nullptr).ok());
  for (const auto& [name, l] : Projections(*m)) {
    if (l->has_lora()) {
      EXPECT_DOUBLE_EQ(l->lora_scaling(), 2.0) << name;
    }
  }
  const std::string dir = NewDir("rslora");
  ASSERT_TRUE(SavePeftAdapter(*m, o, dir).ok());
  auto text = ReadFile(dir + "/adapter_config.json");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(json::parse(*text)["use_rslora"], true);
}

TEST(LoraTest, UnknownTargetModuleIsNamed) {
  TaskModel m = Make("llama", HeadKind::kSequenceClassification);
  LoraOptions o = Options();
  o.target_modules = {"q_proj", "query"};
  absl::Status s = ApplyLora(*m, o, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("\"query\""), std::string::npos) << s;
  EXPECT_NE(s.message().find("q_proj, up_proj, v_proj"), std::string::npos)
      << s;
  EXPECT_TRUE(LoraModuleNames(*m).empty());

  // The head is never a target.
  o.target_modules = {"score"};
  EXPECT_EQ(ApplyLora(*m, o, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  o = Options(0);
  EXPECT_EQ(ApplyLora(*m, o, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  TrainParams p;
  p.method = "lora";
  p.lora_dropout = 1.5;
  absl::Status bad = ApplyMethod(*m, p, nullptr);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("params[lora_dropout]"), std::string::npos)
      << bad;
  EXPECT_EQ(ParseTargetModules(" q_proj,, v_proj "),
            (std::vector<std::string>{"q_proj", "v_proj"}));
}

TEST(LoraTest, LinearProbeFreezesAllButTheHead) {
  for (const std::string family : {"distilbert", "gpt2"}) {
    SCOPED_TRACE(family);
    TaskModel m = Make(family, HeadKind::kSequenceClassification);
    TrainParams p;
    p.method = "linear-probe";
    ASSERT_TRUE(ApplyMethod(*m, p, nullptr).ok());
    const std::vector<std::string> head_list = m->head_parameter_names();
    const std::set<std::string> head(head_list.begin(), head_list.end());
    ASSERT_FALSE(head.empty());
    int64_t trainable = 0, head_size = 0;
    for (const auto& item : m->named_parameters(true)) {
      EXPECT_EQ(item.value().requires_grad(), head.count(item.key()) > 0)
          << item.key();
      if (head.count(item.key())) head_size += item.value().numel();
      if (item.value().requires_grad()) trainable += item.value().numel();
    }
    EXPECT_EQ(TrainableParameterCount(*m), head_size);
  }
  // GPT-2's language-model head is the input embedding: nothing to probe.
  TaskModel lm = Make("gpt2", HeadKind::kCausalLm);
  EXPECT_EQ(ApplyLinearProbe(*lm, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoraTest, MethodOutputsWriteAdapterAndMergedModel) {
  TaskModel m = Make("gpt2", HeadKind::kSequenceClassification);
  TrainParams p;
  p.method = "lora";
  p.lora_r = 4;
  p.lora_alpha = 8;
  p.use_rslora = 1;
  p.lora_target_modules = "c_attn,c_fc";
  ASSERT_TRUE(ApplyMethod(*m, p, nullptr).ok());
  RandomiseB(*m);
  const ModelInputs in = Inputs();
  const torch::Tensor adapted = Forward(*m, in);
  const std::string dir = NewDir("method");
  ASSERT_TRUE(SaveModel(*m, dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/tokenizer.json", "{}").ok());
  ASSERT_TRUE(SaveMethodOutputs(*m, p, dir, "preset:gpt2-tiny", true).ok());
  EXPECT_TRUE(PathExists(dir + "/adapter_config.json"));
  EXPECT_TRUE(PathExists(dir + "/adapter_model.safetensors"));
  EXPECT_TRUE(PathExists(dir + "/merged/tokenizer.json"));
  auto merged =
      LoadModel(dir + "/merged", HeadKind::kSequenceClassification, {}, {});
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(LoraModuleNames(**merged).empty());
  EXPECT_LE((adapted - Forward(**merged, in)).abs().max().item<double>(), 1e-5);
  auto text = ReadFile(dir + "/adapter_config.json");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(json::parse(*text)["target_modules"],
            json::array({"c_attn", "c_fc"}));

  // Full fine-tuning from a LoRA checkpoint trains the merged weights.
  auto again = LoadModel(dir, HeadKind::kSequenceClassification, {}, {});
  ASSERT_TRUE(again.ok());
  p.method = "full";
  ASSERT_TRUE(ApplyMethod(**again, p, nullptr).ok());
  EXPECT_TRUE(LoraModuleNames(**again).empty());
  EXPECT_LE((adapted - Forward(**again, in)).abs().max().item<double>(), 1e-5);

  // Other methods write nothing of their own.
  const std::string plain = NewDir("method_full");
  ASSERT_TRUE(SaveMethodOutputs(**again, p, plain, "x", true).ok());
  EXPECT_FALSE(PathExists(plain + "/adapter_config.json"));
}

}  // namespace
}  // namespace lathe
