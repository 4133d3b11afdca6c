// config.json keys of GPT-2 and the Llama family (llama, mistral, qwen2).
// Missing keys take the defaults of the Hugging Face configuration classes
// (GPT2Config, LlamaConfig, MistralConfig, Qwen2Config). No LibTorch.
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/models/config_reader.h"
#include "worker/models/decoders.h"
#include "worker/models/families.h"
#include "worker/models/model_config.h"

namespace lathe {
namespace families {
namespace {

using json = nlohmann::json;

// Upper bounds on the sizes config.json controls, far above any published
// model, so a hostile file cannot ask for absurd allocations.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxHidden = int64_t{1} << 16;
constexpr int64_t kMaxIntermediate = int64_t{1} << 18;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxPositions = int64_t{1} << 24;

using config_json::Bad;
using config_json::Present;
using config_json::Read;

// A token id: absent/null keeps *out; an integer; or a list (Llama 3's
// eos_token_id lists several stop tokens) whose first entry is kept.
absl::Status GetTokenId(const json& j, const std::string& key,
                        std::optional<int64_t>* out) {
  if (!j.contains(key)) return absl::OkStatus();
  const json& v = j[key];
  if (v.is_null()) {
    *out = std::nullopt;
    return absl::OkStatus();
  }
  const json* first = &v;
  if (v.is_array()) {
    if (v.empty()) {
      *out = std::nullopt;
      return absl::OkStatus();
    }
    first = &v[0];
  }
  if (!first->is_number_integer() || first->get<int64_t>() < 0) {
    return Bad(key, "is not a non-negative integer (or a list of them)");
  }
  *out = first->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ParseGpt2(const json& j, ModelConfig* c) {
  c->vocab_size = 50257;
  c->max_position_embeddings = 1024;
  c->hidden_size = 768;
  c->num_hidden_layers = 12;
  c->num_attention_heads = 12;
  c->hidden_act = "gelu_new";
  c->hidden_dropout = 0.1;
  c->attention_dropout = 0.1;
  c->classifier_dropout = 0.1;
  c->layer_norm_eps = 1e-5;
  c->initializer_range = 0.02;
  c->bos_token_id = 50256;
  c->eos_token_id = 50256;
  c->pad_token_id = std::nullopt;
  c->tie_word_embeddings = true;
  RETURN_IF_ERROR(Read(j, "vocab_size", 1, kMaxVocab, &c->vocab_size));
  RETURN_IF_ERROR(
      Read(j, "n_positions", 1, kMaxPositions, &c->max_position_embeddings));
  RETURN_IF_ERROR(Read(j, "n_embd", 1, kMaxHidden, &c->hidden_size));
  RETURN_IF_ERROR(Read(j, "n_layer", 1, kMaxLayers, &c->num_hidden_layers));
  RETURN_IF_ERROR(Read(j, "n_head", 1, kMaxHeads, &c->num_attention_heads));
  c->num_key_value_heads = c->num_attention_heads;
  c->intermediate_size = 4 * c->hidden_size;  // n_inner null: 4 * n_embd
  RETURN_IF_ERROR(
      Read(j, "n_inner", 1, kMaxIntermediate, &c->intermediate_size));
  RETURN_IF_ERROR(Read(j, "activation_function", &c->hidden_act));
  RETURN_IF_ERROR(Read(j, "resid_pdrop", &c->hidden_dropout));
  RETURN_IF_ERROR(Read(j, "attn_pdrop", &c->attention_dropout));
  RETURN_IF_ERROR(Read(j, "classifier_dropout", &c->classifier_dropout));
  RETURN_IF_ERROR(Read(j, "layer_norm_epsilon", &c->layer_norm_eps));
  RETURN_IF_ERROR(Read(j, "initializer_range", &c->initializer_range));
  RETURN_IF_ERROR(Read(j, "tie_word_embeddings", &c->tie_word_embeddings));
  c->head_dim = 0;
  c->attention_bias = true;  // Conv1D layers always carry biases
  c->mlp_bias = true;
  return absl::OkStatus();
}

absl::Status ParseLlamaFamily(const json& j, ModelConfig* c) {
  const std::string& type = c->model_type;
  // Class defaults by model_type.
  int64_t kv_default = 0;  // 0: as many as the attention heads
  if (type == "mistral") {
    c->vocab_size = 32000;
    c->hidden_size = 4096;
    c->intermediate_size = 14336;
    c->max_position_embeddings = 4096 * 32;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    kv_default = 8;
  } else if (type == "qwen2") {
    c->vocab_size = 151936;
    c->hidden_size = 4096;
    c->intermediate_size = 22016;
    c->max_position_embeddings = 32768;
    c->bos_token_id = std::nullopt;
    c->eos_token_id = std::nullopt;
    kv_default = 32;
  } else {
    c->vocab_size = 32000;
    c->hidden_size = 4096;
    c->intermediate_size = 11008;
    c->max_position_embeddings = 2048;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
  }
  c->num_hidden_layers = 32;
  c->num_attention_heads = 32;
  c->hidden_act = "silu";
  c->initializer_range = 0.02;
  c->layer_norm_eps = 1e-6;
  c->rope_theta = 10000.0;
  c->tie_word_embeddings = false;
  c->pad_token_id = std::nullopt;
  c->hidden_dropout = 0.0;  // The Llama family has no hidden-state dropout
  c->attention_dropout = 0.0;
  // The token-classification head's dropout when config.json names none.
  c->classifier_dropout = 0.1;
  c->head_dim = 0;
  c->attention_bias = false;
  c->mlp_bias = false;

  RETURN_IF_ERROR(Read(j, "vocab_size", 1, kMaxVocab, &c->vocab_size));
  RETURN_IF_ERROR(Read(j, "hidden_size", 1, kMaxHidden, &c->hidden_size));
  RETURN_IF_ERROR(
      Read(j, "intermediate_size", 1, kMaxIntermediate, &c->intermediate_size));
  RETURN_IF_ERROR(
      Read(j, "num_hidden_layers", 1, kMaxLayers, &c->num_hidden_layers));
  RETURN_IF_ERROR(
      Read(j, "num_attention_heads", 1, kMaxHeads, &c->num_attention_heads));
  // Absent: the class default; explicit null: one KV head per query head.
  c->num_key_value_heads = c->num_attention_heads;
  if (!j.contains("num_key_value_heads") && kv_default > 0) {
    c->num_key_value_heads = kv_default;
  }
  RETURN_IF_ERROR(
      Read(j, "num_key_value_heads", 1, kMaxHeads, &c->num_key_value_heads));
  RETURN_IF_ERROR(Read(j, "hidden_act", &c->hidden_act));
  RETURN_IF_ERROR(Read(j, "max_position_embeddings", 1, kMaxPositions,
                       &c->max_position_embeddings));
  RETURN_IF_ERROR(Read(j, "initializer_range", &c->initializer_range));
  RETURN_IF_ERROR(Read(j, "rms_norm_eps", &c->layer_norm_eps));
  // Newer config.json files nest rope_theta in rope_parameters.
  if (Present(j, "rope_parameters")) {
    if (!j["rope_parameters"].is_object()) {
      return Bad("rope_parameters", "is not an object");
    }
    RETURN_IF_ERROR(Read(j["rope_parameters"], "rope_theta", &c->rope_theta));
  }
  RETURN_IF_ERROR(Read(j, "rope_theta", &c->rope_theta));
  RETURN_IF_ERROR(Read(j, "attention_dropout", &c->attention_dropout));
  RETURN_IF_ERROR(Read(j, "classifier_dropout", &c->classifier_dropout));
  RETURN_IF_ERROR(Read(j, "head_dim", 1, kMaxHidden, &c->head_dim));
  RETURN_IF_ERROR(Read(j, "tie_word_embeddings", &c->tie_word_embeddings));
  if (type == "qwen2") {
    // Qwen2's q/k/v projections always carry biases (o_proj and the MLP
    // never); its config has no key for it.
    c->attention_bias = true;
  } else if (type == "llama") {
    RETURN_IF_ERROR(Read(j, "attention_bias", &c->attention_bias));
    RETURN_IF_ERROR(Read(j, "mlp_bias", &c->mlp_bias));
  }
  // Mistral has neither bias whatever its config says.
  return absl::OkStatus();
}

absl::Status ParseRope(const json& j, DecoderExtras* e) {
  const char* key = "rope_scaling";
  const json* scaling = nullptr;
  if (Present(j, "rope_scaling")) {
    scaling = &j["rope_scaling"];
  } else if (Present(j, "rope_parameters")) {
    key = "rope_parameters";
    scaling = &j["rope_parameters"];
  }
  if (scaling == nullptr) return absl::OkStatus();
  if (!scaling->is_object()) return Bad(key, "is not an object");
  std::string type = "default";
  RETURN_IF_ERROR(Read(*scaling, "type", &type));
  RETURN_IF_ERROR(Read(*scaling, "rope_type", &type));
  auto factor = [&]() -> absl::Status {
    if (!Present(*scaling, "factor") || !(*scaling)["factor"].is_number()) {
      return Bad(key, absl::StrCat("(", type, ") needs a numeric \"factor\""));
    }
    e->rope_factor = (*scaling)["factor"].get<double>();
    if (!(e->rope_factor >= 1.0) || e->rope_factor > 1e6) {
      return Bad(key, absl::StrCat("factor must be in [1, 1e6], got ",
                                   e->rope_factor));
    }
    return absl::OkStatus();
  };
  if (type == "default") {
    e->rope_type = DecoderExtras::RopeType::kDefault;
  } else if (type == "linear") {
    e->rope_type = DecoderExtras::RopeType::kLinear;
    RETURN_IF_ERROR(factor());
  } else if (type == "llama3") {
    e->rope_type = DecoderExtras::RopeType::kLlama3;
    RETURN_IF_ERROR(factor());
    for (const char* k : {"low_freq_factor", "high_freq_factor",
                          "original_max_position_embeddings"}) {
      if (!Present(*scaling, k) || !(*scaling)[k].is_number()) {
        return Bad(key, absl::StrCat("(llama3) needs a numeric \"", k, "\""));
      }
    }
    e->rope_low_freq_factor = (*scaling)["low_freq_factor"].get<double>();
    e->rope_high_freq_factor = (*scaling)["high_freq_factor"].get<double>();
    RETURN_IF_ERROR(Read(*scaling, "original_max_position_embeddings", 1,
                         kMaxPositions, &e->rope_original_max_positions));
    if (!(e->rope_low_freq_factor > 0) ||
        !(e->rope_high_freq_factor > e->rope_low_freq_factor)) {
      return Bad(key, "(llama3) needs 0 < low_freq_factor < high_freq_factor");
    }
  } else {
    return Bad(key, absl::StrCat("type \"", type,
                                 "\" is not supported (supported: default, "
                                 "linear, llama3)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecoderExtras> ParseDecoderExtras(const ModelConfig& config) {
  DecoderExtras e;
  const json& j =
      config.original.is_object() ? config.original : json::object();
  if (config.architecture == Architecture::kGpt2) {
    // GPT2Config's embd_pdrop defaults to 0.1; a config built in code (no
    // config.json keys) uses its one hidden dropout for the embeddings too.
    e.embedding_dropout = j.empty() ? config.hidden_dropout : 0.1;
    RETURN_IF_ERROR(Read(j, "embd_pdrop", &e.embedding_dropout));
    if (!(e.embedding_dropout >= 0 && e.embedding_dropout < 1)) {
      return Bad("embd_pdrop", "must be in [0, 1)");
    }
    RETURN_IF_ERROR(Read(j, "scale_attn_weights", &e.scale_attn_weights));
    RETURN_IF_ERROR(Read(j, "scale_attn_by_inverse_layer_idx",
                         &e.scale_attn_by_inverse_layer_idx));
    return e;
  }
  RETURN_IF_ERROR(ParseRope(j, &e));
  if (config.model_type == "mistral") {
    // MistralConfig's sliding_window defaults to 4096; null disables it.
    e.sliding_window = 4096;
    if (j.contains("sliding_window") && j["sliding_window"].is_null()) {
      e.sliding_window = 0;
    }
    RETURN_IF_ERROR(
        Read(j, "sliding_window", 1, kMaxPositions, &e.sliding_window));
    // A window covering every position changes nothing.
    if (e.sliding_window >= config.max_position_embeddings) {
      e.sliding_window = 0;
    }
  } else if (config.model_type == "qwen2") {
    bool use_sliding_window = false;
    RETURN_IF_ERROR(Read(j, "use_sliding_window", &use_sliding_window));
    if (use_sliding_window) {
      int64_t window = 4096;
      int64_t max_window_layers = 28;
      RETURN_IF_ERROR(Read(j, "sliding_window", 1, kMaxPositions, &window));
      RETURN_IF_ERROR(
          Read(j, "max_window_layers", 0, kMaxLayers, &max_window_layers));
      // Qwen2 slides only layers from max_window_layers on; Lathe
      // implements the window for no layer, so it accepts the setting only
      // where it is a no-op.
      if (window < config.max_position_embeddings &&
          max_window_layers < config.num_hidden_layers) {
        return Bad("use_sliding_window",
                   absl::StrCat("is true with sliding_window ", window,
                                " < max_position_embeddings ",
                                config.max_position_embeddings,
                                "; Qwen2 sliding-window attention is not "
                                "supported"));
      }
    }
  }
  return e;
}

absl::Status ParseDecoderConfig(const nlohmann::json& j, ModelConfig* config) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  if (config->architecture == Architecture::kGpt2) {
    RETURN_IF_ERROR(ParseGpt2(j, config));
  } else if (config->architecture == Architecture::kLlama) {
    RETURN_IF_ERROR(ParseLlamaFamily(j, config));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: model_type \"", config->model_type,
                     "\" is not a decoder family"));
  }
  RETURN_IF_ERROR(GetTokenId(j, "pad_token_id", &config->pad_token_id));
  RETURN_IF_ERROR(GetTokenId(j, "bos_token_id", &config->bos_token_id));
  RETURN_IF_ERROR(GetTokenId(j, "eos_token_id", &config->eos_token_id));
  // The extras are read again by the model; parsing them here reports a
  // bad value when the config is read, not when the model is built.
  ModelConfig probe = *config;
  probe.original = j;
  return ParseDecoderExtras(probe).status();
}

namespace {

// Writes a token id unless config.json holds a list starting with it
// (Llama 3's several eos ids), which then stays as it was.
void PutTokenId(const std::optional<int64_t>& id, const std::string& key,
                json* j) {
  if (j->contains(key) && (*j)[key].is_array() && !(*j)[key].empty() &&
      id.has_value() && (*j)[key][0].is_number_integer() &&
      (*j)[key][0].get<int64_t>() == *id) {
    return;
  }
  if (id.has_value()) {
    (*j)[key] = *id;
  } else {
    (*j)[key] = nullptr;
  }
}

// classifier_dropout only when it differs from the class default or was
// there already, so configs do not grow keys they never had.
void PutClassifierDropout(const ModelConfig& c, json* j) {
  if (j->contains("classifier_dropout") || c.classifier_dropout != 0.1) {
    (*j)["classifier_dropout"] = c.classifier_dropout;
  }
}

}  // namespace

void WriteDecoderConfig(const ModelConfig& c, nlohmann::json* j) {
  if (c.architecture == Architecture::kGpt2) {
    (*j)["vocab_size"] = c.vocab_size;
    (*j)["n_positions"] = c.max_position_embeddings;
    (*j)["n_embd"] = c.hidden_size;
    (*j)["n_layer"] = c.num_hidden_layers;
    (*j)["n_head"] = c.num_attention_heads;
    if (c.intermediate_size == 4 * c.hidden_size) {
      (*j)["n_inner"] = nullptr;
    } else {
      (*j)["n_inner"] = c.intermediate_size;
    }
    (*j)["activation_function"] = c.hidden_act;
    (*j)["resid_pdrop"] = c.hidden_dropout;
    if (!j->contains("embd_pdrop")) (*j)["embd_pdrop"] = c.hidden_dropout;
    (*j)["attn_pdrop"] = c.attention_dropout;
    (*j)["layer_norm_epsilon"] = c.layer_norm_eps;
    (*j)["initializer_range"] = c.initializer_range;
    if (!j->contains("scale_attn_weights")) (*j)["scale_attn_weights"] = true;
  } else {
    (*j)["vocab_size"] = c.vocab_size;
    (*j)["hidden_size"] = c.hidden_size;
    (*j)["intermediate_size"] = c.intermediate_size;
    (*j)["num_hidden_layers"] = c.num_hidden_layers;
    (*j)["num_attention_heads"] = c.num_attention_heads;
    (*j)["num_key_value_heads"] = c.num_key_value_heads;
    (*j)["hidden_act"] = c.hidden_act;
    (*j)["max_position_embeddings"] = c.max_position_embeddings;
    (*j)["rms_norm_eps"] = c.layer_norm_eps;
    (*j)["initializer_range"] = c.initializer_range;
    (*j)["attention_dropout"] = c.attention_dropout;
    if (j->contains("rope_parameters") && (*j)["rope_parameters"].is_object()) {
      (*j)["rope_parameters"]["rope_theta"] = c.rope_theta;
    }
    if (j->contains("rope_theta") || !j->contains("rope_parameters")) {
      (*j)["rope_theta"] = c.rope_theta;
    }
    if (c.head_dim > 0) (*j)["head_dim"] = c.head_dim;
    if (c.model_type == "llama") {
      (*j)["attention_bias"] = c.attention_bias;
      (*j)["mlp_bias"] = c.mlp_bias;
    }
  }
  (*j)["tie_word_embeddings"] = c.tie_word_embeddings;
  PutClassifierDropout(c, j);
  PutTokenId(c.pad_token_id, "pad_token_id", j);
  PutTokenId(c.bos_token_id, "bos_token_id", j);
  PutTokenId(c.eos_token_id, "eos_token_id", j);
}

}  // namespace families
}  // namespace lathe
