// What the audio tasks (audio-classification, speech-recognition) share:
// reading their clips and splits, and clips as a Wav2Vec2 batch. LibTorch.
#ifndef LATHE_WORKER_TASKS_AUDIO_TASKS_H_
#define LATHE_WORKER_TASKS_AUDIO_TASKS_H_

#include <torch/torch.h>

#include <vector>

#include "absl/status/status.h"
#include "common/params.h"
#include "worker/models/model.h"
#include "worker/tasks/audio_data.h"
#include "worker/tasks/task.h"

namespace lathe {

// The sampling rate of every Lathe speech model (its feature extractor's,
// written to preprocessor_config.json), and the longest clip read.
inline constexpr int kSpeechSamplingRate = 16000;
inline constexpr double kMaxClipSeconds = 30;

// INVALID_ARGUMENT naming `task` unless `model` is a speech model (null:
// nothing to check).
absl::Status CheckSpeechModel(const ModelConfig* model,
                              const std::string& task);

// Clips at the models' rate and within the limit; `column` (or, when the
// job names none, `default_column`) is read as the label (`text` false) or
// the transcript; `optional` accepts rows without it (prediction input).
AudioReadOptions SpeechReadOptions(const std::string& column,
                                   const std::string& default_column, bool text,
                                   bool optional);

// The training clips, and the validation folder's clips or else
// params.validation_split of the training clips held out (seeded).
absl::Status ReadAudioSplits(const TaskData& data, const TrainParams* params,
                             const AudioReadOptions& options,
                             std::vector<AudioExample>* train,
                             std::vector<AudioExample>* validation);

// `clips` padded with zeros to the longest as input_values [B, samples],
// with their attention mask, on `device`.
ModelInputs AudioBatch(const std::vector<const std::vector<float>*>& clips,
                       const torch::Device& device);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_AUDIO_TASKS_H_
