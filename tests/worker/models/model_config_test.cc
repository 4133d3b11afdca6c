#include "worker/models/model_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/files.h"

namespace lathe {
namespace {

using nlohmann::json;

void ExpectInvalid(const json& j, const std::string& fragment) {
  const auto c = ModelConfig::FromJson(j);
  ASSERT_FALSE(c.ok()) << "expected an error naming " << fragment;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(fragment), std::string::npos)
      << c.status();
}

TEST(ModelConfigTest, ParsesBertKeys) {
  const json j = {{"model_type", "bert"},
                  {"vocab_size", 100},
                  {"hidden_size", 32},
                  {"num_hidden_layers", 3},
                  {"num_attention_heads", 4},
                  {"intermediate_size", 64},
                  {"hidden_act", "gelu_new"},
                  {"hidden_dropout_prob", 0.2},
                  {"attention_probs_dropout_prob", 0.3},
                  {"max_position_embeddings", 40},
                  {"type_vocab_size", 3},
                  {"layer_norm_eps", 1e-7},
                  {"initializer_range", 0.01},
                  {"pad_token_id", 5},
                  {"classifier_dropout", 0.4},
                  {"id2label", {{"1", "pos"}, {"0", "neg"}}}};
  const auto c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kBert);
  EXPECT_EQ(c->vocab_size, 100);
  EXPECT_EQ(c->hidden_size, 32);
  EXPECT_EQ(c->num_hidden_layers, 3);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->intermediate_size, 64);
  EXPECT_EQ(c->hidden_act, "gelu_new");
  EXPECT_DOUBLE_EQ(c->hidden_dropout, 0.2);
  EXPECT_DOUBLE_EQ(c->attention_dropout, 0.3);
  EXPECT_EQ(c->max_position_embeddings, 40);
  EXPECT_EQ(c->type_vocab_size, 3);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-7);
  EXPECT_DOUBLE_EQ(c->initializer_range, 0.01);
  EXPECT_EQ(c->pad_token_id, 5);
  EXPECT_DOUBLE_EQ(c->classifier_dropout, 0.4);
  EXPECT_EQ(c->id2label, (std::vector<std::string>{"neg", "pos"}));
}

TEST(ModelConfigTest, HuggingFaceDefaults) {
  auto bert = ModelConfig::FromJson({{"model_type", "bert"}});
  ASSERT_TRUE(bert.ok()) << bert.status();
  EXPECT_EQ(bert->hidden_size, 768);
  EXPECT_EQ(bert->num_hidden_layers, 12);
  EXPECT_EQ(bert->vocab_size, 30522);
  EXPECT_DOUBLE_EQ(bert->layer_norm_eps, 1e-12);
  EXPECT_EQ(bert->pad_token_id, 0);
  // classifier_dropout absent (or null) means hidden_dropout_prob.
  auto null_dropout = ModelConfig::FromJson({{"model_type", "bert"},
                                             {"hidden_dropout_prob", 0.3},
                                             {"classifier_dropout", nullptr}});
  ASSERT_TRUE(null_dropout.ok());
  EXPECT_DOUBLE_EQ(null_dropout->classifier_dropout, 0.3);

  auto roberta = ModelConfig::FromJson({{"model_type", "xlm-roberta"}});
  ASSERT_TRUE(roberta.ok()) << roberta.status();
  EXPECT_EQ(roberta->architecture, Architecture::kRoberta);
  EXPECT_EQ(roberta->model_type, "xlm-roberta");
  EXPECT_EQ(roberta->pad_token_id, 1);
  EXPECT_EQ(roberta->bos_token_id, 0);
  EXPECT_EQ(roberta->eos_token_id, 2);

  auto distil = ModelConfig::FromJson({{"model_type", "distilbert"}});
  ASSERT_TRUE(distil.ok()) << distil.status();
  EXPECT_EQ(distil->hidden_size, 768);
  EXPECT_EQ(distil->num_hidden_layers, 6);
  EXPECT_EQ(distil->intermediate_size, 3072);
  EXPECT_DOUBLE_EQ(distil->classifier_dropout, 0.2);
  EXPECT_FALSE(distil->sinusoidal_positions);
}

TEST(ModelConfigTest, DistilBertKeyNames) {
  const json j = {{"model_type", "distilbert"},
                  {"dim", 64},
                  {"n_layers", 2},
                  {"n_heads", 4},
                  {"hidden_dim", 128},
                  {"activation", "relu"},
                  {"dropout", 0.05},
                  {"attention_dropout", 0.06},
                  {"seq_classif_dropout", 0.3},
                  {"qa_dropout", 0.2},
                  {"sinusoidal_pos_embds", true},
                  {"max_position_embeddings", 64},
                  {"vocab_size", 99},
                  {"pad_token_id", 3}};
  const auto c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kDistilBert);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->intermediate_size, 128);
  EXPECT_EQ(c->hidden_act, "relu");
  EXPECT_DOUBLE_EQ(c->hidden_dropout, 0.05);
  EXPECT_DOUBLE_EQ(c->attention_dropout, 0.06);
  EXPECT_DOUBLE_EQ(c->classifier_dropout, 0.3);
  EXPECT_TRUE(c->sinusoidal_positions);
  EXPECT_EQ(c->vocab_size, 99);
  EXPECT_EQ(c->pad_token_id, 3);

  // Written back under DistilBERT's own names, not BERT's.
  const json out = c->ToJson("DistilBertForMaskedLM");
  EXPECT_EQ(out["dim"], 64);
  EXPECT_EQ(out["n_layers"], 2);
  EXPECT_EQ(out["hidden_dim"], 128);
  EXPECT_EQ(out["activation"], "relu");
  EXPECT_EQ(out["seq_classif_dropout"], 0.3);
  EXPECT_EQ(out["qa_dropout"], 0.2);
  EXPECT_FALSE(out.contains("hidden_size"));
  EXPECT_FALSE(out.contains("num_hidden_layers"));
}

