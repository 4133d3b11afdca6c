// text-regression: a text (and optional pair) to one real number; Hugging
// Face's XForSequenceClassification with num_labels 1 and problem_type
// "regression", trained with mean squared error.
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/data/dataset.h"
#include "worker/tasks/regression_metrics.h"
#include "worker/tasks/task_factories.h"

namespace lathe {
namespace tasks {
namespace {

ReadOptions RegressionReadOptions(const TrainParams* params,
                                  bool labels_optional) {
  ReadOptions o;
  o.label_kind = LabelKind::kNumber;
  o.labels_optional = labels_optional;
  if (params != nullptr) o.columns = TextColumnsFromParams(*params);
  return o;
}

class TextRegressionTask : public Task {
 public:
  std::string name() const override { return "text-regression"; }
  HeadKind head() const override { return HeadKind::kSequenceClassification; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "text-regression needs a model with a tokenizer");
    }
    tokenizer_ = context.tokenizer;
    pad_id_ = PadId(*tokenizer_);
    const ReadOptions options = RegressionReadOptions(context.params, false);
    ASSIGN_OR_RETURN(std::vector<Example> train,
                     ReadExamples(data.train_path, data.train_name, options));
    std::vector<Example> val;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(val, ReadExamples(data.validation_path,
                                         data.validation_name, options));
    } else if (context.params->validation_split > 0) {
      auto [kept, held] = HoldOut(
          train.size(), context.params->validation_split, context.params->seed);
      std::vector<Example> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train[i]));
      for (size_t i : held) val.push_back(std::move(train[i]));
      train = std::move(kept_rows);
    }
    if (context.log) {
      double lo = train.empty() ? 0 : train[0].value;
      double hi = lo;
      for (const Example& ex : train) {
        lo = std::min(lo, ex.value);
        hi = std::max(hi, ex.value);
      }
      context.log(absl::StrCat("data: ", train.size(), " training rows, ",
                               val.size(), " validation rows, targets in [", lo,
                               ", ", hi, "]"));
    }
    train_ = Featurize(train, context.max_length);
    val_ = Featurize(val, context.max_length);
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* config) const override {
    config->id2label = {"LABEL_0"};
    config->original["problem_type"] = "regression";
  }

  int64_t train_size() const override { return train_.encodings.size(); }
  std::vector<int64_t> train_lengths() const override {
    std::vector<int64_t> out;
    out.reserve(train_.encodings.size());
    for (const TokenizedText& t : train_.encodings) out.push_back(t.ids.size());
    return out;
  }
  int64_t validation_size() const override { return val_.encodings.size(); }
  nlohmann::json Signature() const override {
    return {{"problem_type", "regression"}};
  }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    return Collate(train_, indices, device);
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    // The head's [B, 1] output against [B] targets, in float32 whatever the
    // compute type.
    return torch::mse_loss(output.reshape({-1}).to(torch::kFloat),
                           batch.targets.at("labels"));
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    std::vector<double> predicted;
    predicted.reserve(val_.encodings.size());
    const size_t step = static_cast<size_t>(std::max<int64_t>(1, batch_size));
    std::vector<size_t> indices;
    try {
      for (size_t begin = 0; begin < val_.encodings.size(); begin += step) {
        const size_t end = std::min(val_.encodings.size(), begin + step);
        indices.clear();
        for (size_t i = begin; i < end; ++i) indices.push_back(i);
        TaskBatch b = Collate(val_, indices, device);
        DropTokenTypes(model, &b.inputs);
        torch::Tensor out = model.forward(b.inputs)
                                .reshape({-1})
                                .to(torch::kCPU, torch::kDouble)
                                .contiguous();
        const double* p = out.data_ptr<double>();
        predicted.insert(predicted.end(), p, p + out.numel());
      }
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("evaluation failed: ", e.what()));
    }
    const RegressionMetrics m =
        ComputeRegressionMetrics(predicted, val_.values);
    // The loss is the mean squared error the training minimises.
    return nlohmann::json{{"mse", m.mse},
                          {"mae", m.mae},
                          {"pearson", m.pearson},
                          {"spearman", m.spearman},
                          {"loss", m.mse}};
  }

  std::string default_metric() const override { return "mse"; }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError("the model has no tokenizer");
    }
    if (model.config().num_labels() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model has ", model.config().num_labels(),
                       " outputs; a text-regression model has one"));
    }
    ASSIGN_OR_RETURN(std::vector<Example> rows,
                     ReadExamples(path, display_name,
                                  RegressionReadOptions(context.params, true)));
    std::vector<nlohmann::json> out;
    out.reserve(rows.size());
    const int64_t pad_id = PadId(*context.tokenizer);
    try {
      for (const Example& ex : rows) {
        std::optional<std::string_view> pair;
        if (ex.text_pair.has_value()) pair = *ex.text_pair;
        const TokenizedText t = context.tokenizer->EncodeTruncated(
            ex.text, pair, context.max_length);
        ModelInputs in = PadTokenBatch({&t}, pad_id, device, nullptr);
        DropTokenTypes(model, &in);
        const double value = model.forward(in)
                                 .reshape({-1})[0]
                                 .to(torch::kCPU, torch::kDouble)
                                 .item<double>();
        out.push_back({{"value", value}});
      }
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("prediction failed: ", e.what()));
    }
    return out;
  }

 private:
  struct Features {
    std::vector<TokenizedText> encodings;
    std::vector<double> values;
  };

  // Token types reach BERT only, as in training (see the trainer).
  static void DropTokenTypes(const TaskModelImpl& model, ModelInputs* in) {
    if (model.config().architecture != Architecture::kBert) {
      in->token_type_ids = torch::Tensor();
    }
  }

  Features Featurize(const std::vector<Example>& rows,
                     int64_t max_length) const {
    Features f;
    f.encodings.reserve(rows.size());
    f.values.reserve(rows.size());
    for (const Example& ex : rows) {
      std::optional<std::string_view> pair;
      if (ex.text_pair.has_value()) pair = *ex.text_pair;
      f.encodings.push_back(
          tokenizer_->EncodeTruncated(ex.text, pair, max_length));
      f.values.push_back(ex.value);
    }
    return f;
  }

  TaskBatch Collate(const Features& f, const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const TokenizedText*> rows;
    std::vector<float> values;
    rows.reserve(indices.size());
    values.reserve(indices.size());
    for (size_t i : indices) {
      rows.push_back(&f.encodings[i]);
      values.push_back(static_cast<float>(f.values[i]));
    }
    TaskBatch b;
    b.inputs = PadTokenBatch(rows, pad_id_, device, &b.tokens);
    b.targets["labels"] = torch::tensor(values, torch::kFloat).to(device);
    b.examples = static_cast<int64_t>(indices.size());
    return b;
  }

  const Tokenizer* tokenizer_ = nullptr;
  int64_t pad_id_ = 0;
  Features train_, val_;
};

}  // namespace

std::unique_ptr<Task> NewTextRegressionTask() {
  return std::make_unique<TextRegressionTask>();
}

}  // namespace tasks
}  // namespace lathe
