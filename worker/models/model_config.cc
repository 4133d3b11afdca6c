#include "worker/models/model_config.h"

#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/json_file.h"
#include "common/status.h"
#include "worker/models/config_reader.h"
#include "worker/models/families.h"

namespace lathe {
namespace {

// config.json files are small; this bounds what a hostile file can make the
// parser allocate.
constexpr int64_t kMaxConfigBytes = 16ll * 1024 * 1024;
// More classes than any real task has; bounds the id2label vector.
constexpr int64_t kMaxLabels = 1000000;

const char kSupportedTypes[] =
    "bert, roberta, xlm-roberta, camembert, distilbert, gpt2, llama, "
    "mistral, qwen2, vit, lathe-cnn, wav2vec2";

absl::StatusOr<Architecture> ArchitectureOf(const std::string& model_type) {
  if (model_type == "bert") return Architecture::kBert;
  if (model_type == "roberta" || model_type == "xlm-roberta" ||
      model_type == "camembert") {
    return Architecture::kRoberta;
  }
  if (model_type == "distilbert") return Architecture::kDistilBert;
  if (model_type == "gpt2") return Architecture::kGpt2;
  if (model_type == "llama" || model_type == "mistral" ||
      model_type == "qwen2") {
    return Architecture::kLlama;
  }
  if (model_type == "vit") return Architecture::kVit;
  if (model_type == "lathe-cnn") return Architecture::kCnn;
  if (model_type == "wav2vec2") return Architecture::kWav2Vec2;
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: model_type \"", model_type,
                   "\" is not supported (supported: ", kSupportedTypes, ")"));
}

bool IsEncoder(Architecture a) {
  return a == Architecture::kBert || a == Architecture::kRoberta ||
         a == Architecture::kDistilBert;
}

bool IsImage(Architecture a) {
  return a == Architecture::kVit || a == Architecture::kCnn;
}

// id2label: {"0": "neg", "1": "pos"}, dense indices from 0.
absl::Status ParseLabels(const nlohmann::json& j, ModelConfig* c) {
  if (config_json::Present(j, "id2label")) {
    const nlohmann::json& m = j["id2label"];
    if (!m.is_object()) {
      return config_json::Bad("id2label", "is not an object");
    }
    if (static_cast<int64_t>(m.size()) > kMaxLabels) {
      return config_json::Bad(
          "id2label", absl::StrCat("has more than ", kMaxLabels, " entries"));
    }
    std::vector<std::string> labels(m.size());
    std::vector<bool> seen(m.size(), false);
    for (auto it = m.begin(); it != m.end(); ++it) {
      int64_t index = -1;
      if (!absl::SimpleAtoi(it.key(), &index) || index < 0 ||
          index >= static_cast<int64_t>(m.size()) || seen[index]) {
        return config_json::Bad(
            "id2label",
            absl::StrCat("key \"", it.key(), "\" is not an index in [0, ",
                         m.size(), ") given once"));
      }
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config.json: \"id2label\"[\"", it.key(), "\"] is not a string"));
      }
      seen[index] = true;
      labels[index] = it.value().get<std::string>();
    }
    c->id2label = std::move(labels);
  } else if (j.contains("num_labels")) {
    // Without id2label Hugging Face names the classes LABEL_0, LABEL_1, ...
    const nlohmann::json& n = j["num_labels"];
    if (!n.is_number_integer() || n.get<int64_t>() < 0 ||
        n.get<int64_t>() > kMaxLabels) {
      return config_json::Bad(
          "num_labels",
          absl::StrCat("must be an integer in [0, ", kMaxLabels, "]"));
    }
    for (int64_t i = 0; i < n.get<int64_t>(); ++i) {
      c->id2label.push_back(absl::StrCat("LABEL_", i));
    }
  }
  if (config_json::Present(j, "architectures")) {
    const nlohmann::json& a = j["architectures"];
    if (!a.is_array()) {
      return config_json::Bad("architectures", "is not a list");
    }
    for (const auto& name : a) {
      if (!name.is_string()) {
        return config_json::Bad("architectures", "holds a non-string entry");
      }
      c->architectures.push_back(name.get<std::string>());
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kBert:
      return "bert";
    case Architecture::kRoberta:
      return "roberta";
    case Architecture::kDistilBert:
      return "distilbert";
    case Architecture::kGpt2:
      return "gpt2";
    case Architecture::kLlama:
      return "llama";
    case Architecture::kVit:
      return "vit";
    case Architecture::kCnn:
      return "lathe-cnn";
    case Architecture::kWav2Vec2:
      return "wav2vec2";
  }
  return "unknown";
}