TEST(ModelConfigTest, ErrorsNameTheField) {
  const json base = {{"model_type", "bert"}};
  auto with = [&](const std::string& key, const json& value) {
    json j = base;
    j[key] = value;
    return j;
  };
  ExpectInvalid(with("hidden_size", "big"), "hidden_size");
  ExpectInvalid(with("hidden_size", 0), "hidden_size");
  ExpectInvalid(with("num_hidden_layers", 2.5), "num_hidden_layers");
  ExpectInvalid(with("num_attention_heads", 7), "num_attention_heads");
  ExpectInvalid(with("hidden_dropout_prob", 1.5), "hidden_dropout");
  ExpectInvalid(with("attention_probs_dropout_prob", -0.1),
                "attention_dropout");
  ExpectInvalid(with("hidden_act", "mish"), "hidden_act");
  ExpectInvalid(with("position_embedding_type", "relative_key"),
                "position_embedding_type");
  ExpectInvalid(with("pad_token_id", 40000), "pad_token_id");
  ExpectInvalid(with("id2label", {{"0", "a"}, {"2", "b"}}), "id2label");
  ExpectInvalid(with("id2label", {{"0", 3}}), "id2label");
  ExpectInvalid(with("architectures", "BertModel"), "architectures");
  ExpectInvalid({{"model_type", "distilbert"}, {"dim", "x"}}, "dim");
  ExpectInvalid({{"model_type", "distilbert"}, {"n_heads", 5}},
                "num_attention_heads");
  ExpectInvalid(json::array(), "not a JSON object");
}

TEST(ModelConfigTest, UnknownModelTypeNamesItAndTheSupportedOnes) {
  ExpectInvalid({{"model_type", "t5"}}, "\"t5\"");
  ExpectInvalid({{"model_type", "t5"}}, "bert, roberta");
  ExpectInvalid({{"hidden_size", 8}}, "model_type");
}

TEST(ModelConfigTest, RoundTripKeepsFieldsAndUnknownKeys) {
  const json j = {{"model_type", "roberta"},
                  {"vocab_size", 120},
                  {"hidden_size", 24},
                  {"num_hidden_layers", 2},
                  {"num_attention_heads", 3},
                  {"intermediate_size", 48},
                  {"max_position_embeddings", 30},
                  {"type_vocab_size", 1},
                  {"layer_norm_eps", 1e-5},
                  {"classifier_dropout", nullptr},
                  {"transformers_version", "4.40.0"},
                  {"some_custom_key", {1, 2, 3}},
                  {"architectures", {"RobertaForMaskedLM"}}};
  auto c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architectures, (std::vector<std::string>{"RobertaForMaskedLM"}));
  c->id2label = {"x", "y", "z"};
  const json out = c->ToJson("RobertaForSequenceClassification");
  EXPECT_EQ(out["architectures"], json({"RobertaForSequenceClassification"}));
  EXPECT_EQ(out["model_type"], "roberta");
  EXPECT_EQ(out["id2label"], json({{"0", "x"}, {"1", "y"}, {"2", "z"}}));
  EXPECT_EQ(out["label2id"], json({{"x", 0}, {"y", 1}, {"z", 2}}));
  EXPECT_EQ(out["some_custom_key"], json({1, 2, 3}));
  EXPECT_EQ(out["transformers_version"], "4.40.0");
  EXPECT_TRUE(out["classifier_dropout"].is_null());
  EXPECT_EQ(out["pad_token_id"], 1);

  const auto back = ModelConfig::FromJson(out);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->architecture, c->architecture);
  EXPECT_EQ(back->vocab_size, 120);
  EXPECT_EQ(back->hidden_size, 24);
  EXPECT_EQ(back->num_hidden_layers, 2);
  EXPECT_EQ(back->num_attention_heads, 3);
  EXPECT_EQ(back->intermediate_size, 48);
  EXPECT_EQ(back->max_position_embeddings, 30);
  EXPECT_EQ(back->type_vocab_size, 1);
  EXPECT_DOUBLE_EQ(back->layer_norm_eps, 1e-5);
  EXPECT_EQ(back->pad_token_id, c->pad_token_id);
  EXPECT_EQ(back->id2label, c->id2label);
  EXPECT_EQ(back->ToJson("RobertaForSequenceClassification"), out);
}

