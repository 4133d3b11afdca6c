// speech-recognition: a clip to its transcript with Wav2Vec2ForCTC. The
// alphabet is the model's (its vocab.json) or, for a model without one,
// the characters of the training transcripts; transcripts are normalised
// to it (ctc_text_data.h). The loss is CTC on float32 log-probabilities
// with the blank at "<pad>"; predictions are greedy CTC decoding; metrics
// are corpus-level word and character error rates.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/models/speech.h"
#include "worker/tasks/audio_data.h"
#include "worker/tasks/audio_tasks.h"
#include "worker/tasks/ctc_text_data.h"
#include "worker/tasks/speech_metrics.h"
#include "worker/tasks/task_factories.h"

namespace lathe {
namespace tasks {
namespace {

namespace F = torch::nn::functional;

AudioReadOptions ReadOptionsFor(const TrainParams* params, bool optional) {
  return SpeechReadOptions(params != nullptr ? params->text_column : "", "text",
                           /*text=*/true, optional);
}

// The best id of each real frame of each row.
std::vector<std::vector<int64_t>> BestIds(const torch::Tensor& logits,
                                          const torch::Tensor& frames) {
  torch::Tensor best = logits.argmax(-1).to(torch::kCPU).contiguous();
  torch::Tensor n = frames.to(torch::kCPU).contiguous();
  std::vector<std::vector<int64_t>> out;
  for (int64_t r = 0; r < best.size(0); ++r) {
    const int64_t* p = best[r].data_ptr<int64_t>();
    const int64_t len = std::min(best.size(1), n[r].item<int64_t>());
    out.emplace_back(p, p + len);
  }
  return out;
}

class SpeechRecognitionTask : public Task {
 public:
  std::string name() const override { return "speech-recognition"; }
  HeadKind head() const override { return HeadKind::kCtc; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    const TrainParams* params = context.params;
    if (context.model_config == nullptr) {
      return absl::InvalidArgumentError(
          "speech-recognition needs a speech model (wav2vec2)");
    }
    RETURN_IF_ERROR(CheckSpeechModel(context.model_config, name()));
    model_ = *context.model_config;
    std::vector<AudioExample> train, val;
    RETURN_IF_ERROR(ReadAudioSplits(data, params, ReadOptionsFor(params, false),
                                    &train, &val));
    if (!model_.speech.vocab.empty()) {
      ASSIGN_OR_RETURN(alphabet_, CtcAlphabet::FromTokens(model_.speech.vocab));
    } else {
      std::vector<std::string> texts;
      for (const AudioExample& ex : train) texts.push_back(ex.text);
      alphabet_ = CtcAlphabet::FromTranscripts(texts);
    }
    int64_t dropped = 0;
    train_ = Featurize(std::move(train), &dropped);
    val_ = Featurize(std::move(val), &dropped);
    if (context.log) {
      double seconds = 0;
      for (const auto& c : train_.clips) seconds += c.size();
      std::string alphabet;
      for (const std::string& t : alphabet_.tokens()) {
        if (t.size() < 3 || t.front() != '<') alphabet += t;
      }
      context.log(absl::StrCat(
          "data: ", train_.clips.size(), " training clips (",
          static_cast<int64_t>(seconds / kSpeechSamplingRate), " s), ",
          val_.clips.size(), " validation clips at ", kSpeechSamplingRate,
          " Hz; alphabet of ", alphabet_.size(), " tokens (",
          model_.speech.vocab.empty() ? "from the transcripts" : "the model's",
          "): ", alphabet));
      if (dropped > 0) {
        context.log(absl::StrCat("warning: ", dropped,
                                 " transcript characters are not in the "
                                 "alphabet and were left out"));
      }
    }
    for (size_t i = 0; i < train_.clips.size(); ++i) {
      if (Wav2Vec2FrameCount(model_,
                             static_cast<int64_t>(train_.clips[i].size())) <
          static_cast<int64_t>(train_.labels[i].size())) {
        ++too_short_;
      }
    }
    if (too_short_ > 0 && context.log) {
      context.log(absl::StrCat(
          "warning: ", too_short_,
          " training clips are shorter in frames than their transcripts; "
          "CTC cannot align them",
          model_.speech.ctc_zero_infinity ? " (their loss counts as 0)" : ""));
    }
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* config) const override {
    config->speech.vocab = alphabet_.tokens();
    config->vocab_size = alphabet_.size();
    config->pad_token_id = alphabet_.blank();
    config->id2label.clear();
  }

