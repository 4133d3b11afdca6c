// Audio for the speech tasks: files decoded with libsndfile (WAV, FLAC, Ogg
// and the other formats it reads), mixed down to one channel and resampled
// with libsoxr to the model's sampling rate, then normalised as a
// Wav2Vec2 feature extractor does. No LibTorch.
#ifndef LATHE_WORKER_TASKS_AUDIO_DATA_H_
#define LATHE_WORKER_TASKS_AUDIO_DATA_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lathe {

struct AudioOptions {
  // Samples per second of what ReadAudio returns (the model's
  // feature extractor's sampling_rate).
  int sampling_rate = 16000;
  // Longer files are refused with an error naming the file and the limit.
  double max_seconds = 30;
};

// Files with more channels than this are refused.
inline constexpr int kMaxAudioChannels = 16;

// Mono samples in [-1, 1] at options.sampling_rate: the channels averaged,
// resampled (libsoxr, high quality) when the file's rate differs.
// INVALID_ARGUMENT starting with `name` for a file that is missing, not
// audio libsndfile reads, empty, too long or of too many channels.
absl::StatusOr<std::vector<float>> ReadAudio(const std::string& path,
                                             const std::string& name,
                                             const AudioOptions& options);

// Resamples mono `samples` from `from_rate` to `to_rate` (libsoxr, high
// quality); the same samples when the rates are equal.
absl::StatusOr<std::vector<float>> Resample(const std::vector<float>& samples,
                                            int from_rate, int to_rate);

// Zero mean and unit variance, as Wav2Vec2FeatureExtractor's do_normalize:
// (x - mean) / sqrt(variance + 1e-7).
void NormalizeAudio(std::vector<float>* samples);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_AUDIO_DATA_H_
