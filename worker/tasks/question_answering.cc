// question-answering (extractive, SQuAD v1.1 and v2.0): a question and a
// context to the answer's span in the context; Hugging Face's
// XForQuestionAnswering heads (qa_outputs: a start and an end logit per
// token). Long contexts become windows overlapping by doc_stride tokens.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/tasks/squad_data.h"
#include "worker/tasks/squad_metrics.h"
#include "worker/tasks/task_factories.h"

namespace lathe {
namespace tasks {
namespace {

QaColumns ColumnsOf(const TrainParams& p) {
  QaColumns c;
  if (!p.question_column.empty()) c.question = p.question_column;
  if (!p.context_column.empty()) c.context = p.context_column;
  if (!p.answers_column.empty()) c.answers = p.answers_column;
  return c;
}

QaPostProcessing PostProcessingOf(const TrainParams& p, bool allow_null) {
  QaPostProcessing o;
  o.max_answer_length = p.max_answer_length;
  o.allow_no_answer = allow_null;
  o.null_score_diff_threshold = p.null_score_diff_threshold;
  return o;
}

// Collates features into model inputs (type ids only for BERT: RoBERTa has
// a single type and DistilBERT none).
ModelInputs Inputs(const std::vector<const QaFeature*>& features,
                   int64_t pad_id, bool use_type_ids,
                   const torch::Device& device, int64_t* tokens) {
  std::vector<const TokenizedText*> rows;
  rows.reserve(features.size());
  for (const QaFeature* f : features) rows.push_back(&f->encoding);
  ModelInputs in = PadTokenBatch(rows, pad_id, device, tokens);
  if (!use_type_ids) in.token_type_ids = torch::Tensor();
  return in;
}

// Start and end logits of each row of `output` [B, T, 2], cut to the
// features' lengths.
void SplitLogits(const torch::Tensor& output,
                 const std::vector<const QaFeature*>& features,
                 std::vector<std::vector<float>>* starts,
                 std::vector<std::vector<float>>* ends) {
  const torch::Tensor cpu =
      output.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const int64_t width = cpu.size(1);
  const float* p = cpu.data_ptr<float>();
  for (size_t r = 0; r < features.size(); ++r) {
    const int64_t n = std::min<int64_t>(
        width, static_cast<int64_t>(features[r]->encoding.ids.size()));
    std::vector<float> s(n), e(n);
    for (int64_t t = 0; t < n; ++t) {
      s[t] = p[(r * width + t) * 2];
      e[t] = p[(r * width + t) * 2 + 1];
    }
    starts->push_back(std::move(s));
    ends->push_back(std::move(e));
  }
}

class QuestionAnsweringTask : public Task {
 public:
  std::string name() const override { return "question-answering"; }
  HeadKind head() const override { return HeadKind::kQuestionAnswering; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "question-answering needs a model with a tokenizer");
    }
    params_ = *context.params;
    pad_id_ = PadId(*context.tokenizer);
    use_type_ids_ = context.model_config == nullptr ||
                    context.model_config->architecture == Architecture::kBert;
    const QaColumns columns = ColumnsOf(params_);
    ASSIGN_OR_RETURN(std::vector<QaExample> train,
                     ReadQaExamples(data.train_path, data.train_name, columns,
                                    /*require_answers=*/true));
    std::vector<QaExample> val;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(val, ReadQaExamples(data.validation_path,
                                           data.validation_name, columns,
                                           /*require_answers=*/true));
    } else if (params_.validation_split > 0) {
      auto [kept, held] =
          HoldOut(train.size(), params_.validation_split, params_.seed);
      std::vector<QaExample> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train[i]));
      for (size_t i : held) val.push_back(std::move(train[i]));
      train = std::move(kept_rows);
    }
    train_rows_ = static_cast<int64_t>(train.size());
    for (const auto* set : {&train, &val}) {
      for (const QaExample& ex : *set) {
        version_2_ = version_2_ || ex.is_impossible;
      }
    }
    ASSIGN_OR_RETURN(QaWindowing tw,
                     BuildQaFeatures(*context.tokenizer, train,
                                     context.max_length, params_.doc_stride));
    ASSIGN_OR_RETURN(QaWindowing vw,
                     BuildQaFeatures(*context.tokenizer, val,
                                     context.max_length, params_.doc_stride));
    train_ = std::move(tw.features);
    val_ = std::move(vw.features);
    val_examples_ = std::move(val);
    if (context.log) {
      context.log(absl::StrCat(
          "data: ", train.size(), " training questions (", train_.size(),
          " windows), ", val_examples_.size(), " validation questions (",
          val_.size(), " windows)", version_2_ ? ", with unanswerable" : "",
          " (SQuAD v", version_2_ ? "2.0" : "1.1", " scoring)"));
      const int64_t stride = std::max(tw.stride, vw.stride);
      if (stride >= 0 && stride < params_.doc_stride &&
          (train_.size() > train.size() ||
           val_.size() > val_examples_.size())) {
        context.log(
            absl::StrCat("warning: doc_stride ", params_.doc_stride,
                         " leaves no room to advance within max_seq_length ",
                         context.max_length, "; windows overlap by ", stride,
                         " tokens instead"));
      }
      if (tw.truncated_questions + vw.truncated_questions > 0) {
        context.log(absl::StrCat(
            "warning: ", tw.truncated_questions + vw.truncated_questions,
            " questions were cut to leave half of max_seq_length to the "
            "context"));
      }
    }
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* config) const override {
    // qa_outputs has two outputs (start, end) whatever the labels say; Hugging
    // Face's default config names them so.
    config->id2label = {"LABEL_0", "LABEL_1"};
    // Kept in config.json so predictions answer "no answer" only for models
    // trained with unanswerable questions.
    config->original["version_2_with_negative"] = version_2_;
  }

  int64_t train_size() const override { return train_.size(); }
  std::vector<int64_t> train_lengths() const override {
    std::vector<int64_t> out;
    out.reserve(train_.size());
    for (const auto& f : train_) out.push_back(f.encoding.ids.size());
    return out;
  }
  int64_t validation_size() const override { return val_.size(); }
  int64_t train_rows() const override { return train_rows_; }
  nlohmann::json Signature() const override {
    return {{"task", "question-answering"}};
  }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    return Collate(train_, indices, device);
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    const torch::Tensor start = output.select(-1, 0);
    const torch::Tensor end = output.select(-1, 1);
    return (torch::nn::functional::cross_entropy(
                start, batch.targets.at("start_positions")) +
            torch::nn::functional::cross_entropy(
                end, batch.targets.at("end_positions"))) /
           2;
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    std::vector<std::vector<float>> starts, ends;
    starts.reserve(val_.size());
    ends.reserve(val_.size());
    double loss_sum = 0;
    std::vector<size_t> indices;
    for (size_t begin = 0; begin < val_.size(); begin += batch_size) {
      const size_t end =
          std::min(val_.size(), begin + static_cast<size_t>(batch_size));
      indices.clear();
      for (size_t i = begin; i < end; ++i) indices.push_back(i);
      TaskBatch b = Collate(val_, indices, device);
      const torch::Tensor out = model.forward(b.inputs);
      loss_sum += Loss(out, b).item<double>() * indices.size();
      std::vector<const QaFeature*> feats;
      for (size_t i : indices) feats.push_back(&val_[i]);
      SplitLogits(out, feats, &starts, &ends);
    }
    // Features are in example order; group each example's windows.
    std::vector<SquadQuestion> questions(val_examples_.size());
    const QaPostProcessing options = PostProcessingOf(params_, version_2_);
    size_t f = 0;
    for (size_t x = 0; x < val_examples_.size(); ++x) {
      std::vector<const QaFeature*> feats;
      std::vector<std::vector<float>> s, e;
      for (; f < val_.size() && val_[f].example == static_cast<int64_t>(x);
           ++f) {
        feats.push_back(&val_[f]);
        s.push_back(std::move(starts[f]));
        e.push_back(std::move(ends[f]));
      }
      const QaPrediction p =
          PostProcessQa(val_examples_[x], feats, s, e, options);
      SquadQuestion& q = questions[x];
      for (const QaAnswer& a : val_examples_[x].answers) {
        q.gold_answers.push_back(a.text);
      }
      q.prediction = p.text;
      q.no_answer_score = p.score_diff;
    }
    const SquadMetrics m = ComputeSquadMetrics(questions, version_2_);
    nlohmann::json j = {{"exact_match", m.exact},
                        {"f1", m.f1},
                        {"loss", val_.empty() ? 0.0 : loss_sum / val_.size()}};
    if (version_2_) {
      j["HasAns_exact"] = m.has_ans_exact;
      j["HasAns_f1"] = m.has_ans_f1;
      j["HasAns_total"] = m.has_ans_total;
      j["NoAns_exact"] = m.no_ans_exact;
      j["NoAns_f1"] = m.no_ans_f1;
      j["NoAns_total"] = m.no_ans_total;
      j["best_exact"] = m.best_exact;
      j["best_exact_thresh"] = m.best_exact_thresh;
      j["best_f1"] = m.best_f1;
      j["best_f1_thresh"] = m.best_f1_thresh;
    }
    return j;
  }

  std::string default_metric() const override { return "f1"; }

  bool greater_is_better(const std::string& metric) const override {
    return metric != "loss" && metric.find("_thresh") == std::string::npos &&
           metric.find("_total") == std::string::npos;
  }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError("the model has no tokenizer");
    }
    const TrainParams& params = *context.params;
    ASSIGN_OR_RETURN(std::vector<QaExample> examples,
                     ReadQaExamples(path, display_name, ColumnsOf(params),
                                    /*require_answers=*/false));
    ASSIGN_OR_RETURN(QaWindowing w,
                     BuildQaFeatures(*context.tokenizer, examples,
                                     context.max_length, params.doc_stride));
    const int64_t pad_id = PadId(*context.tokenizer);
    const bool use_type_ids =
        model.config().architecture == Architecture::kBert;
    // "No answer" is possible for models trained with unanswerable
    // questions, and for models from elsewhere that do not say.
    const nlohmann::json& original = model.config().original;
    const bool allow_null = !original.contains("version_2_with_negative") ||
                            !original["version_2_with_negative"].is_boolean() ||
                            original["version_2_with_negative"].get<bool>();
    const QaPostProcessing options = PostProcessingOf(params, allow_null);
    std::vector<nlohmann::json> out;
    size_t f = 0;
    for (size_t x = 0; x < examples.size(); ++x) {
      std::vector<const QaFeature*> feats;
      for (; f < w.features.size() &&
             w.features[f].example == static_cast<int64_t>(x);
           ++f) {
        feats.push_back(&w.features[f]);
      }
      std::vector<std::vector<float>> s, e;
      constexpr size_t kWindowsPerForward = 16;
      for (size_t b = 0; b < feats.size(); b += kWindowsPerForward) {
        const std::vector<const QaFeature*> part(
            feats.begin() + b,
            feats.begin() + std::min(feats.size(), b + kWindowsPerForward));
        SplitLogits(
            model.forward(Inputs(part, pad_id, use_type_ids, device, nullptr)),
            part, &s, &e);
      }
      const QaPrediction p = PostProcessQa(examples[x], feats, s, e, options);
      out.push_back({{"id", examples[x].id},
                     {"answer", p.text},
                     {"start", p.start},
                     {"end", p.end},
                     {"score", p.score}});
    }
    return out;
  }

 private:
  TaskBatch Collate(const std::vector<QaFeature>& features,
                    const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const QaFeature*> feats;
    std::vector<int64_t> starts, ends;
    for (size_t i : indices) {
      feats.push_back(&features[i]);
      starts.push_back(features[i].start_position);
      ends.push_back(features[i].end_position);
    }
    TaskBatch b;
    b.inputs = Inputs(feats, pad_id_, use_type_ids_, device, &b.tokens);
    b.targets["start_positions"] =
        torch::tensor(starts, torch::kLong).to(device);
    b.targets["end_positions"] = torch::tensor(ends, torch::kLong).to(device);
    b.examples = static_cast<int64_t>(indices.size());
    return b;
  }

  TrainParams params_;
  int64_t pad_id_ = 0;
  bool use_type_ids_ = true;
  bool version_2_ = false;
  int64_t train_rows_ = 0;
  std::vector<QaFeature> train_, val_;
  std::vector<QaExample> val_examples_;
};

}  // namespace

std::unique_ptr<Task> NewQuestionAnsweringTask() {
  return std::make_unique<QuestionAnsweringTask>();
}

}  // namespace tasks
}  // namespace lathe