  int64_t train_size() const override { return train_.clips.size(); }
  int64_t validation_size() const override { return val_.clips.size(); }
  nlohmann::json Signature() const override {
    return {{"alphabet", alphabet_.tokens()},
            {"sampling_rate", kSpeechSamplingRate}};
  }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    return Collate(train_, indices, device);
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    using Reduction = F::CTCLossFuncOptions::reduction_t;
    const Reduction reduction = model_.speech.ctc_loss_reduction == "sum"
                                    ? Reduction(torch::kSum)
                                    : Reduction(torch::kMean);
    return CtcLoss(output, batch, reduction);
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    const size_t n = val_.clips.size();
    SpeechErrorRates rates;
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
        // Each row's loss as training means it (per target character for
        // "mean"), summed here and averaged over the rows below.
        torch::Tensor rows = CtcLoss(logits, b, torch::kNone);
        if (model_.speech.ctc_loss_reduction != "sum") {
          rows = rows /
                 b.targets.at("label_lengths").to(rows.dtype()).clamp_min(1.0);
        }
        loss_sum += rows.sum().item<double>();
        const auto best = BestIds(logits, b.targets.at("frames"));
        for (size_t k = 0; k < indices.size(); ++k) {
          rates.Add(val_.references[indices[k]], alphabet_.Decode(best[k]));
        }
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("evaluating: ", e.what_without_backtrace()));
    }
    return nlohmann::json{
        {"wer", rates.wer()},
        {"cer", rates.cer()},
        {"words", rates.words()},
        {"loss", n == 0 ? 0.0 : loss_sum / static_cast<double>(n)}};
  }

  std::string default_metric() const override { return "wer"; }
  bool greater_is_better(const std::string& metric) const override {
    return metric != "wer" && metric != "cer" && metric != "loss";
  }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    const ModelConfig& config = model.config();
    ASSIGN_OR_RETURN(CtcAlphabet alphabet,
                     CtcAlphabet::FromTokens(config.speech.vocab));
    if (alphabet.size() != config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the model's vocab.json has ", alphabet.size(),
          " tokens but its config.json a vocab_size of ", config.vocab_size));
    }
    ASSIGN_OR_RETURN(std::vector<AudioExample> rows,
                     ReadAudioExamples(path, display_name,
                                       ReadOptionsFor(context.params, true)));
    std::vector<nlohmann::json> out;
    out.reserve(rows.size());
    try {
      for (const AudioExample& ex : rows) {
        ModelInputs in = AudioBatch({&ex.samples}, device);
        torch::Tensor logits = model.forward(in);
        const auto best = BestIds(
            logits, Wav2Vec2FrameCounts(config, in.attention_mask.sum(-1)));
        out.push_back(
            {{"audio", ex.audio}, {"text", alphabet.Decode(best[0])}});
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
    std::vector<std::vector<int64_t>> labels;
    std::vector<std::string> references;  // Normalised transcripts.
  };

  Features Featurize(std::vector<AudioExample> rows, int64_t* dropped) const {
    Features f;
    for (AudioExample& ex : rows) {
      f.labels.push_back(alphabet_.Encode(ex.text, dropped));
      f.references.push_back(alphabet_.Normalize(ex.text));
      f.clips.push_back(std::move(ex.samples));
    }
    return f;
  }

  TaskBatch Collate(const Features& f, const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const std::vector<float>*> clips;
    std::vector<int64_t> flat, lengths;
    for (size_t i : indices) {
      clips.push_back(&f.clips[i]);
      flat.insert(flat.end(), f.labels[i].begin(), f.labels[i].end());
      lengths.push_back(static_cast<int64_t>(f.labels[i].size()));
    }
    TaskBatch b;
    b.inputs = AudioBatch(clips, device);
    b.targets["labels"] = torch::tensor(flat, torch::kLong).to(device);
    b.targets["label_lengths"] = torch::tensor(lengths, torch::kLong);
    b.targets["frames"] =
        Wav2Vec2FrameCounts(model_, b.inputs.attention_mask.sum(-1).cpu());
    b.examples = static_cast<int64_t>(indices.size());
    return b;
  }

  // CTC on float32 log-probabilities [T, B, V], as Wav2Vec2ForCTC computes
  // it: blank at the alphabet's "<pad>", zero_infinity from the config.
  torch::Tensor CtcLoss(
      const torch::Tensor& logits, const TaskBatch& batch,
      torch::nn::functional::CTCLossFuncOptions::reduction_t reduction) const {
    torch::Tensor log_probs =
        torch::log_softmax(logits.to(torch::kFloat32), -1).transpose(0, 1);
    return F::ctc_loss(log_probs, batch.targets.at("labels"),
                       batch.targets.at("frames").clamp_max(logits.size(1)),
                       batch.targets.at("label_lengths"),
                       F::CTCLossFuncOptions()
                           .blank(alphabet_.blank())
                           .reduction(reduction)
                           .zero_infinity(model_.speech.ctc_zero_infinity));
  }

  ModelConfig model_;
  CtcAlphabet alphabet_;
  Features train_, val_;
  int64_t too_short_ = 0;
};

}  // namespace

std::unique_ptr<Task> NewSpeechRecognitionTask() {
  return std::make_unique<SpeechRecognitionTask>();
}

}  // namespace tasks
}  // namespace lathe
