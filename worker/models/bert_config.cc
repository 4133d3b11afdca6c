#include "worker/models/bert_config.h"

#include <map>
#include <type_traits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lathe {
namespace {

template <typename T>
absl::Status ReadNumber(const nlohmann::json& j, const char* key, T* out) {
  if (!j.contains(key)) return absl::OkStatus();
  const auto& v = j[key];
  if (!v.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: \"", key, "\" is not a number"));
  }
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: \"", key, "\" is not an integer"));
    }
  }
  *out = v.get<T>();
  return absl::OkStatus();
}

}  // namespace

absl::Status BertConfig::Validate() const {
  auto bad = [](const std::string& m) {
    return absl::InvalidArgumentError("BERT config: " + m);
  };
  if (vocab_size <= 0 || hidden_size <= 0 || num_hidden_layers <= 0 ||
      num_attention_heads <= 0 || intermediate_size <= 0 ||
      max_position_embeddings <= 0 || type_vocab_size <= 0) {
    return bad("sizes must be positive");
  }
  if (hidden_size % num_attention_heads != 0) {
    return bad(absl::StrCat("hidden_size ", hidden_size,
                            " is not a multiple of num_attention_heads ",
                            num_attention_heads));
  }
  if (hidden_act != "gelu") {
    return bad(absl::StrCat("unsupported hidden_act \"", hidden_act,
                            "\" (only \"gelu\")"));
  }
  if (hidden_dropout_prob < 0 || hidden_dropout_prob >= 1 ||
      attention_probs_dropout_prob < 0 || attention_probs_dropout_prob >= 1) {
    return bad("dropout probabilities must be in [0, 1)");
  }
  if (pad_token_id < 0 || pad_token_id >= vocab_size) {
    return bad("pad_token_id outside the vocabulary");
  }
  if (!(layer_norm_eps > 0) || !(initializer_range >= 0)) {
    return bad("layer_norm_eps must be > 0 and initializer_range >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<BertConfig> BertConfig::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  if (j.contains("model_type") &&
      (!j["model_type"].is_string() || j["model_type"] != "bert")) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: model_type ", j["model_type"].dump(),
                     " is not supported (only \"bert\")"));
  }
  BertConfig c;
  for (auto [key, field] :
       std::initializer_list<std::pair<const char*, int64_t*>>{
           {"vocab_size", &c.vocab_size},
           {"hidden_size", &c.hidden_size},
           {"num_hidden_layers", &c.num_hidden_layers},
           {"num_attention_heads", &c.num_attention_heads},
           {"intermediate_size", &c.intermediate_size},
           {"max_position_embeddings", &c.max_position_embeddings},
           {"type_vocab_size", &c.type_vocab_size},
           {"pad_token_id", &c.pad_token_id}}) {
    if (auto s = ReadNumber(j, key, field); !s.ok()) return s;
  }
  for (auto [key, field] :
       std::initializer_list<std::pair<const char*, double*>>{
           {"hidden_dropout_prob", &c.hidden_dropout_prob},
           {"attention_probs_dropout_prob", &c.attention_probs_dropout_prob},
           {"layer_norm_eps", &c.layer_norm_eps},
           {"initializer_range", &c.initializer_range}}) {
    if (auto s = ReadNumber(j, key, field); !s.ok()) return s;
  }
  if (j.contains("hidden_act")) {
    if (!j["hidden_act"].is_string()) {
      return absl::InvalidArgumentError(
          "config.json: \"hidden_act\" is not a string");
    }
    c.hidden_act = j["hidden_act"].get<std::string>();
  }
  if (j.contains("id2label") && j["id2label"].is_object()) {
    std::map<int64_t, std::string> by_id;
    for (auto it = j["id2label"].begin(); it != j["id2label"].end(); ++it) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(it.key(), &id) || id < 0 ||
          !it.value().is_string()) {
        return absl::InvalidArgumentError(
            "config.json: id2label must map \"0\".. to strings");
      }
      by_id[id] = it.value().get<std::string>();
    }
    int64_t expect = 0;
    for (const auto& [id, label] : by_id) {
      if (id != expect++) {
        return absl::InvalidArgumentError(
            "config.json: id2label ids must be 0..num_labels-1");
      }
      c.id2label.push_back(label);
    }
  } else if (j.contains("num_labels") && j["num_labels"].is_number_integer()) {
    const int64_t n = j["num_labels"].get<int64_t>();
    for (int64_t i = 0; i < n && i < 100000; ++i) {
      c.id2label.push_back(absl::StrCat("LABEL_", i));
    }
  }
  if (auto s = c.Validate(); !s.ok()) return s;
  return c;
}

nlohmann::json BertConfig::ToJson() const {
  nlohmann::json j;
  j["architectures"] = {"BertForSequenceClassification"};
  j["model_type"] = "bert";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["intermediate_size"] = intermediate_size;
  j["hidden_act"] = hidden_act;
  j["hidden_dropout_prob"] = hidden_dropout_prob;
  j["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  j["max_position_embeddings"] = max_position_embeddings;
  j["type_vocab_size"] = type_vocab_size;
  j["layer_norm_eps"] = layer_norm_eps;
  j["pad_token_id"] = pad_token_id;
  j["initializer_range"] = initializer_range;
  j["position_embedding_type"] = "absolute";
  j["problem_type"] = "single_label_classification";
  j["torch_dtype"] = "float32";
  nlohmann::json id2label = nlohmann::json::object();
  nlohmann::json label2id = nlohmann::json::object();
  for (size_t i = 0; i < this->id2label.size(); ++i) {
    id2label[std::to_string(i)] = this->id2label[i];
    label2id[this->id2label[i]] = static_cast<int64_t>(i);
  }
  j["id2label"] = id2label;
  j["label2id"] = label2id;
  j["num_labels"] = num_labels();
  return j;
}

absl::StatusOr<BertConfig> BertConfig::Preset(const std::string& name) {
  BertConfig c;
  if (name == "preset:bert-tiny") {
    c.num_hidden_layers = 2;
    c.hidden_size = 128;
    c.num_attention_heads = 2;
    c.intermediate_size = 512;
  } else if (name == "preset:bert-mini") {
    c.num_hidden_layers = 4;
    c.hidden_size = 256;
    c.num_attention_heads = 4;
    c.intermediate_size = 1024;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model preset \"", name,
                     "\"; known presets: preset:bert-tiny, preset:bert-mini"));
  }
  return c;
}

}  // namespace lathe
