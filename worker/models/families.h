// Internal to worker/models: each family's config keys and factory, so
// model_config.cc and model.cc dispatch on Architecture without knowing the
// families' modules.
#ifndef LATHE_WORKER_MODELS_FAMILIES_H_
#define LATHE_WORKER_MODELS_FAMILIES_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/models/model_config.h"

namespace lathe {
namespace families {

// Config keys of BERT, RoBERTa and DistilBERT (encoder_config.cc) and of
// GPT-2 and the Llama family (decoder_config.cc): Parse fills `config`
// (architecture and model_type already set) from `j`, returning
// INVALID_ARGUMENT naming a malformed key; Write adds the family's own key
// names to `j`.
absl::Status ParseEncoderConfig(const nlohmann::json& j, ModelConfig* config);
void WriteEncoderConfig(const ModelConfig& config, nlohmann::json* j);
absl::Status ParseDecoderConfig(const nlohmann::json& j, ModelConfig* config);
void WriteDecoderConfig(const ModelConfig& config, nlohmann::json* j);
// ViT and lathe-cnn (image_config.cc), in the same way.
absl::Status ParseImageConfig(const nlohmann::json& j, ModelConfig* config);
void WriteImageConfig(const ModelConfig& config, nlohmann::json* j);
// Wav2Vec2 (speech_config.cc), in the same way.
absl::Status ParseSpeechConfig(const nlohmann::json& j, ModelConfig* config);
void WriteSpeechConfig(const ModelConfig& config, nlohmann::json* j);

}  // namespace families
}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_FAMILIES_H_
