// Internal to worker/models: the factories of the encoder families (BERT,
// RoBERTa, DistilBERT: encoders.cc) and decoder families (GPT-2, Llama:
// decoders.cc). model.cc's CreateModel dispatches to them. LibTorch.
#ifndef LATHE_WORKER_MODELS_FAMILY_MODELS_H_
#define LATHE_WORKER_MODELS_FAMILY_MODELS_H_

#include "absl/status/statusor.h"
#include "worker/models/model.h"

namespace lathe {
namespace families {

// Random initialisation as in model.h's CreateModel; INVALID_ARGUMENT for a
// head the family lacks.
absl::StatusOr<TaskModel> CreateEncoderModel(const ModelConfig& config,
                                             HeadKind head);
absl::StatusOr<TaskModel> CreateDecoderModel(const ModelConfig& config,
                                             HeadKind head);
// ViT and lathe-cnn (vision.cc): the base model and the image classifier.
absl::StatusOr<TaskModel> CreateVisionModel(const ModelConfig& config,
                                            HeadKind head);
// Wav2Vec2 (speech.cc): the base model, CTC and the audio classifier.
absl::StatusOr<TaskModel> CreateSpeechModel(const ModelConfig& config,
                                            HeadKind head);

}  // namespace families
}  // namespace lathe

#endif  // LATHE_WORKER_MODELS_FAMILY_MODELS_H_
