// config.json keys of the encoder families. Defaults are those of the
// Hugging Face configuration classes (BertConfig, RobertaConfig,
// DistilBertConfig), so a config that omits a key means what it means there.
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/models/config_reader.h"
#include "worker/models/families.h"

namespace lathe {
namespace families {
namespace {

using config_json::Bad;
using config_json::Read;
using config_json::ReadOptional;

absl::Status ParseDistilBert(const nlohmann::json& j, ModelConfig* c) {
  c->vocab_size = 30522;
  c->max_position_embeddings = 512;
  c->sinusoidal_positions = false;
  c->num_hidden_layers = 6;
  c->num_attention_heads = 12;
  c->hidden_size = 768;
  c->intermediate_size = 3072;
  c->hidden_dropout = 0.1;
  c->attention_dropout = 0.1;
  c->hidden_act = "gelu";
  c->initializer_range = 0.02;
  c->classifier_dropout = 0.2;  // seq_classif_dropout
  c->pad_token_id = 0;
  c->layer_norm_eps = 1e-12;  // Fixed in DistilBERT's modules
  c->type_vocab_size = 2;     // Unused: DistilBERT has no token types
  RETURN_IF_ERROR(Read(j, "vocab_size", &c->vocab_size));
  RETURN_IF_ERROR(
      Read(j, "max_position_embeddings", &c->max_position_embeddings));
  RETURN_IF_ERROR(Read(j, "sinusoidal_pos_embds", &c->sinusoidal_positions));
  RETURN_IF_ERROR(Read(j, "n_layers", &c->num_hidden_layers));
  RETURN_IF_ERROR(Read(j, "n_heads", &c->num_attention_heads));
  RETURN_IF_ERROR(Read(j, "dim", &c->hidden_size));
  RETURN_IF_ERROR(Read(j, "hidden_dim", &c->intermediate_size));
  RETURN_IF_ERROR(Read(j, "dropout", &c->hidden_dropout));
  RETURN_IF_ERROR(Read(j, "attention_dropout", &c->attention_dropout));
  RETURN_IF_ERROR(Read(j, "activation", &c->hidden_act));
  RETURN_IF_ERROR(Read(j, "initializer_range", &c->initializer_range));
  RETURN_IF_ERROR(Read(j, "seq_classif_dropout", &c->classifier_dropout));
  double qa_dropout = 0.1;
  RETURN_IF_ERROR(Read(j, "qa_dropout", &qa_dropout));
  if (!(qa_dropout >= 0 && qa_dropout < 1)) {
    return Bad("qa_dropout", "must be in [0, 1)");
  }
  RETURN_IF_ERROR(ReadOptional(j, "pad_token_id", &c->pad_token_id));
  c->num_key_value_heads = c->num_attention_heads;
  return absl::OkStatus();
}

// BERT and RoBERTa share their key names; RoBERTa differs in its token ids.
absl::Status ParseBertLike(const nlohmann::json& j, ModelConfig* c) {
  c->vocab_size = 30522;
  c->hidden_size = 768;
  c->num_hidden_layers = 12;
  c->num_attention_heads = 12;
  c->intermediate_size = 3072;
  c->hidden_act = "gelu";
  c->hidden_dropout = 0.1;
  c->attention_dropout = 0.1;
  c->max_position_embeddings = 512;
  c->type_vocab_size = 2;
  c->initializer_range = 0.02;
  c->layer_norm_eps = 1e-12;
  if (c->architecture == Architecture::kRoberta) {
    c->pad_token_id = 1;
    c->bos_token_id = 0;
    c->eos_token_id = 2;
  } else {
    c->pad_token_id = 0;
  }
  RETURN_IF_ERROR(Read(j, "vocab_size", &c->vocab_size));
  RETURN_IF_ERROR(config_json::ReadBertBody(j, c));
  RETURN_IF_ERROR(
      Read(j, "max_position_embeddings", &c->max_position_embeddings));
  RETURN_IF_ERROR(Read(j, "type_vocab_size", &c->type_vocab_size));
  RETURN_IF_ERROR(ReadOptional(j, "pad_token_id", &c->pad_token_id));
  RETURN_IF_ERROR(ReadOptional(j, "bos_token_id", &c->bos_token_id));
  RETURN_IF_ERROR(ReadOptional(j, "eos_token_id", &c->eos_token_id));
  // Hugging Face's default: a null classifier_dropout means the hidden one.
  c->classifier_dropout = c->hidden_dropout;
  RETURN_IF_ERROR(Read(j, "classifier_dropout", &c->classifier_dropout));
  std::string position_type = "absolute";
  RETURN_IF_ERROR(Read(j, "position_embedding_type", &position_type));
  if (position_type != "absolute") {
    return Bad("position_embedding_type",
               absl::StrCat("\"", position_type,
                            "\" is not supported (only \"absolute\")"));
  }
  if (c->architecture == Architecture::kRoberta && !c->pad_token_id) {
    // RoBERTa's position ids are counted from the padding index.
    return Bad("pad_token_id", "is required by RoBERTa");
  }
  if (c->architecture == Architecture::kRoberta &&
      c->max_position_embeddings <= *c->pad_token_id + 1) {
    return Bad("max_position_embeddings",
               "leaves no positions after RoBERTa's padding index");
  }
  c->num_key_value_heads = c->num_attention_heads;
  return absl::OkStatus();
}

void SetOptional(const std::optional<int64_t>& v, const std::string& key,
                 nlohmann::json* j) {
  if (v.has_value()) {
    (*j)[key] = *v;
  } else if (j->contains(key)) {
    (*j)[key] = nullptr;
  }
}

}  // namespace

absl::Status ParseEncoderConfig(const nlohmann::json& j, ModelConfig* config) {
  if (config->architecture == Architecture::kDistilBert) {
    return ParseDistilBert(j, config);
  }
  return ParseBertLike(j, config);
}

void WriteEncoderConfig(const ModelConfig& c, nlohmann::json* j) {
  nlohmann::json& out = *j;
  if (c.architecture == Architecture::kDistilBert) {
    out["vocab_size"] = c.vocab_size;
    out["max_position_embeddings"] = c.max_position_embeddings;
    out["sinusoidal_pos_embds"] = c.sinusoidal_positions;
    out["n_layers"] = c.num_hidden_layers;
    out["n_heads"] = c.num_attention_heads;
    out["dim"] = c.hidden_size;
    out["hidden_dim"] = c.intermediate_size;
    out["dropout"] = c.hidden_dropout;
    out["attention_dropout"] = c.attention_dropout;
    out["activation"] = c.hidden_act;
    out["initializer_range"] = c.initializer_range;
    out["seq_classif_dropout"] = c.classifier_dropout;
    if (!out.contains("qa_dropout")) out["qa_dropout"] = 0.1;
    SetOptional(c.pad_token_id, "pad_token_id", j);
    return;
  }
  out["vocab_size"] = c.vocab_size;
  out["hidden_size"] = c.hidden_size;
  out["num_hidden_layers"] = c.num_hidden_layers;
  out["num_attention_heads"] = c.num_attention_heads;
  out["intermediate_size"] = c.intermediate_size;
  out["hidden_act"] = c.hidden_act;
  out["hidden_dropout_prob"] = c.hidden_dropout;
  out["attention_probs_dropout_prob"] = c.attention_dropout;
  out["max_position_embeddings"] = c.max_position_embeddings;
  out["type_vocab_size"] = c.type_vocab_size;
  out["initializer_range"] = c.initializer_range;
  out["layer_norm_eps"] = c.layer_norm_eps;
  out["position_embedding_type"] = "absolute";
  SetOptional(c.pad_token_id, "pad_token_id", j);
  SetOptional(c.bos_token_id, "bos_token_id", j);
  SetOptional(c.eos_token_id, "eos_token_id", j);
  // Keeps Hugging Face's "null means the hidden dropout" where it held.
  const bool was_default = !c.original.contains("classifier_dropout") ||
                           c.original["classifier_dropout"].is_null();
  if (was_default && c.classifier_dropout == c.hidden_dropout) {
    out["classifier_dropout"] = nullptr;
  } else {
    out["classifier_dropout"] = c.classifier_dropout;
  }
}

}  // namespace families
}  // namespace lathe