TEST(ModelConfigTest, FromFileErrorsNameTheFile) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / "lathe_model_config")
          .string();
  std::filesystem::create_directories(dir);
  const auto missing = ModelConfig::FromFile(dir + "/absent.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("absent.json"), std::string::npos);

  ASSERT_TRUE(WriteFileAtomic(dir + "/bad.json", "{\"model_type\": ").ok());
  const auto bad = ModelConfig::FromFile(dir + "/bad.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("bad.json"), std::string::npos);

  ASSERT_TRUE(
      WriteFileAtomic(dir + "/t5.json", R"({"model_type": "t5"})").ok());
  const auto t5 = ModelConfig::FromFile(dir + "/t5.json");
  EXPECT_EQ(t5.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t5.status().message().find("t5.json"), std::string::npos);
  EXPECT_NE(t5.status().message().find("model_type"), std::string::npos);
}

TEST(ModelConfigTest, BertPresetsHaveTheirDocumentedSizesAndValidate) {
  struct Want {
    const char* name;
    int64_t layers, hidden, heads, intermediate;
  };
  for (const Want& w : {Want{"preset:bert-tiny", 2, 128, 2, 512},
                        Want{"preset:bert-mini", 4, 256, 4, 1024}}) {
    const auto preset = FindPreset(w.name);
    ASSERT_TRUE(preset.ok()) << preset.status();
    const ModelConfig& c = preset->config;
    EXPECT_EQ(c.architecture, Architecture::kBert);
    EXPECT_EQ(preset->tokenizer_dir, "bert-base-uncased");
    EXPECT_EQ(c.vocab_size, 30522);  // bert-base-uncased
    EXPECT_EQ(c.hidden_size, w.hidden);
    EXPECT_EQ(c.num_hidden_layers, w.layers);
    EXPECT_EQ(c.num_attention_heads, w.heads);
    EXPECT_EQ(c.intermediate_size, w.intermediate);
    EXPECT_EQ(c.max_position_embeddings, 512);
    EXPECT_EQ(c.type_vocab_size, 2);
    EXPECT_DOUBLE_EQ(c.layer_norm_eps, 1e-12);
    EXPECT_EQ(c.pad_token_id, 0);
  }
  const auto gpt2 = FindPreset("preset:gpt2-tiny");
  ASSERT_TRUE(gpt2.ok());
  EXPECT_EQ(gpt2->config.architecture, Architecture::kGpt2);
  EXPECT_EQ(gpt2->tokenizer_dir, "gpt2");
  EXPECT_EQ(gpt2->config.vocab_size, 50257);
  EXPECT_EQ(gpt2->config.hidden_size, 128);
  EXPECT_EQ(gpt2->config.max_position_embeddings, 1024);
  EXPECT_EQ(gpt2->config.bos_token_id, 50256);
  EXPECT_EQ(gpt2->config.eos_token_id, 50256);
  EXPECT_TRUE(gpt2->config.tie_word_embeddings);
  EXPECT_EQ(gpt2->config.hidden_act, "gelu_new");
  const auto llama = FindPreset("preset:llama-tiny");
  ASSERT_TRUE(llama.ok());
  EXPECT_EQ(llama->config.architecture, Architecture::kLlama);
  EXPECT_EQ(llama->tokenizer_dir, "llama2");
  EXPECT_EQ(llama->config.num_attention_heads, 4);
  EXPECT_EQ(llama->config.num_key_value_heads, 2);
  EXPECT_EQ(llama->config.intermediate_size, 352);
  EXPECT_EQ(llama->config.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(llama->config.layer_norm_eps, 1e-6);
  EXPECT_EQ(llama->config.hidden_act, "silu");
  EXPECT_FALSE(llama->config.tie_word_embeddings);
  const auto llama_mini = FindPreset("preset:llama-mini");
  ASSERT_TRUE(llama_mini.ok());
  EXPECT_EQ(llama_mini->config.num_hidden_layers, 4);
  EXPECT_EQ(llama_mini->config.hidden_size, 256);
  EXPECT_EQ(llama_mini->config.num_key_value_heads, 4);
  EXPECT_EQ(llama_mini->config.intermediate_size, 688);
  // The five text presets, preset:vit-tiny, preset:cnn-small and
  // preset:wav2vec2-tiny.
  EXPECT_EQ(Presets().size(), 8u);
  for (const Preset& p : Presets()) {
    EXPECT_TRUE(p.config.Validate().ok()) << p.name;
  }
  const auto unknown = FindPreset("preset:huge");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("preset:llama-tiny"),
            std::string::npos);
}

TEST(ModelConfigTest, ArchitectureNames) {
  EXPECT_EQ(ArchitectureName(Architecture::kBert), "bert");
  EXPECT_EQ(ArchitectureName(Architecture::kRoberta), "roberta");
  EXPECT_EQ(ArchitectureName(Architecture::kDistilBert), "distilbert");
  EXPECT_EQ(ArchitectureName(Architecture::kGpt2), "gpt2");
  EXPECT_EQ(ArchitectureName(Architecture::kLlama), "llama");
}

}  // namespace
}  // namespace lathe
