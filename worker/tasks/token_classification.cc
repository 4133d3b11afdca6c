// token-classification (named entities and other per-word tags): words with
// BIO tags, or text with labelled character spans; Hugging Face's
// XForTokenClassification heads. Each word's tag is trained and predicted on
// its first sub-token; the others, and special tokens, are ignored (-100).
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "worker/tasks/seqeval_metrics.h"
#include "worker/tasks/task_factories.h"
#include "worker/tasks/token_classification_data.h"

namespace lathe {
namespace tasks {
namespace {

constexpr int64_t kIgnore = -100;

TokenColumns ColumnsOf(const TrainParams& p) {
  TokenColumns c;
  if (!p.tokens_column.empty()) c.tokens = p.tokens_column;
  if (!p.tags_column.empty()) c.tags = p.tags_column;
  if (!p.text_column.empty()) c.text = p.text_column;
  return c;
}

// A row tokenized: its encoding and, per token, the word whose first
// sub-token it is (-1 otherwise).
struct Feature {
  TokenizedText encoding;
  std::vector<int64_t> word_of_token;
  std::vector<int64_t> labels;  // Per token: tag index or kIgnore.
};

Feature Featurize(const Tokenizer& tokenizer, const TokenRow& row,
                  int64_t max_length,
                  const std::map<std::string, int64_t>* tag_index) {
  Feature f;
  f.encoding = tokenizer.EncodeTruncated(row.text, std::nullopt, max_length);
  f.word_of_token = FirstSubTokenWords(f.encoding, row.word_bytes);
  f.labels.assign(f.word_of_token.size(), kIgnore);
  if (tag_index != nullptr) {
    for (size_t t = 0; t < f.word_of_token.size(); ++t) {
      const int64_t w = f.word_of_token[t];
      if (w >= 0) f.labels[t] = tag_index->at(row.tags[w]);
    }
  }
  return f;
}

// Token type ids only for families that have them (RoBERTa's single type
// and DistilBERT's none would reject pair ids).
void DropTypeIds(const TaskModelImpl* model, ModelInputs* in) {
  if (model != nullptr && model->config().architecture != Architecture::kBert) {
    in->token_type_ids = torch::Tensor();
  }
}

class TokenClassificationTask : public Task {
 public:
  std::string name() const override { return "token-classification"; }
  HeadKind head() const override { return HeadKind::kTokenClassification; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "token-classification needs a model with a tokenizer");
    }
    tokenizer_ = context.tokenizer;
    pad_id_ = PadId(*tokenizer_);
    use_type_ids_ = context.model_config == nullptr ||
                    context.model_config->architecture == Architecture::kBert;
    const TokenColumns columns = ColumnsOf(*context.params);
    ASSIGN_OR_RETURN(std::vector<TokenRow> train,
                     ReadTokenRows(data.train_path, data.train_name, columns,
                                   /*require_tags=*/true));
    ASSIGN_OR_RETURN(labels_, TagSet(train, data.train_name));
    std::vector<TokenRow> val;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(val, ReadTokenRows(data.validation_path,
                                          data.validation_name, columns,
                                          /*require_tags=*/true));
      RETURN_IF_ERROR(CheckTags(val, labels_, data.validation_name));
    } else if (context.params->validation_split > 0) {
      auto [kept, held] = HoldOut(
          train.size(), context.params->validation_split, context.params->seed);
      std::vector<TokenRow> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train[i]));
      for (size_t i : held) val.push_back(std::move(train[i]));
      train = std::move(kept_rows);
    }
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < labels_.size(); ++i) index[labels_[i]] = i;
    int64_t cut = 0;
    for (const TokenRow& r : train) {
      train_.push_back(Featurize(*tokenizer_, r, context.max_length, &index));
      cut += Dropped(train_.back(), r);
    }
    for (const TokenRow& r : val) {
      val_.push_back(Featurize(*tokenizer_, r, context.max_length, &index));
      cut += Dropped(val_.back(), r);
      val_tags_.push_back(r.tags);
    }
    if (context.log) {
      context.log(absl::StrCat("data: ", train.size(), " training rows, ",
                               val.size(), " validation rows, tags [",
                               absl::StrJoin(labels_, ", "), "]"));
      if (cut > 0) {
        context.log(absl::StrCat(
            "warning: ", cut,
            " words fall past max_seq_length (or tokenize to nothing) and "
            "are neither trained nor scored"));
      }
    }
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* config) const override {
    config->id2label = labels_;
  }

  int64_t train_size() const override { return train_.size(); }
  std::vector<int64_t> train_lengths() const override {
    std::vector<int64_t> out;
    out.reserve(train_.size());
    for (const auto& f : train_) out.push_back(f.encoding.ids.size());
    return out;
  }
  int64_t validation_size() const override { return val_.size(); }
  nlohmann::json Signature() const override { return {{"labels", labels_}}; }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    TaskBatch b = Collate(train_, indices, device);
    b.loss_units = b.targets.at("labels").ne(kIgnore).sum().item<int64_t>();
    return b;
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    const torch::Tensor& labels = batch.targets.at("labels");
    const int64_t num_labels = output.size(-1);
    const torch::Tensor flat = output.reshape({-1, num_labels});
    const torch::Tensor target = labels.reshape({-1});
    // A batch whose words all fell past the limit has nothing to learn; the
    // mean over no tokens would be NaN.
    if (target.ne(kIgnore).sum().item<int64_t>() == 0) {
      return flat.sum() * 0.0;
    }
    return torch::nn::functional::cross_entropy(
        flat, target,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnore));
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    std::vector<std::vector<std::string>> gold, predicted;
    double loss_sum = 0;
    int64_t loss_tokens = 0;
    std::vector<size_t> indices;
    for (size_t begin = 0; begin < val_.size(); begin += batch_size) {
      const size_t end =
          std::min(val_.size(), begin + static_cast<size_t>(batch_size));
      indices.clear();
      for (size_t i = begin; i < end; ++i) indices.push_back(i);
      TaskBatch b = Collate(val_, indices, device);
      DropTypeIds(&model, &b.inputs);
      torch::Tensor logits = model.forward(b.inputs);
      const torch::Tensor target = b.targets.at("labels").reshape({-1});
      const int64_t counted = target.ne(kIgnore).sum().item<int64_t>();
      if (counted > 0) {
        loss_sum += torch::nn::functional::cross_entropy(
                        logits.reshape({-1, logits.size(-1)}), target,
                        torch::nn::functional::CrossEntropyFuncOptions()
                            .ignore_index(kIgnore)
                            .reduction(torch::kSum))
                        .item<double>();
        loss_tokens += counted;
      }
      const torch::Tensor pred =
          logits.argmax(-1).to(torch::kCPU, torch::kLong).contiguous();
      const int64_t width = pred.size(1);
      const int64_t* p = pred.data_ptr<int64_t>();
      for (size_t r = 0; r < indices.size(); ++r) {
        const Feature& f = val_[indices[r]];
        const std::vector<std::string>& tags = val_tags_[indices[r]];
        std::vector<std::string> g, q;
        // Words without a first sub-token (cut off) are left out of both.
        for (size_t t = 0; t < f.word_of_token.size(); ++t) {
          const int64_t w = f.word_of_token[t];
          if (w < 0) continue;
          g.push_back(tags[w]);
          q.push_back(labels_[p[r * width + t]]);
        }
        gold.push_back(std::move(g));
        predicted.push_back(std::move(q));
      }
    }
    ASSIGN_OR_RETURN(SeqevalMetrics m, ComputeSeqevalMetrics(gold, predicted));
    return nlohmann::json{
        {"precision", m.precision},
        {"recall", m.recall},
        {"f1", m.f1},
        {"accuracy", m.accuracy},
        {"loss", loss_tokens == 0 ? 0.0 : loss_sum / loss_tokens}};
  }

  std::string default_metric() const override { return "f1"; }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError("the model has no tokenizer");
    }
    const std::vector<std::string>& labels = model.config().id2label;
    const TokenColumns columns = ColumnsOf(*context.params);
    ASSIGN_OR_RETURN(std::vector<TokenRow> rows,
                     ReadTokenRows(path, display_name, columns,
                                   /*require_tags=*/false));
    const int64_t pad_id = PadId(*context.tokenizer);
    std::vector<nlohmann::json> out;
    for (const TokenRow& row : rows) {
      const Feature f =
          Featurize(*context.tokenizer, row, context.max_length, nullptr);
      ModelInputs in = PadTokenBatch({&f.encoding}, pad_id, device, nullptr);
      DropTypeIds(&model, &in);
      const torch::Tensor pred = model.forward(in)[0]
                                     .argmax(-1)
                                     .to(torch::kCPU, torch::kLong)
                                     .contiguous();
      const int64_t* p = pred.data_ptr<int64_t>();
      // Words cut off by max_seq_length are "O".
      std::vector<std::string> tags(row.word_bytes.size(), "O");
      for (size_t t = 0; t < f.word_of_token.size(); ++t) {
        const int64_t w = f.word_of_token[t];
        if (w < 0) continue;
        tags[w] = p[t] < static_cast<int64_t>(labels.size())
                      ? labels[p[t]]
                      : absl::StrCat("LABEL_", p[t]);
      }
      nlohmann::json entities = nlohmann::json::array();
      for (const TagEntity& e : ExtractEntities(tags)) {
        const int64_t byte_begin = row.word_bytes[e.start].first;
        const int64_t byte_end = row.word_bytes[e.end].second;
        entities.push_back(
            {{"label", e.type},
             {"start", row.word_chars[e.start].first},
             {"end", row.word_chars[e.end].second},
             {"text", row.text.substr(byte_begin, byte_end - byte_begin)}});
      }
      std::vector<std::string> words;
      for (const auto& [b, e] : row.word_bytes) {
        words.push_back(row.text.substr(b, e - b));
      }
      // Offsets index "text": the row's text, or its tokens joined by
      // single spaces.
      out.push_back({{"entities", entities},
                     {"tags", tags},
                     {"words", words},
                     {"text", row.text}});
    }
    return out;
  }

 private:
  static int64_t Dropped(const Feature& f, const TokenRow& r) {
    int64_t firsts = 0;
    for (int64_t w : f.word_of_token) firsts += w >= 0 ? 1 : 0;
    return static_cast<int64_t>(r.word_bytes.size()) - firsts;
  }

  TaskBatch Collate(const std::vector<Feature>& features,
                    const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const TokenizedText*> rows;
    rows.reserve(indices.size());
    size_t longest = 1;
    for (size_t i : indices) {
      rows.push_back(&features[i].encoding);
      longest = std::max(longest, features[i].labels.size());
    }
    std::vector<int64_t> labels(indices.size() * longest, kIgnore);
    for (size_t r = 0; r < indices.size(); ++r) {
      const std::vector<int64_t>& l = features[indices[r]].labels;
      std::copy(l.begin(), l.end(), labels.begin() + r * longest);
    }
    TaskBatch b;
    b.inputs = PadTokenBatch(rows, pad_id_, device, &b.tokens);
    if (!use_type_ids_) b.inputs.token_type_ids = torch::Tensor();
    b.targets["labels"] = torch::tensor(labels, torch::kLong)
                              .reshape({static_cast<int64_t>(indices.size()),
                                        static_cast<int64_t>(longest)})
                              .to(device);
    b.examples = static_cast<int64_t>(indices.size());
    return b;
  }

  const Tokenizer* tokenizer_ = nullptr;
  int64_t pad_id_ = 0;
  bool use_type_ids_ = true;
  std::vector<std::string> labels_;
  std::vector<Feature> train_, val_;
  std::vector<std::vector<std::string>> val_tags_;
};

}  // namespace

std::unique_ptr<Task> NewTokenClassificationTask() {
  return std::make_unique<TokenClassificationTask>();
}

}  // namespace tasks
}  // namespace lathe
