// audio-classification: a clip to one of the labels seen in training, with
// Wav2Vec2ForSequenceClassification. Clips are read, resampled to 16 kHz
// and normalised once in Prepare (audio_data.h); batches pad them with
// zeros to the longest clip, with an attention mask.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "worker/tasks/audio_data.h"
#include "worker/tasks/audio_tasks.h"
#include "worker/tasks/classification_metrics.h"
#include "worker/tasks/task_factories.h"

namespace lathe {
namespace tasks {
namespace {

AudioReadOptions ReadOptionsFor(const TrainParams* params, bool optional) {
  return SpeechReadOptions(params != nullptr ? params->label_column : "",
                           "label", /*text=*/false, optional);
}

// Sorted distinct labels, numerically when all are integers.
std::vector<std::string> Labels(const std::vector<AudioExample>& rows) {
  std::set<std::string> distinct;
  for (const AudioExample& r : rows) distinct.insert(r.label);
  std::vector<std::string> labels(distinct.begin(), distinct.end());
  int64_t x = 0;
  const bool numeric = std::all_of(
      labels.begin(), labels.end(),
      [&](const std::string& l) { return absl::SimpleAtoi(l, &x); });
  if (numeric) {
    std::sort(labels.begin(), labels.end(),
              [](const std::string& a, const std::string& b) {
                int64_t p = 0, q = 0;
                (void)absl::SimpleAtoi(a, &p);
                (void)absl::SimpleAtoi(b, &q);
                return p < q;
              });
  }
  return labels;
}

class AudioClassificationTask : public Task {
 public:
  std::string name() const override { return "audio-classification"; }
  HeadKind head() const override { return HeadKind::kSequenceClassification; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    const TrainParams* params = context.params;
    RETURN_IF_ERROR(CheckSpeechModel(context.model_config, name()));
    std::vector<AudioExample> train, val;
    RETURN_IF_ERROR(ReadAudioSplits(data, params, ReadOptionsFor(params, false),
                                    &train, &val));
    if (data.validation_path.empty()) {
      // Held out of the training folder: every label is the job's.
      std::vector<AudioExample> all;
      for (const auto* rows : {&train, &val}) {
        for (const AudioExample& ex : *rows)
          all.push_back({"", ex.label, "", {}});
      }
      labels_ = Labels(all);
    } else {
      labels_ = Labels(train);
      const std::set<std::string> known(labels_.begin(), labels_.end());
      std::set<std::string> unknown;
      for (const AudioExample& ex : val) {
        if (!known.count(ex.label)) unknown.insert(ex.label);
      }
      if (!unknown.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            data.validation_name, ": labels not in the training data: ",
            absl::StrJoin(unknown, ", ")));
      }
    }
    if (context.log) {
      double seconds = 0;
      for (const AudioExample& ex : train) seconds += ex.samples.size();
      context.log(absl::StrCat(
          "data: ", train.size(), " training clips (",
          static_cast<int64_t>(seconds / kSpeechSamplingRate), " s), ",
          val.size(), " validation clips at ", kSpeechSamplingRate,
          " Hz, labels [", absl::StrJoin(labels_, ", "), "]"));
    }
    train_ = Featurize(std::move(train));
    val_ = Featurize(std::move(val));
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* config) const override {
    config->id2label = labels_;
  }

  int64_t train_size() const override { return train_.clips.size(); }
  int64_t validation_size() const override { return val_.clips.size(); }
  nlohmann::json Signature() const override {
    return {{"labels", labels_}, {"sampling_rate", kSpeechSamplingRate}};
  }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    return Collate(train_, indices, device);
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    return torch::nn::functional::cross_entropy(output,
                                                batch.targets.at("labels"));
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    const size_t n = val_.clips.size();
    const int64_t classes = static_cast<int64_t>(labels_.size());
    std::vector<int64_t> predicted;
    double loss_sum = 0;
    std::vector<size_t> indices;
    try {
      for (size_t begin = 0; begin < n;
           begin += static_cast<size_t>(batch_size)) {
        const size_t end = std::min(n, begin + static_cast<size_t>(batch_size));
        indices.clear();
        for (size_t i = begin; i < end; ++i) indices.push_back(i);
        TaskBatch b = Collate(val_, indices, device);
        torch::Tensor logits = model.forward(b.inputs);
        loss_sum +=
            torch::nn::functional::cross_entropy(
                logits, b.targets.at("labels"),
                torch::nn::functional::CrossEntropyFuncOptions().reduction(
                    torch::kSum))
                .item<double>();
        torch::Tensor pred = logits.argmax(-1).to(torch::kCPU).contiguous();
        const int64_t* p = pred.data_ptr<int64_t>();
        predicted.insert(predicted.end(), p, p + pred.numel());
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("evaluating: ", e.what_without_backtrace()));
    }
    const ClassificationMetrics m =
        ComputeClassificationMetrics(predicted, val_.labels, classes);
    return nlohmann::json{
        {"accuracy", m.accuracy},
        {"f1", m.f1},
        {"confusion_matrix", m.confusion},
        {"loss", n == 0 ? 0.0 : loss_sum / static_cast<double>(n)}};
  }

  std::string default_metric() const override { return "accuracy"; }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    ASSIGN_OR_RETURN(std::vector<AudioExample> rows,
                     ReadAudioExamples(path, display_name,
                                       ReadOptionsFor(context.params, true)));
    const std::vector<std::string>& labels = model.config().id2label;
    std::vector<nlohmann::json> out;
    out.reserve(rows.size());
    try {
      for (const AudioExample& ex : rows) {
        torch::Tensor probs =
            torch::softmax(model.forward(AudioBatch({&ex.samples}, device)),
                           -1)[0]
                .to(torch::kCPU, torch::kFloat32)
                .contiguous();
        out.push_back(DescribePrediction(
            "audio", ex.audio, probs.data_ptr<float>(), probs.numel(), labels));
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("predicting: ", e.what_without_backtrace()));
    }
    return out;
  }

 private:
  struct Features {
    std::vector<std::vector<float>> clips;
    std::vector<int64_t> labels;
  };

  Features Featurize(std::vector<AudioExample> rows) const {
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < labels_.size(); ++i) {
      index[labels_[i]] = static_cast<int64_t>(i);
    }
    Features f;
    for (AudioExample& ex : rows) {
      f.labels.push_back(index.at(ex.label));
      f.clips.push_back(std::move(ex.samples));
    }
    return f;
  }

  TaskBatch Collate(const Features& f, const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const std::vector<float>*> clips;
    std::vector<int64_t> labels;
    for (size_t i : indices) {
      clips.push_back(&f.clips[i]);
      labels.push_back(f.labels[i]);
    }
    TaskBatch b;
    b.inputs = AudioBatch(clips, device);
    b.targets["labels"] = torch::tensor(labels, torch::kLong).to(device);
    b.examples = static_cast<int64_t>(indices.size());
    return b;
  }

  std::vector<std::string> labels_;
  Features train_, val_;
};

}  // namespace

std::unique_ptr<Task> NewAudioClassificationTask() {
  return std::make_unique<AudioClassificationTask>();
}

}  // namespace tasks
}  // namespace lathe
