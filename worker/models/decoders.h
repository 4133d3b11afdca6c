// Internal to worker/models: the decoder families' settings that ModelConfig
// has no field for. The models themselves (GPT-2 and the Llama family:
// Llama, Mistral, Qwen2) live in decoders.cc behind
// families::CreateDecoderModel (family_models.h). No LibTorch here, so
// decoder_config.cc (which must not link LibTorch) validates the same
// settings the models use.
#ifndef LATHE_WORKER_MODELS_DECODERS_H_
#define LATHE_WORKER_MODELS_DECODERS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/models/model_config.h"

namespace lathe {
namespace families {

// Read from ModelConfig::original (the config.json as loaded); a config built
// in code (a preset) has none of these keys and gets the Hugging Face
// defaults.
struct DecoderExtras {
  // Rotary position scaling (Llama family): rope_scaling (or the newer
  // rope_parameters) with rope_type/type "default", "linear" (inv_freq /
  // factor) or "llama3" (Llama 3.1's frequency-dependent interpolation).
  // Every other type ("dynamic", "yarn", "longrope", ...) is refused.
  enum class RopeType { kDefault, kLinear, kLlama3 };
  RopeType rope_type = RopeType::kDefault;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_positions = 8192;

  // Mistral: keys at most this far behind a query are attended to
  // (query - key < sliding_window); 0 means full causal attention. Qwen2's
  // use_sliding_window is refused unless its window covers
  // max_position_embeddings (then it is a no-op and this stays 0).
  int64_t sliding_window = 0;

  // GPT-2: embd_pdrop (ModelConfig::hidden_dropout holds resid_pdrop), and
  // the attention score scaling: 1/sqrt(head_dim) when scale_attn_weights,
  // further 1/(layer_index + 1) when scale_attn_by_inverse_layer_idx.
  double embedding_dropout = 0.1;
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;
};

// INVALID_ARGUMENT naming the key (rope_scaling, use_sliding_window,
// sliding_window, embd_pdrop, ...) for a malformed or unsupported value.
absl::StatusOr<DecoderExtras> ParseDecoderExtras(const ModelConfig& config);

}  // namespace families
}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_DECODERS_H_
