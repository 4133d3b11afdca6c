// text-classification: a text (and optional pair) to one of the labels seen
// in training, or, when every row's label is a list, to any subset of them
// (multi-label); Hugging Face's XForSequenceClassification heads with
// problem_type "single_label_classification" (softmax, cross-entropy) or
// "multi_label_classification" (a sigmoid per label, binary cross-entropy).
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

constexpr char kSingleLabel[] = "single_label_classification";
constexpr char kMultiLabel[] = "multi_label_classification";
// Confusion-matrix cells are reported one metric each up to this many
// labels (the job's metrics are a flat name -> number map; 32 labels are
// 1,024 cells).
constexpr size_t kMaxConfusionLabels = 32;

// A label as one component of "confusion_matrix/GOLD/PREDICTED": '%' and
// '/' are percent-encoded so that the name splits back into its labels.
std::string ConfusionKeyPart(const std::string& label) {
  std::string out;
  for (char c : label) {
    if (c == '%') {
      out += "%25";
    } else if (c == '/') {
      out += "%2F";
    } else {
      out += c;
    }
  }
  return out;
}

ReadOptions ClassificationReadOptions(const TrainParams* params,
                                      bool labels_optional) {
  ReadOptions o;
  o.label_kind = LabelKind::kClassOrList;
  o.labels_optional = labels_optional;
  if (params != nullptr) o.columns = TextColumnsFromParams(*params);
  return o;
}

// Every row of `rows` must give its label as a list when `multi_label`, as
// a single value otherwise; the first that does not is named.
absl::Status CheckLabelForm(const std::vector<Example>& rows, bool multi_label,
                            const std::string& name, const std::string& why) {
  for (const Example& ex : rows) {
    if (ex.label_is_list == multi_label) continue;
    return absl::InvalidArgumentError(
        absl::StrCat(name, ":", ex.line, ": the label is ",
                     ex.label_is_list ? "a list" : "not a list", ", but ", why,
                     " (multi-label data gives a list in every row)"));
  }
  return absl::OkStatus();
}

