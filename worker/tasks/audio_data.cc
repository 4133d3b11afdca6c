#include "worker/tasks/audio_data.h"

#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

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

namespace {

namespace fs = std::filesystem;

bool IsAudioFile(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext == ".wav" || ext == ".flac" || ext == ".ogg";
}

// `rel` as a path inside `dir`, or empty when it would leave it.
std::string Inside(const std::string& dir, const std::string& rel) {
  if (rel.empty() || rel.front() == '/') return "";
  const fs::path p = fs::path(rel).lexically_normal();
  if (p.empty() || *p.begin() == "..") return "";
  return (fs::path(dir) / p).string();
}

}  // namespace

absl::StatusOr<std::vector<AudioExample>> ReadAudioExamples(
    const std::string& dir, const std::string& display_name,
    const AudioReadOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return Invalid(display_name,
                   "an audio dataset is a folder (class folders of clips, or "
                   "metadata.jsonl naming its clips)");
  }
  std::vector<AudioExample> rows;
  auto read = [&](AudioExample* ex, const std::string& file,
                  const std::string& name) -> absl::Status {
    auto samples = ReadAudio(file, name, options.audio);
    if (!samples.ok()) return samples.status();
    ex->samples = *std::move(samples);
    NormalizeAudio(&ex->samples);
    return absl::OkStatus();
  };
  const std::string metadata = dir + "/metadata.jsonl";
  if (fs::is_regular_file(metadata, ec)) {
    const std::string meta_name = display_name + "/metadata.jsonl";
    std::ifstream in(metadata);
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string at = absl::StrCat(meta_name, ":", line_no, ": ");
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object()) {
        return absl::InvalidArgumentError(at + "not a JSON object");
      }
      AudioExample ex;
      if (!j.contains(options.audio_column) ||
          !j[options.audio_column].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            at, "\"", options.audio_column, "\" (the clip's path) is missing"));
      }
      ex.audio = j[options.audio_column].get<std::string>();
      const std::string file = Inside(dir, ex.audio);
      if (file.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, "\"", ex.audio.substr(0, 200),
                         "\" is not a path inside the dataset folder"));
      }
      for (const auto& [column, out] :
           {std::pair<const std::string&, std::string*>(options.label_column,
                                                        &ex.label),
            std::pair<const std::string&, std::string*>(options.text_column,
                                                        &ex.text)}) {
        if (column.empty()) continue;
        if (j.contains(column) && j[column].is_string()) {
          *out = j[column].get<std::string>();
        } else if (j.contains(column) && j[column].is_number_integer()) {
          *out = std::to_string(j[column].get<int64_t>());
        } else if (!options.labels_optional) {
          return absl::InvalidArgumentError(
              absl::StrCat(at, "\"", column, "\" is missing or not a string"));
        }
      }
      RETURN_IF_ERROR(
          read(&ex, file, absl::StrCat(display_name, "/", ex.audio)));
      rows.push_back(std::move(ex));
    }
    if (rows.empty()) return Invalid(meta_name, "holds no rows");
    return rows;
  }
  if (options.label_column.empty() && !options.labels_optional) {
    return Invalid(display_name,
                   "no metadata.jsonl naming the clips and their transcripts");
  }
  // Class folders (or, for prediction, loose clips).
  std::vector<std::pair<std::string, std::string>> files;  // rel, label
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::path entry = it->path();
    if (it->is_directory(ec)) {
      const std::string label = entry.filename().string();
      for (fs::directory_iterator f(entry, ec), fend; !ec && f != fend;
           f.increment(ec)) {
        if (f->is_regular_file(ec) && IsAudioFile(f->path())) {
          files.emplace_back(label + "/" + f->path().filename().string(),
                             label);
        }
      }
    } else if (it->is_regular_file(ec) && IsAudioFile(entry)) {
      if (!options.labels_optional) {
        return Invalid(
            absl::StrCat(display_name, "/", entry.filename().string()),
            "a clip outside a class folder has no label (put each clip in a "
            "folder named after its class)");
      }
      files.emplace_back(entry.filename().string(), "");
    }
  }
  if (ec)
    return Invalid(display_name, absl::StrCat("cannot list: ", ec.message()));
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    return Invalid(display_name,
                   "no .wav/.flac/.ogg clips in class folders and no "
                   "metadata.jsonl");
  }
  for (const auto& [rel, label] : files) {
    AudioExample ex;
    ex.audio = rel;
    ex.label = label;
    RETURN_IF_ERROR(read(&ex, (fs::path(dir) / rel).string(),
                         absl::StrCat(display_name, "/", rel)));
    rows.push_back(std::move(ex));
  }
  return rows;
}

absl::Status WriteAudioFeatureExtractorConfig(const std::string& dir,
                                              int sampling_rate) {
  const nlohmann::json config = {
      {"feature_extractor_type", "Wav2Vec2FeatureExtractor"},
      {"feature_size", 1},
      {"sampling_rate", sampling_rate},
      {"padding_side", "right"},
      {"padding_value", 0.0},
      {"do_normalize", true},
      {"return_attention_mask", true}};
  return WriteFileAtomic(dir + "/preprocessor_config.json",
                         config.dump(2) + "\n");
}

}  // namespace lathe
