// masked-lm: domain-adaptive pre-training of BERT, RoBERTa and DistilBERT on
// raw text with Hugging Face's masking (mlm_probability of the tokens, 80%
// mask token, 10% random token, 10% unchanged); predictions fill the mask
// tokens of each row. Data layout: worker/tasks/lm_data.h (raw text only).
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/tasks/lm_data.h"
#include "worker/tasks/lm_metrics.h"
#include "worker/tasks/lm_tasks.h"
#include "worker/tasks/task_factories.h"

namespace lathe {

MlmMasking MaskTokens(const torch::Tensor& input_ids,
                      const torch::Tensor& maskable, double probability,
                      int64_t mask_id, int64_t vocab_size,
                      torch::Generator* generator) {
  c10::optional<at::Generator> gen;
  if (generator != nullptr) gen = *generator;
  const auto fopts = torch::TensorOptions().dtype(torch::kFloat);
  torch::Tensor chosen =
      torch::bernoulli(torch::full(input_ids.sizes(), probability, fopts), gen)
          .to(torch::kBool) &
      maskable;
  MlmMasking m;
  m.labels = torch::where(chosen, input_ids,
                          torch::full_like(input_ids, kIgnoreLabel));
  torch::Tensor replaced =
      torch::bernoulli(torch::full(input_ids.sizes(), 0.8, fopts), gen)
          .to(torch::kBool) &
      chosen;
  torch::Tensor randomised =
      torch::bernoulli(torch::full(input_ids.sizes(), 0.5, fopts), gen)
          .to(torch::kBool) &
      chosen & ~replaced;
  torch::Tensor random_ids =
      torch::randint(0, vocab_size, input_ids.sizes(), gen,
                     torch::TensorOptions(torch::kLong));
  m.input_ids =
      torch::where(replaced, torch::full_like(input_ids, mask_id), input_ids);
  m.input_ids = torch::where(randomised, random_ids, m.input_ids);
  return m;
}

namespace tasks {
namespace {

bool IsEncoder(Architecture a) {
  return a == Architecture::kBert || a == Architecture::kRoberta ||
         a == Architecture::kDistilBert;
}

// Evaluation masks with its own fixed seed, so every evaluation of a run
// scores the same masked positions.
constexpr uint64_t kEvalMaskSeed = 0x6C617468654D4C4Dull;

// Cross-entropy over the labelled (masked) positions: summed or averaged.
torch::Tensor MlmLoss(const torch::Tensor& logits, const torch::Tensor& labels,
                      bool sum) {
  auto options = torch::nn::functional::CrossEntropyFuncOptions().ignore_index(
      kIgnoreLabel);
  if (sum) options = options.reduction(torch::kSum);
  return torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
      labels.reshape({-1}), options);
}

class MaskedLmTask : public Task {
 public:
  std::string name() const override { return "masked-lm"; }
  HeadKind head() const override { return HeadKind::kMaskedLm; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "masked-lm needs a model with a tokenizer");
    }
    if (context.model_config != nullptr &&
        !IsEncoder(context.model_config->architecture)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "masked-lm needs an encoder model (BERT, RoBERTa, DistilBERT); ",
          context.model_config->model_type,
          " is a decoder: use causal-lm to adapt it to text"));
    }
    tokenizer_ = context.tokenizer;
    if (!tokenizer_->mask_id().has_value()) {
      return absl::InvalidArgumentError(
          "masked-lm needs a tokenizer with a mask token");
    }
    mask_id_ = *tokenizer_->mask_id();
    pad_id_ = PadId(*tokenizer_);
    vocab_size_ = tokenizer_->vocab_size();
    if (context.model_config != nullptr) {
      vocab_size_ = std::min(vocab_size_, context.model_config->vocab_size);
    }
    const TrainParams& params = *context.params;
    probability_ = params.mlm_probability;
    const LmColumns columns = LmColumnsFromParams(params);
    ASSIGN_OR_RETURN(LmRows train,
                     ReadText(data.train_path, data.train_name, columns));
    LmRows val;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(
          val, ReadText(data.validation_path, data.validation_name, columns));
    } else if (params.validation_split > 0) {
      auto [kept, held] =
          HoldOut(train.rows.size(), params.validation_split, params.seed);
      std::vector<LmRow> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train.rows[i]));
      for (size_t i : held) val.rows.push_back(std::move(train.rows[i]));
      train.rows = std::move(kept_rows);
    }
    for (const LmRow& r : train.rows) {
      train_.push_back(tokenizer_->EncodeTruncated(r.text, std::nullopt,
                                                   context.max_length));
    }
    for (const LmRow& r : val.rows) {
      val_.push_back(tokenizer_->EncodeTruncated(r.text, std::nullopt,
                                                 context.max_length));
    }
    if (context.log) {
      context.log(absl::StrCat("data: ", train_.size(), " training texts, ",
                               val_.size(), " validation texts; masking ",
                               probability_ * 100, "% of the tokens"));
    }
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* /*config*/) const override {}

  int64_t train_size() const override { return train_.size(); }
  std::vector<int64_t> train_lengths() const override {
    std::vector<int64_t> out;
    out.reserve(train_.size());
    for (const auto& f : train_) out.push_back(f.ids.size());
    return out;
  }
  int64_t validation_size() const override { return val_.size(); }
  nlohmann::json Signature() const override { return {{"task", "masked-lm"}}; }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* generator) const override {
    TaskBatch b = Collate(train_, indices, device, generator);
    b.loss_units =
        (b.targets.at("labels") != kIgnoreLabel).sum().item<int64_t>();
    return b;
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    const torch::Tensor& labels = batch.targets.at("labels");
    if ((labels != kIgnoreLabel).sum().item<int64_t>() == 0) {
      return output.sum() * 0;
    }
    return MlmLoss(output, labels, false);
  }

  // The same mean, with the LM head applied only at the masked positions.
  torch::Tensor TrainLoss(TaskModelImpl& model,
                          const TaskBatch& batch) const override {
    if (!model.has_lm_head()) return Loss(model.forward(batch.inputs), batch);
    torch::Tensor hidden = model.ForwardHidden(batch.inputs);
    torch::Tensor labels = batch.targets.at("labels").reshape({-1});
    torch::Tensor keep = (labels != kIgnoreLabel).nonzero().squeeze(1);
    if (keep.numel() == 0) return hidden.sum() * 0;
    return ProjectedLmLoss(
        model, hidden.reshape({-1, hidden.size(-1)}).index_select(0, keep),
        labels.index_select(0, keep), kMaxLmLogits);
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    torch::Generator gen =
        at::make_generator<at::CPUGeneratorImpl>(kEvalMaskSeed);
    double loss_sum = 0;
    int64_t count = 0, correct = 0;
    std::vector<size_t> indices;
    for (size_t begin = 0; begin < val_.size(); begin += batch_size) {
      const size_t end =
          std::min(val_.size(), begin + static_cast<size_t>(batch_size));
      indices.clear();
      for (size_t i = begin; i < end; ++i) indices.push_back(i);
      TaskBatch b = Collate(val_, indices, device, &gen);
      const torch::Tensor& labels = b.targets.at("labels");
      torch::Tensor valid = labels != kIgnoreLabel;
      const int64_t n = valid.sum().item<int64_t>();
      if (n == 0) continue;
      // The LM head only at the masked positions.
      torch::Tensor hidden = model.ForwardHidden(b.inputs);
      torch::Tensor keep = valid.reshape({-1}).nonzero().squeeze(1);
      torch::Tensor states =
          hidden.reshape({-1, hidden.size(-1)}).index_select(0, keep);
      torch::Tensor targets = labels.reshape({-1}).index_select(0, keep);
      const int64_t chunk = std::max<int64_t>(
          1, kMaxLmLogits / std::max<int64_t>(1, model.config().vocab_size));
      for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        const int64_t c1 = std::min(n, c0 + chunk);
        torch::Tensor logits =
            model.ProjectHidden(states.slice(0, c0, c1)).to(torch::kFloat);
        torch::Tensor t = targets.slice(0, c0, c1);
        loss_sum += MlmLoss(logits, t, true).item<double>();
        correct += (logits.argmax(-1) == t).sum().item<int64_t>();
      }
      count += n;
    }
    const double loss = count > 0 ? loss_sum / count : 0.0;
    return nlohmann::json{
        {"loss", loss},
        {"perplexity", Perplexity(loss)},
        {"accuracy", count > 0 ? static_cast<double>(correct) / count : 0.0},
        {"masked_tokens", count}};
  }

  std::string default_metric() const override { return "loss"; }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    const Tokenizer* tok = context.tokenizer;
    if (tok == nullptr) {
      return absl::InvalidArgumentError("the model has no tokenizer");
    }
    if (model.head() != HeadKind::kMaskedLm) {
      return absl::InvalidArgumentError(
          "masked-lm predictions need a model with a masked LM head");
    }
    if (!tok->mask_id().has_value()) {
      return absl::InvalidArgumentError("the tokenizer has no mask token");
    }
    const int64_t mask_id = *tok->mask_id();
    const std::string mask_text = tok->IdToToken(mask_id).value_or("");
    const TrainParams defaults;
    const TrainParams& params =
        context.params != nullptr ? *context.params : defaults;
    ASSIGN_OR_RETURN(LmRows rows,
                     ReadText(path, display_name, LmColumnsFromParams(params)));
    std::vector<nlohmann::json> out;
    const int64_t pad_id = PadId(*tok);
    torch::NoGradGuard no_grad;
    for (const LmRow& row : rows.rows) {
      if (mask_text.empty() || row.text.find(mask_text) == std::string::npos) {
        out.push_back({{"text", row.text}});
        continue;
      }
      const TokenizedText t =
          tok->EncodeTruncated(row.text, std::nullopt, context.max_length);
      ModelInputs in = PadTokenBatch({&t}, pad_id, device, nullptr);
      if (model.config().architecture != Architecture::kBert) {
        in.token_type_ids = torch::Tensor();
      }
      torch::Tensor probs;
      try {
        probs = torch::softmax(model.forward(in)[0].to(torch::kFloat), -1)
                    .to(torch::kCPU);
      } catch (const std::exception& e) {
        return absl::InternalError(
            absl::StrCat("prediction failed: ", e.what()));
      }
      nlohmann::json tokens = nlohmann::json::array();
      std::string filled;
      size_t cursor = 0;
      for (size_t i = 0; i < t.ids.size(); ++i) {
        if (t.ids[i] != mask_id) continue;
        auto [values, ids] = probs[static_cast<int64_t>(i)].topk(
            std::min<int64_t>(5, probs.size(1)));
        nlohmann::json top = nlohmann::json::array();
        for (int64_t k = 0; k < ids.numel(); ++k) {
          const int64_t id = ids[k].item<int64_t>();
          top.push_back({{"token", TokenText(*tok, id)},
                         {"id", id},
                         {"score", values[k].item<double>()}});
        }
        // The text with this mask replaced by the best token.
        const size_t at = row.text.find(mask_text, cursor);
        if (at != std::string::npos) {
          filled += row.text.substr(cursor, at - cursor) +
                    top[0]["token"].get<std::string>();
          cursor = at + mask_text.size();
        }
        tokens.push_back(std::move(top));
      }
      filled += row.text.substr(cursor);
      out.push_back({{"text", filled}, {"tokens", tokens}});
    }
    return out;
  }

 private:
  // A token as text, without WordPiece's continuation marker or spaces.
  static std::string TokenText(const Tokenizer& tok, int64_t id) {
    std::string s = tok.Decode({id}, false);
    if (s.rfind("##", 0) == 0) s.erase(0, 2);
    while (!s.empty() && s.front() == ' ') s.erase(0, 1);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
  }

  static absl::StatusOr<LmRows> ReadText(const std::string& path,
                                         const std::string& name,
                                         const LmColumns& columns) {
    ASSIGN_OR_RETURN(LmRows rows, ReadLmRows(path, name, columns,
                                             /*for_prediction=*/true));
    if (rows.format != LmFormat::kText) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": masked-lm reads raw text ({\"", columns.text,
                       "\": ...} rows or a .txt file), not ",
                       LmFormatName(rows.format), " rows"));
    }
    return rows;
  }

  TaskBatch Collate(const std::vector<TokenizedText>& f,
                    const std::vector<size_t>& indices,
                    const torch::Device& device,
                    torch::Generator* generator) const {
    const int64_t n = static_cast<int64_t>(indices.size());
    int64_t longest = 1, real = 0;
    for (size_t i : indices) {
      longest = std::max<int64_t>(longest, f[i].ids.size());
      real += static_cast<int64_t>(f[i].ids.size());
    }
    std::vector<int64_t> ids(n * longest, pad_id_), types(n * longest, 0),
        mask(n * longest, 0);
    std::vector<uint8_t> maskable(n * longest, 0);
    for (int64_t r = 0; r < n; ++r) {
      const TokenizedText& e = f[indices[r]];
      for (size_t c = 0; c < e.ids.size(); ++c) {
        const int64_t at = r * longest + static_cast<int64_t>(c);
        ids[at] = e.ids[c];
        types[at] = c < e.type_ids.size() ? e.type_ids[c] : 0;
        mask[at] = 1;
        const bool special =
            (c < e.special_mask.size() && e.special_mask[c] != 0) ||
            e.ids[c] == mask_id_;
        maskable[at] = special ? 0 : 1;
      }
    }
    auto make = [&](std::vector<int64_t>& v) {
      return torch::from_blob(v.data(), {n, longest}, torch::kLong).clone();
    };
    torch::Tensor can_mask =
        torch::from_blob(maskable.data(), {n, longest}, torch::kUInt8)
            .to(torch::kBool);
    MlmMasking m = MaskTokens(make(ids), can_mask, probability_, mask_id_,
                              vocab_size_, generator);
    TaskBatch b;
    b.inputs.input_ids = m.input_ids.to(device);
    b.inputs.attention_mask = make(mask).to(device);
    b.inputs.token_type_ids = make(types).to(device);
    b.targets["labels"] = m.labels.to(device);
    b.examples = n;
    b.tokens = real;
    return b;
  }

  const Tokenizer* tokenizer_ = nullptr;
  int64_t mask_id_ = 0, pad_id_ = 0, vocab_size_ = 1;
  double probability_ = 0.15;
  std::vector<TokenizedText> train_, val_;
};

}  // namespace

std::unique_ptr<Task> NewMaskedLmTask() {
  return std::make_unique<MaskedLmTask>();
}

}  // namespace tasks
}  // namespace lathe