// Token types reach BERT only, as in training (see the trainer).
void DropTokenTypes(const TaskModelImpl& model, ModelInputs* in) {
  if (model.config().architecture != Architecture::kBert) {
    in->token_type_ids = torch::Tensor();
  }
}

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
    const ReadOptions options =
        ClassificationReadOptions(context.params, /*labels_optional=*/false);
    ASSIGN_OR_RETURN(std::vector<Example> train,
                     ReadExamples(data.train_path, data.train_name, options));
    multi_label_ = train.front().label_is_list;
    RETURN_IF_ERROR(
        CheckLabelForm(train, multi_label_, data.train_name,
                       absl::StrCat("line ", train.front().line, "'s is ",
                                    multi_label_ ? "a list" : "not a list")));
    ASSIGN_OR_RETURN(labels_, LabelSet(train, data.train_name));
    if (labels_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          data.train_name, ": every row's label list is empty (no labels)"));
    }
    std::vector<Example> val;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(val, ReadExamples(data.validation_path,
                                         data.validation_name, options));
      RETURN_IF_ERROR(
          CheckLabelForm(val, multi_label_, data.validation_name,
                         absl::StrCat("the training data's labels are ",
                                      multi_label_ ? "lists" : "not lists")));
      RETURN_IF_ERROR(CheckLabels(val, labels_, data.validation_name));
    } else if (context.params->validation_split > 0) {
      auto [kept, held] = HoldOut(
          train.size(), context.params->validation_split, context.params->seed);
      std::vector<Example> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train[i]));
      for (size_t i : held) val.push_back(std::move(train[i]));
      train = std::move(kept_rows);
    }
    if (labels_.size() < 2 && !multi_label_ && context.log) {
      context.log(
          absl::StrCat("warning: the training data has a single label \"",
                       labels_[0], "\""));
    }
    if (context.log) {
      context.log(absl::StrCat("data: ", train.size(), " training rows, ",
                               val.size(), " validation rows, ",
                               multi_label_ ? "multi-label " : "", "labels [",
                               absl::StrJoin(labels_, ", "), "]"));
    }
    train_ = Featurize(train, context.max_length);
    val_ = Featurize(val, context.max_length);
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* config) const override {
    config->id2label = labels_;
    config->original["problem_type"] =
        multi_label_ ? kMultiLabel : kSingleLabel;
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
    nlohmann::json s = {{"labels", labels_}};
    if (multi_label_) s["problem_type"] = kMultiLabel;
    return s;
  }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    return Collate(train_, indices, device);
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    if (multi_label_) {
      // Mean over every (row, label) cell, as Hugging Face's
      // BCEWithLogitsLoss for multi_label_classification.
      return torch::binary_cross_entropy_with_logits(
          output.to(torch::kFloat), batch.targets.at("labels"));
    }
    return torch::nn::functional::cross_entropy(output,
                                                batch.targets.at("labels"));
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    const size_t n = val_.encodings.size();
    const size_t num_labels = labels_.size();
    const size_t step = static_cast<size_t>(std::max<int64_t>(1, batch_size));
    std::vector<int64_t> predicted;
    std::vector<std::vector<uint8_t>> predicted_sets;
    double loss_sum = 0;
    std::vector<size_t> indices;
    try {
      for (size_t begin = 0; begin < n; begin += step) {
        const size_t end = std::min(n, begin + step);
        indices.clear();
        for (size_t i = begin; i < end; ++i) indices.push_back(i);
        TaskBatch b = Collate(val_, indices, device);
        DropTokenTypes(model, &b.inputs);
        torch::Tensor logits = model.forward(b.inputs).to(torch::kFloat);
        const torch::Tensor& target = b.targets.at("labels");
        if (multi_label_) {
          loss_sum += torch::binary_cross_entropy_with_logits(
                          logits, target, {}, {}, at::Reduction::Sum)
                          .item<double>();
          // sigmoid(x) > 0.5 exactly when x > 0.
          torch::Tensor on =
              (logits > 0).to(torch::kCPU, torch::kUInt8).contiguous();
          const uint8_t* p = on.data_ptr<uint8_t>();
          const int64_t cols = on.size(1);
          for (int64_t r = 0; r < on.size(0); ++r) {
            predicted_sets.emplace_back(p + r * cols, p + (r + 1) * cols);
          }
        } else {
          loss_sum +=
              torch::nn::functional::cross_entropy(
                  logits, target,
                  torch::nn::functional::CrossEntropyFuncOptions().reduction(
                      torch::kSum))
                  .item<double>();
          torch::Tensor pred = logits.argmax(-1).to(torch::kCPU).contiguous();
          const int64_t* p = pred.data_ptr<int64_t>();
          predicted.insert(predicted.end(), p, p + pred.numel());
        }
      }
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("evaluation failed: ", e.what()));
    }
    if (multi_label_) {
      const MultiLabelMetrics m = ComputeMultiLabelMetrics(
          predicted_sets, val_.label_sets, static_cast<int64_t>(num_labels));
      const double cells = static_cast<double>(n * num_labels);
      return nlohmann::json{{"exact_match", m.exact_match},
                            {"f1_micro", m.f1_micro},
                            {"precision_micro", m.precision_micro},
                            {"recall_micro", m.recall_micro},
                            {"f1_macro", m.f1_macro},
                            {"loss", cells > 0 ? loss_sum / cells : 0.0}};
    }
    const ClassificationMetrics m = ComputeClassificationMetrics(
        predicted, val_.labels, static_cast<int64_t>(num_labels));
    nlohmann::json out = {{"accuracy", m.accuracy},
                          {"f1", m.f1},
                          {"f1_micro", m.f1_micro},
                          {"precision", m.precision},
                          {"recall", m.recall},
                          {"mcc", m.mcc},
                          {"loss", n > 0 ? loss_sum / n : 0.0}};
    // The confusion matrix, one cell per metric named by its labels
    // ("confusion_matrix/GOLD/PREDICTED"), not by class index: a reader
    // needs no id2label to make sense of it, and `lathe get` draws the table
    // from the names alone. Left out above kMaxConfusionLabels labels.
    if (num_labels <= kMaxConfusionLabels) {
      for (size_t g = 0; g < num_labels; ++g) {
        for (size_t p = 0; p < num_labels; ++p) {
          out[absl::StrCat("confusion_matrix/", ConfusionKeyPart(labels_[g]),
                           "/", ConfusionKeyPart(labels_[p]))] =
              m.confusion[g][p];
        }
      }
    }
    return out;
  }

  std::string default_metric() const override {
    return multi_label_ ? "f1_micro" : "accuracy";
  }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError("the model has no tokenizer");
    }
    const std::vector<std::string>& labels = model.config().id2label;
    const nlohmann::json& original = model.config().original;
    const bool multi_label = original.is_object() &&
                             original.contains("problem_type") &&
                             original["problem_type"] == kMultiLabel;
    ASSIGN_OR_RETURN(
        std::vector<Example> rows,
        ReadExamples(path, display_name,
                     ClassificationReadOptions(context.params,
                                               /*labels_optional=*/true)));
    auto label_name = [&](int64_t i) {
      return i < static_cast<int64_t>(labels.size())
                 ? labels[i]
                 : absl::StrCat("LABEL_", i);
    };
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
        torch::Tensor logits = model.forward(in)[0].to(torch::kFloat);
        torch::Tensor probs =
            (multi_label ? torch::sigmoid(logits) : torch::softmax(logits, -1))
                .to(torch::kCPU)
                .contiguous();
        const float* p = probs.data_ptr<float>();
        nlohmann::json by_label = nlohmann::json::object();
        nlohmann::json chosen = nlohmann::json::array();
        int64_t best = 0;
        for (int64_t i = 0; i < probs.numel(); ++i) {
          by_label[label_name(i)] = p[i];
          if (p[i] > p[best]) best = i;
          if (p[i] > 0.5f) chosen.push_back(label_name(i));
        }
        if (multi_label) {
          out.push_back({{"labels", chosen}, {"probabilities", by_label}});
        } else {
          out.push_back(
              {{"label", label_name(best)}, {"probabilities", by_label}});
        }
      }
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("prediction failed: ", e.what()));
    }
    return out;
  }

 private:
  struct Features {
    std::vector<TokenizedText> encodings;
    std::vector<int64_t> labels;                   // Single-label.
    std::vector<std::vector<uint8_t>> label_sets;  // Multi-label indicators.
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
    if (multi_label_) {
      f.label_sets = LabelIndicators(rows, labels_);
    } else {
      f.labels = LabelIndices(rows, labels_);
    }
    return f;
  }

  TaskBatch Collate(const Features& f, const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const TokenizedText*> rows;
    rows.reserve(indices.size());
    for (size_t i : indices) rows.push_back(&f.encodings[i]);
    TaskBatch b;
    b.inputs = PadTokenBatch(rows, pad_id_, device, &b.tokens);
    if (multi_label_) {
      const int64_t k = static_cast<int64_t>(labels_.size());
      std::vector<float> targets;
      targets.reserve(indices.size() * labels_.size());
      for (size_t i : indices) {
        for (uint8_t v : f.label_sets[i]) targets.push_back(v ? 1.0f : 0.0f);
      }
      b.targets["labels"] =
          torch::tensor(targets, torch::kFloat)
              .reshape({static_cast<int64_t>(indices.size()), k})
              .to(device);
    } else {
      std::vector<int64_t> labels;
      labels.reserve(indices.size());
      for (size_t i : indices) labels.push_back(f.labels[i]);
      b.targets["labels"] = torch::tensor(labels, torch::kLong).to(device);
    }
    b.examples = static_cast<int64_t>(indices.size());
    return b;
  }

  const Tokenizer* tokenizer_ = nullptr;
  int64_t pad_id_ = 0;
  bool multi_label_ = false;
  std::vector<std::string> labels_;
  Features train_, val_;
};

}  // namespace

std::unique_ptr<Task> NewTextClassificationTask() {
  return std::make_unique<TextClassificationTask>();
}

}  // namespace tasks
}  // namespace lathe
