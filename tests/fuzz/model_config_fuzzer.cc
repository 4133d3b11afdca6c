// Feeds: a model's config.json (any family: BERT, RoBERTa, DistilBERT,
// GPT-2, Llama, ViT, lathe-cnn) to ModelConfig::FromJson
// (worker/models/model_config.h, the torch-free part of the models).
// Checks: no crash, escaped exception or sanitizer report; errors are
// INVALID_ARGUMENT; an accepted config passes Validate, and saving it with
// ToJson and reading that back gives the same architecture hyperparameters
// and labels.
#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_util.h"
#include "worker/models/model_config.h"

namespace {

// NaN-safe equality for the floating-point fields.
bool Same(double a, double b) { return a == b || (a != a && b != b); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr,
                                                 /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  const absl::StatusOr<lathe::ModelConfig> c = lathe::ModelConfig::FromJson(j);
  if (!c.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(c.status()));
    return 0;
  }
  FUZZ_CHECK(c->Validate().ok());
  FUZZ_CHECK(c->EffectiveHeadDim() > 0);

  const absl::StatusOr<lathe::ModelConfig> d =
      lathe::ModelConfig::FromJson(c->ToJson("FuzzModel"));
  FUZZ_CHECK(d.ok());
  FUZZ_CHECK(d->architecture == c->architecture);
  FUZZ_CHECK(d->model_type == c->model_type);
  FUZZ_CHECK(d->vocab_size == c->vocab_size);
  FUZZ_CHECK(d->hidden_size == c->hidden_size);
  FUZZ_CHECK(d->num_hidden_layers == c->num_hidden_layers);
  FUZZ_CHECK(d->num_attention_heads == c->num_attention_heads);
  FUZZ_CHECK(d->num_key_value_heads == c->num_key_value_heads);
  FUZZ_CHECK(d->intermediate_size == c->intermediate_size);
  FUZZ_CHECK(d->max_position_embeddings == c->max_position_embeddings);
  FUZZ_CHECK(d->type_vocab_size == c->type_vocab_size);
  FUZZ_CHECK(d->hidden_act == c->hidden_act);
  FUZZ_CHECK(Same(d->layer_norm_eps, c->layer_norm_eps));
  FUZZ_CHECK(Same(d->hidden_dropout, c->hidden_dropout));
  FUZZ_CHECK(Same(d->attention_dropout, c->attention_dropout));
  FUZZ_CHECK(Same(d->classifier_dropout, c->classifier_dropout));
  FUZZ_CHECK(Same(d->rope_theta, c->rope_theta));
  FUZZ_CHECK(d->sinusoidal_positions == c->sinusoidal_positions);
  FUZZ_CHECK(d->attention_bias == c->attention_bias);
  FUZZ_CHECK(d->mlp_bias == c->mlp_bias);
  FUZZ_CHECK(d->head_dim == c->head_dim);
  FUZZ_CHECK(d->tie_word_embeddings == c->tie_word_embeddings);
  FUZZ_CHECK(d->pad_token_id == c->pad_token_id);
  FUZZ_CHECK(d->bos_token_id == c->bos_token_id);
  FUZZ_CHECK(d->eos_token_id == c->eos_token_id);
  FUZZ_CHECK(d->image_size == c->image_size);
  FUZZ_CHECK(d->patch_size == c->patch_size);
  FUZZ_CHECK(d->num_channels == c->num_channels);
  FUZZ_CHECK(d->qkv_bias == c->qkv_bias);
  FUZZ_CHECK(d->hidden_sizes == c->hidden_sizes);
  FUZZ_CHECK(d->id2label == c->id2label);
  return 0;
}
