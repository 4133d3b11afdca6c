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

// One clip of an audio dataset: its path within the dataset, its label
// (audio-classification) or transcript (speech-recognition), and its
// samples, read and normalised.
struct AudioExample {
  std::string audio;
  std::string label;
  std::string text;
  std::vector<float> samples;
};

struct AudioReadOptions {
  AudioOptions audio;
  // The column of a metadata.jsonl row naming the clip, and its label or
  // transcript column (one of the two is read).
  std::string audio_column = "audio";
  std::string label_column;
  std::string text_column;
  // Prediction input: rows and files without a label are accepted.
  bool labels_optional = false;
};

// Writes `dir`/preprocessor_config.json for Wav2Vec2FeatureExtractor: one
// feature (raw samples) at `sampling_rate`, zero-mean unit-variance
// normalisation, zero padding with an attention mask.
absl::Status WriteAudioFeatureExtractorConfig(const std::string& dir,
                                              int sampling_rate);

// An audio dataset folder: a metadata.jsonl at its root whose rows name
// their clips by paths within the folder ({"audio": "clips/a.wav",
// "label": "yes"} or {"audio": ..., "text": ...}), or else (labels only)
// a folder per class of .wav/.flac/.ogg files, by path order. A clip path
// that leaves the folder, a missing or unreadable clip, a row without its
// label or text, or a clip longer than the limit is INVALID_ARGUMENT
// starting with "NAME:LINE: " or "NAME/PATH: ".
absl::StatusOr<std::vector<AudioExample>> ReadAudioExamples(
    const std::string& dir, const std::string& display_name,
    const AudioReadOptions& options);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_AUDIO_DATA_H_
