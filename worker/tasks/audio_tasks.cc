#include "worker/tasks/audio_tasks.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lathe {

absl::Status CheckSpeechModel(const ModelConfig* model,
                              const std::string& task) {
  if (model == nullptr || model->architecture == Architecture::kWav2Vec2) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      task, " needs a speech model (wav2vec2), not ", model->model_type));
}

AudioReadOptions SpeechReadOptions(const std::string& column,
                                   const std::string& default_column, bool text,
                                   bool optional) {
  AudioReadOptions o;
  o.audio.sampling_rate = kSpeechSamplingRate;
  o.audio.max_seconds = kMaxClipSeconds;
  (text ? o.text_column : o.label_column) =
      column.empty() ? default_column : column;
  o.labels_optional = optional;
  return o;
}

absl::Status ReadAudioSplits(const TaskData& data, const TrainParams* params,
                             const AudioReadOptions& options,
                             std::vector<AudioExample>* train,
                             std::vector<AudioExample>* validation) {
  ASSIGN_OR_RETURN(
      *train, ReadAudioExamples(data.train_path, data.train_name, options));
  validation->clear();
  if (!data.validation_path.empty()) {
    ASSIGN_OR_RETURN(
        *validation,
        ReadAudioExamples(data.validation_path, data.validation_name, options));
  } else if (params != nullptr && params->validation_split > 0) {
    auto [kept, held] =
        HoldOut(train->size(), params->validation_split, params->seed);
    std::vector<AudioExample> kept_rows;
    for (size_t i : kept) kept_rows.push_back(std::move((*train)[i]));
    for (size_t i : held) validation->push_back(std::move((*train)[i]));
    *train = std::move(kept_rows);
  }
  return absl::OkStatus();
}

ModelInputs AudioBatch(const std::vector<const std::vector<float>*>& clips,
                       const torch::Device& device) {
  size_t longest = 1;
  for (const auto* c : clips) longest = std::max(longest, c->size());
  const int64_t b = static_cast<int64_t>(clips.size());
  torch::Tensor values =
      torch::zeros({b, static_cast<int64_t>(longest)}, torch::kFloat32);
  torch::Tensor mask =
      torch::zeros({b, static_cast<int64_t>(longest)}, torch::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const std::vector<float>& c = *clips[static_cast<size_t>(i)];
    const int64_t n = static_cast<int64_t>(c.size());
    if (n == 0) continue;
    values[i].narrow(0, 0, n).copy_(
        torch::from_blob(const_cast<float*>(c.data()), {n}, torch::kFloat32));
    mask[i].narrow(0, 0, n).fill_(1);
  }
  ModelInputs in;
  in.input_values = values.to(device);
  in.attention_mask = mask.to(device);
  return in;
}

}  // namespace lathe
