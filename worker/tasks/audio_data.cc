#include "worker/tasks/audio_data.h"

#include <sndfile.h>
#include <soxr.h>

#include <cmath>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lathe {
namespace {

absl::Status Invalid(const std::string& name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
}

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};

}  // namespace

absl::StatusOr<std::vector<float>> Resample(const std::vector<float>& samples,
                                            int from_rate, int to_rate) {
  if (from_rate <= 0 || to_rate <= 0) {
    return absl::InvalidArgumentError("sampling rates must be positive");
  }
  if (from_rate == to_rate || samples.empty()) return samples;
  const double ratio = static_cast<double>(to_rate) / from_rate;
  std::vector<float> out(static_cast<size_t>(std::ceil(
                             static_cast<double>(samples.size()) * ratio)) +
                         16);
  size_t done = 0;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  soxr_error_t error = soxr_oneshot(from_rate, to_rate, 1, samples.data(),
                                    samples.size(), nullptr, out.data(),
                                    out.size(), &done, &io, &quality, nullptr);
  if (error != nullptr) {
    return absl::InternalError(absl::StrCat("resampling failed: ", error));
  }
  out.resize(done);
  return out;
}

absl::StatusOr<std::vector<float>> ReadAudio(const std::string& path,
                                             const std::string& name,
                                             const AudioOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Invalid(name, "no such audio file");
  }
  SF_INFO info{};
  std::unique_ptr<SNDFILE, SndfileCloser> file(
      sf_open(path.c_str(), SFM_READ, &info));
  if (file == nullptr) {
    return Invalid(name,
                   absl::StrCat("not audio this worker can read (",
                                sf_strerror(nullptr), "); use WAV or FLAC"));
  }
  if (info.channels < 1 || info.channels > kMaxAudioChannels) {
    return Invalid(name, absl::StrCat(info.channels, " channels; at most ",
                                      kMaxAudioChannels));
  }
  if (info.samplerate <= 0 || info.frames <= 0) {
    return Invalid(name, "holds no audio");
  }
  const double seconds = static_cast<double>(info.frames) / info.samplerate;
  if (seconds > options.max_seconds) {
    return Invalid(name, absl::StrFormat("%.1f s of audio; the limit is %g s "
                                         "(max_audio_seconds)",
                                         seconds, options.max_seconds));
  }
  std::vector<float> interleaved(static_cast<size_t>(info.frames) *
                                 static_cast<size_t>(info.channels));
  const sf_count_t read =
      sf_readf_float(file.get(), interleaved.data(), info.frames);
  if (read <= 0) return Invalid(name, "the audio data cannot be read");
  std::vector<float> mono(static_cast<size_t>(read));
  for (sf_count_t i = 0; i < read; ++i) {
    float sum = 0;
    for (int c = 0; c < info.channels; ++c) {
      sum += interleaved[static_cast<size_t>(i * info.channels + c)];
    }
    mono[static_cast<size_t>(i)] = sum / static_cast<float>(info.channels);
  }
  auto resampled = Resample(mono, info.samplerate, options.sampling_rate);
  if (!resampled.ok()) {
    return Invalid(name, std::string(resampled.status().message()));
  }
  return resampled;
}

void NormalizeAudio(std::vector<float>* samples) {
  if (samples->empty()) return;
  double mean = 0;
  for (float x : *samples) mean += x;
  mean /= static_cast<double>(samples->size());
  double var = 0;
  for (float x : *samples) var += (x - mean) * (x - mean);
  var /= static_cast<double>(samples->size());
  const double scale = 1.0 / std::sqrt(var + 1e-7);
  for (float& x : *samples) x = static_cast<float>((x - mean) * scale);
}

}  // namespace lathe
