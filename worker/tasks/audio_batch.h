// Clips as a Wav2Vec2 batch, shared by the audio tasks. LibTorch.
#ifndef LATHE_WORKER_TASKS_AUDIO_BATCH_H_
#define LATHE_WORKER_TASKS_AUDIO_BATCH_H_

#include <torch/torch.h>

#include <vector>

#include "worker/models/model.h"

namespace lathe {

// The sampling rate of every Lathe speech model (its feature extractor's,
// written to preprocessor_config.json), and the longest clip read.
inline constexpr int kSpeechSamplingRate = 16000;
inline constexpr double kMaxClipSeconds = 30;

// `clips` padded with zeros to the longest as input_values [B, samples],
// with their attention mask, on `device`.
ModelInputs AudioBatch(const std::vector<const std::vector<float>*>& clips,
                       const torch::Device& device);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_AUDIO_BATCH_H_
