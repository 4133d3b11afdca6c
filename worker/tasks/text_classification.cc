// text-classification: a text (and optional pair) to one of the labels seen
// in training; Hugging Face's XForSequenceClassification heads.
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "worker/data/dataset.h"
#include "worker/tasks/classification_metrics.h"
#include "worker/tasks/task_factories.h"

namespace lathe {
namespace tasks {
namespace {

class TextClassificationTask : public Task {
 public:
  std::string name() const override { return "text-classification"; }
  HeadKind head() const override { return HeadKind::kSequenceClassification; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "text-classification needs a model with a tokenizer");
    }
    tokenizer_ = context.tokenizer;
    pad_id_ = PadId(*tokenizer_);
    ASSIGN_OR_RETURN(std::vector<Example> train,
                     ReadExamples(data.train_path, data.train_name));
    ASSIGN_OR_RETURN(labels_, LabelSet(train, data.train_name));
    std::vector<Example> val;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(
          val, ReadExamples(data.validation_path, data.validation_name));
      RETURN_IF_ERROR(CheckLabels(val, labels_, data.validation_name));
    } else if (context.params->validation_split > 0) {
      auto [kept, held] = HoldOut(
          train.size(), context.params->validation_split, context.params->seed);
      std::vector<Example> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train[i]));
      for (size_t i : held) val.push_back(std::move(train[i]));
      train = std::move(kept_rows);
    }
    if (labels_.size() < 2 && context.log) {
      context.log(
          absl::StrCat("warning: the training data has a single label \"",
                       labels_[0], "\""));
    }
    if (context.log) {
      context.log(absl::StrCat("data: ", train.size(), " training rows, ",
                               val.size(), " validation rows, labels [",
                               absl::StrJoin(labels_, ", "), "]"));
    }
    train_ = Featurize(train, context.max_length);
    val_ = Featurize(val, context.max_length);
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* config) const override {
    config->id2label = labels_;
  }

  int64_t train_size() const override { return train_.encodings.size(); }
  int64_t validation_size() const override { return val_.encodings.size(); }
  nlohmann::json Signature() const override { return {{"labels", labels_}}; }

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
    std::vector<int64_t> predicted;
    predicted.reserve(val_.encodings.size());
    double loss_sum = 0;
    std::vector<size_t> indices;
    for (size_t begin = 0; begin < val_.encodings.size(); begin += batch_size) {
      const size_t end = std::min(val_.encodings.size(),
                                  begin + static_cast<size_t>(batch_size));
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
    const ClassificationMetrics m = ComputeClassificationMetrics(
        predicted, val_.labels, static_cast<int64_t>(labels_.size()));
    return nlohmann::json{
        {"accuracy", m.accuracy},
        {"f1", m.f1},
        {"loss",
         val_.encodings.empty() ? 0.0 : loss_sum / val_.encodings.size()}};
  }

  std::string default_metric() const override { return "accuracy"; }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError("the model has no tokenizer");
    }
    const std::vector<std::string>& labels = model.config().id2label;
    ASSIGN_OR_RETURN(
        std::vector<Example> rows,
        ReadExamples(path, display_name, /*labels_optional=*/true));
    std::vector<nlohmann::json> out;
    const int64_t pad_id = PadId(*context.tokenizer);
    for (const Example& ex : rows) {
      std::optional<std::string_view> pair;
      if (ex.text_pair.has_value()) pair = *ex.text_pair;
      const TokenizedText t =
          context.tokenizer->EncodeTruncated(ex.text, pair, context.max_length);
      ModelInputs in = PadTokenBatch({&t}, pad_id, device, nullptr);
      if (model.config().architecture != Architecture::kBert) {
        in.token_type_ids = torch::Tensor();
      }
      torch::Tensor probs =
          torch::softmax(model.forward(in), -1)[0].to(torch::kCPU).contiguous();
      const float* p = probs.data_ptr<float>();
      nlohmann::json by_label = nlohmann::json::object();
      int64_t best = 0;
      for (int64_t i = 0; i < probs.numel(); ++i) {
        const std::string name = i < static_cast<int64_t>(labels.size())
                                     ? labels[i]
                                     : absl::StrCat("LABEL_", i);
        by_label[name] = p[i];
        if (p[i] > p[best]) best = i;
      }
      out.push_back({{"label", best < static_cast<int64_t>(labels.size())
                                   ? labels[best]
                                   : absl::StrCat("LABEL_", best)},
                     {"probabilities", by_label}});
    }
    return out;
  }

 private:
  struct Features {
    std::vector<TokenizedText> encodings;
    std::vector<int64_t> labels;
  };

  Features Featurize(const std::vector<Example>& rows,
                     int64_t max_length) const {
    Features f;
    f.encodings.reserve(rows.size());
    for (const Example& ex : rows) {
      std::optional<std::string_view> pair;
      if (ex.text_pair.has_value()) pair = *ex.text_pair;
      f.encodings.push_back(
          tokenizer_->EncodeTruncated(ex.text, pair, max_length));
    }
    f.labels = LabelIndices(rows, labels_);
    return f;
  }

  TaskBatch Collate(const Features& f, const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const TokenizedText*> rows;
    std::vector<int64_t> labels;
    rows.reserve(indices.size());
    for (size_t i : indices) {
      rows.push_back(&f.encodings[i]);
      labels.push_back(f.labels[i]);
    }
    TaskBatch b;
    b.inputs = PadTokenBatch(rows, pad_id_, device, &b.tokens);
    b.targets["labels"] = torch::tensor(labels, torch::kLong).to(device);
    b.examples = static_cast<int64_t>(indices.size());
    return b;
  }

  const Tokenizer* tokenizer_ = nullptr;
  int64_t pad_id_ = 0;
  std::vector<std::string> labels_;
  Features train_, val_;
};

}  // namespace

std::unique_ptr<Task> NewTextClassificationTask() {
  return std::make_unique<TextClassificationTask>();
}

}  // namespace tasks
}  // namespace lathe