absl::Status ModelConfig::Validate() const {
  auto bad = [this](const std::string& m) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config (", model_type, "): ", m));
  };
  for (auto [name, value] :
       std::initializer_list<std::pair<const char*, int64_t>>{
           {"vocab_size", vocab_size},
           {"hidden_size", hidden_size},
           {"num_hidden_layers", num_hidden_layers},
           {"num_attention_heads", num_attention_heads},
           {"num_key_value_heads", num_key_value_heads},
           {"intermediate_size", intermediate_size},
           {"max_position_embeddings", max_position_embeddings},
           {"type_vocab_size", type_vocab_size}}) {
    if (value <= 0) {
      return bad(absl::StrCat(name, " must be positive, got ", value));
    }
  }
  if (head_dim < 0) return bad("head_dim must not be negative");
  if (head_dim == 0 && hidden_size % num_attention_heads != 0) {
    return bad(absl::StrCat("hidden_size ", hidden_size,
                            " is not a multiple of num_attention_heads ",
                            num_attention_heads));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad(absl::StrCat("num_attention_heads ", num_attention_heads,
                            " is not a multiple of num_key_value_heads ",
                            num_key_value_heads));
  }
  for (auto [name, value] :
       std::initializer_list<std::pair<const char*, double>>{
           {"hidden_dropout", hidden_dropout},
           {"attention_dropout", attention_dropout},
           {"classifier_dropout", classifier_dropout}}) {
    if (!(value >= 0 && value < 1)) {
      return bad(absl::StrCat(name, " must be in [0, 1), got ", value));
    }
  }
  static const std::set<std::string>* const kActivations =
      new std::set<std::string>{"gelu", "gelu_new", "gelu_pytorch_tanh", "relu",
                                "silu", "swish",    "quick_gelu"};
  if (kActivations->count(hidden_act) == 0) {
    return bad(
        absl::StrCat("unsupported activation (hidden_act) \"", hidden_act,
                     "\"; supported: ", absl::StrJoin(*kActivations, ", ")));
  }
  if (!(layer_norm_eps > 0)) return bad("layer_norm_eps must be positive");
  if (!(initializer_range >= 0)) {
    return bad("initializer_range must not be negative");
  }
  if (!(rope_theta > 0)) return bad("rope_theta must be positive");
  for (auto [name, value] :
       std::initializer_list<std::pair<const char*, std::optional<int64_t>>>{
           {"pad_token_id", pad_token_id},
           {"bos_token_id", bos_token_id},
           {"eos_token_id", eos_token_id}}) {
    if (value.has_value() && (*value < 0 || *value >= vocab_size)) {
      return bad(absl::StrCat(name, " ", *value, " is outside the vocabulary (",
                              vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  if (!j.contains("model_type") || !j["model_type"].is_string()) {
    return config_json::Bad(
        "model_type", absl::StrCat("is missing or not a string (supported: ",
                                   kSupportedTypes, ")"));
  }
  ModelConfig c;
  c.model_type = j["model_type"].get<std::string>();
  ASSIGN_OR_RETURN(c.architecture, ArchitectureOf(c.model_type));
  c.original = j;
  if (IsEncoder(c.architecture)) {
    RETURN_IF_ERROR(families::ParseEncoderConfig(j, &c));
  } else if (IsImage(c.architecture)) {
    RETURN_IF_ERROR(families::ParseImageConfig(j, &c));
  } else if (c.architecture == Architecture::kWav2Vec2) {
    RETURN_IF_ERROR(families::ParseSpeechConfig(j, &c));
  } else {
    RETURN_IF_ERROR(families::ParseDecoderConfig(j, &c));
  }
  RETURN_IF_ERROR(ParseLabels(j, &c));
  RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  if (!PathExists(path)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  ASSIGN_OR_RETURN(const nlohmann::json j,
                   ReadJsonFile(path, kMaxConfigBytes, "config"));
  auto config = FromJson(j);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  // A speech recogniser's alphabet sits beside its config.
  const std::string vocab =
      (std::filesystem::path(path).parent_path() / "vocab.json").string();
  if (config->architecture == Architecture::kWav2Vec2 && PathExists(vocab)) {
    ASSIGN_OR_RETURN(config->speech.vocab, ReadCtcVocab(vocab));
  }
  return config;
}

nlohmann::json ModelConfig::ToJson(
    const std::string& architecture_class) const {
  nlohmann::json j = original.is_object() ? original : nlohmann::json::object();
  j["model_type"] = model_type;
  j["architectures"] = nlohmann::json::array({architecture_class});
  if (id2label.empty()) {
    j.erase("id2label");
    j.erase("label2id");
  } else {
    nlohmann::json ids = nlohmann::json::object();
    nlohmann::json labels = nlohmann::json::object();
    for (size_t i = 0; i < id2label.size(); ++i) {
      ids[std::to_string(i)] = id2label[i];
      labels[id2label[i]] = static_cast<int64_t>(i);
    }
    j["id2label"] = std::move(ids);
    j["label2id"] = std::move(labels);
  }
  // A stale num_labels would contradict id2label when read back.
  if (j.contains("num_labels")) j["num_labels"] = num_labels();
  if (IsEncoder(architecture)) {
    families::WriteEncoderConfig(*this, &j);
  } else if (IsImage(architecture)) {
    families::WriteImageConfig(*this, &j);
  } else if (architecture == Architecture::kWav2Vec2) {
    families::WriteSpeechConfig(*this, &j);
  } else {
    families::WriteDecoderConfig(*this, &j);
  }
  return j;
}

namespace {
// The image presets' learning rate when a job sets none: measured on the
// handwritten digits of ./run setup (docs/tasks.md).
constexpr double kRandomStartLearningRate = 1e-3;
}  // namespace

const std::vector<Preset>& Presets() {
  static const std::vector<Preset>* const kPresets = [] {
    auto* presets = new std::vector<Preset>();
    auto bert = [](int64_t layers, int64_t hidden, int64_t heads,
                   int64_t intermediate) {
      ModelConfig c;
      c.architecture = Architecture::kBert;
      c.model_type = "bert";
      c.vocab_size = 30522;
      c.num_hidden_layers = layers;
      c.hidden_size = hidden;
      c.num_attention_heads = heads;
      c.num_key_value_heads = heads;
      c.intermediate_size = intermediate;
      c.max_position_embeddings = 512;
      c.type_vocab_size = 2;
      c.hidden_act = "gelu";
      c.layer_norm_eps = 1e-12;
      c.pad_token_id = 0;
      return c;
    };
    presets->push_back({"preset:bert-tiny", "bert-base-uncased",
                        "BERT, 2 layers, hidden 128, 2 heads (random init)",
                        bert(2, 128, 2, 512)});
    presets->push_back({"preset:bert-mini", "bert-base-uncased",
                        "BERT, 4 layers, hidden 256, 4 heads (random init)",
                        bert(4, 256, 4, 1024)});

    ModelConfig g;
    g.architecture = Architecture::kGpt2;
    g.model_type = "gpt2";
    g.vocab_size = 50257;
    g.num_hidden_layers = 2;
    g.hidden_size = 128;
    g.num_attention_heads = 2;
    g.num_key_value_heads = 2;
    g.intermediate_size = 4 * 128;  // GPT-2's n_inner default: 4 * n_embd
    g.max_position_embeddings = 1024;
    g.hidden_act = "gelu_new";
    g.layer_norm_eps = 1e-5;
    g.hidden_dropout = 0.1;
    g.attention_dropout = 0.1;
    g.classifier_dropout = 0.1;
    g.tie_word_embeddings = true;
    g.bos_token_id = 50256;
    g.eos_token_id = 50256;
    presets->push_back({"preset:gpt2-tiny", "gpt2",
                        "GPT-2, 2 layers, n_embd 128, 2 heads (random init)",
                        g});

    ModelConfig l;
    l.architecture = Architecture::kLlama;
    l.model_type = "llama";
    l.vocab_size = 32000;
    l.num_hidden_layers = 2;
    l.hidden_size = 128;
    l.num_attention_heads = 4;
    l.num_key_value_heads = 2;
    l.intermediate_size = 352;
    l.max_position_embeddings = 2048;
    l.hidden_act = "silu";
    l.layer_norm_eps = 1e-6;
    l.rope_theta = 10000.0;
    l.hidden_dropout = 0.0;
    l.attention_dropout = 0.0;
    l.classifier_dropout = 0.0;
    l.tie_word_embeddings = false;
    l.bos_token_id = 1;
    l.eos_token_id = 2;
    presets->push_back(
        {"preset:llama-tiny", "llama2",
         "Llama, 2 layers, hidden 128, 4 heads, 2 KV heads (random init)", l});

    // The size of bert-mini in the Llama family (the throughput benchmark's
    // causal LM): 4 layers, hidden 256, 4 heads, SwiGLU width ~8/3 hidden.
    ModelConfig lm = l;
    lm.num_hidden_layers = 4;
    lm.hidden_size = 256;
    lm.num_attention_heads = 4;
    lm.num_key_value_heads = 4;
    lm.intermediate_size = 688;
    presets->push_back({"preset:llama-mini", "llama2",
                        "Llama, 4 layers, hidden 256, 4 heads (random init)",
                        lm});

    // Image models read pixels, not text: no tokenizer (empty tokenizer_dir).
    ModelConfig v;
    v.architecture = Architecture::kVit;
    v.model_type = "vit";
    v.image_size = 32;
    v.patch_size = 8;
    v.num_channels = 3;
    v.hidden_size = 64;
    v.num_hidden_layers = 2;
    v.num_attention_heads = 2;
    v.num_key_value_heads = 2;
    v.intermediate_size = 128;
    v.hidden_act = "gelu";
    v.layer_norm_eps = 1e-12;
    v.qkv_bias = true;
    v.hidden_dropout = 0.0;
    v.attention_dropout = 0.0;
    v.classifier_dropout = 0.0;
    presets->push_back(
        {"preset:vit-tiny", "",
         "ViT, 32x32 images, 8x8 patches, 2 layers, hidden 64, 2 heads "
         "(random init)",
         v, kRandomStartLearningRate});

    ModelConfig n;
    n.architecture = Architecture::kCnn;
    n.model_type = "lathe-cnn";
    n.image_size = 32;
    n.num_channels = 3;
    n.hidden_sizes = {16, 32, 64};
    n.hidden_size = 64;
    n.num_hidden_layers = 3;
    n.num_attention_heads = 1;
    n.num_key_value_heads = 1;
    n.hidden_act = "relu";
    n.hidden_dropout = 0.0;
    n.attention_dropout = 0.0;
    n.classifier_dropout = 0.0;
    n.cnn_pooling = "flatten";
    presets->push_back({"preset:cnn-small", "",
                        "Lathe CNN, 32x32 images, 3 conv blocks (16, 32, 64 "
                        "channels) and a linear classifier on the flattened "
                        "4x4 map (random init)",
                        n, kRandomStartLearningRate});

    ModelConfig w;
    w.architecture = Architecture::kWav2Vec2;
    w.model_type = "wav2vec2";
    w.vocab_size = 32;
    w.hidden_size = 64;
    w.num_hidden_layers = 2;
    w.num_attention_heads = 2;
    w.num_key_value_heads = 2;
    w.intermediate_size = 128;
    w.hidden_act = "gelu";
    w.hidden_dropout = 0.0;
    w.attention_dropout = 0.0;
    w.classifier_dropout = 0.0;
    w.layer_norm_eps = 1e-5;
    w.pad_token_id = 0;
    w.bos_token_id = 1;
    w.eos_token_id = 2;
    // 320 samples (20 ms at 16 kHz) per frame, as the published models.
    w.speech.conv_dim = {32, 32, 32, 32};
    w.speech.conv_kernel = {10, 8, 4, 4};
    w.speech.conv_stride = {5, 4, 4, 4};
    w.speech.num_conv_pos_embeddings = 16;
    w.speech.num_conv_pos_embedding_groups = 4;
    w.speech.activation_dropout = 0.0;
    w.speech.final_dropout = 0.0;
    w.speech.layerdrop = 0.0;
    w.speech.mask_time_length = 4;
    w.speech.ctc_loss_reduction = "mean";
    w.speech.ctc_zero_infinity = true;
    w.speech.classifier_proj_size = 64;
    presets->push_back(
        {"preset:wav2vec2-tiny", "",
         "Wav2Vec2, 16 kHz audio, 4 conv layers (20 ms frames), 2 layers, "
         "hidden 64, 2 heads (random init)",
         w, kRandomStartLearningRate});
    return presets;
  }();
  return *kPresets;
}

absl::StatusOr<Preset> FindPreset(const std::string& name) {
  std::vector<std::string> names;
  for (const Preset& p : Presets()) {
    if (p.name == name) return p;
    names.push_back(p.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model preset \"", name,
                   "\"; known presets: ", absl::StrJoin(names, ", ")));
}

}  // namespace lathe
