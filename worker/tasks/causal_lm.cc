// causal-lm: supervised fine-tuning on prompt/completion or chat rows (the
// loss on the completion only by default) and continued pre-training on raw
// text, with GPT-2 and Llama-family LM heads; predictions generate text.
// Data layout: worker/tasks/lm_data.h.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/models/recompute.h"
#include "worker/tasks/lm_data.h"
#include "worker/tasks/lm_metrics.h"
#include "worker/tasks/lm_tasks.h"
#include "worker/tasks/packed_data.h"
#include "worker/tasks/task_factories.h"

namespace lathe {

torch::Tensor CausalLmLoss(const torch::Tensor& logits,
                           const torch::Tensor& labels) {
  const int64_t v = logits.size(-1);
  torch::Tensor shift_logits =
      logits.slice(1, 0, logits.size(1) - 1).reshape({-1, v}).to(torch::kFloat);
  torch::Tensor shift_labels = labels.slice(1, 1).reshape({-1});
  if ((shift_labels != kIgnoreLabel).sum().item<int64_t>() == 0) {
    return logits.sum() * 0;
  }
  return torch::nn::functional::cross_entropy(
      shift_logits, shift_labels,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(
          kIgnoreLabel));
}

torch::Tensor ProjectedLmLoss(TaskModelImpl& model, const torch::Tensor& states,
                              const torch::Tensor& targets,
                              int64_t max_logits) {
  namespace F = torch::nn::functional;
  auto summed = F::CrossEntropyFuncOptions().reduction(torch::kSum);
  const int64_t n = states.size(0);
  const int64_t vocab = std::max<int64_t>(1, model.config().vocab_size);
  const int64_t chunk = std::max<int64_t>(1, max_logits / vocab);
  if (n <= chunk) {
    return F::cross_entropy(model.ProjectHidden(states).to(torch::kFloat),
                            targets, summed) /
           static_cast<double>(n);
  }
  TaskModelImpl* m = &model;
  torch::Tensor total;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    torch::Tensor t = targets.slice(0, begin, end);
    auto part = [m, t, summed](const torch::Tensor& x) {
      return F::cross_entropy(m->ProjectHidden(x).to(torch::kFloat), t, summed);
    };
    torch::Tensor x = states.slice(0, begin, end);
    torch::Tensor s =
        RecordingGradients() ? RecomputeInBackward(part, x) : part(x);
    total = total.defined() ? total + s : s;
  }
  return total / static_cast<double>(n);
}

torch::Tensor ChunkedCausalLmLoss(TaskModelImpl& model,
                                  const torch::Tensor& hidden,
                                  const torch::Tensor& labels,
                                  int64_t max_logits) {
  const int64_t h = hidden.size(-1);
  torch::Tensor states =
      hidden.slice(1, 0, hidden.size(1) - 1).reshape({-1, h});
  torch::Tensor targets = labels.slice(1, 1).reshape({-1});
  torch::Tensor keep = (targets != kIgnoreLabel).nonzero().squeeze(1);
  if (keep.numel() == 0) return hidden.sum() * 0;
  return ProjectedLmLoss(model, states.index_select(0, keep),
                         targets.index_select(0, keep), max_logits);
}

torch::Tensor SequenceLogProbs(const torch::Tensor& logits,
                               const torch::Tensor& labels) {
  const int64_t n = logits.size(0), t = logits.size(1), v = logits.size(-1);
  torch::Tensor shift = logits.slice(1, 0, t - 1).reshape({-1, v});
  torch::Tensor targets = labels.slice(1, 1).reshape({-1});
  torch::Tensor labelled = targets != kIgnoreLabel;
  torch::Tensor token = -torch::nn::functional::cross_entropy(
      shift.to(torch::kFloat), targets.masked_fill(~labelled, 0),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  return (token * labelled.to(torch::kFloat)).view({n, t - 1}).sum(1);
}

torch::Tensor ProjectedSequenceLogProbs(TaskModelImpl& model,
                                        const torch::Tensor& hidden,
                                        const torch::Tensor& labels,
                                        int64_t max_logits) {
  namespace F = torch::nn::functional;
  const int64_t n = hidden.size(0), t = hidden.size(1), h = hidden.size(-1);
  torch::Tensor states = hidden.slice(1, 0, t - 1).reshape({-1, h});
  torch::Tensor targets = labels.slice(1, 1).reshape({-1});
  torch::Tensor keep = (targets != kIgnoreLabel).nonzero().squeeze(1);
  torch::Tensor sums = torch::zeros({n}, hidden.options().dtype(torch::kFloat));
  if (keep.numel() == 0) return sums + hidden.sum().to(torch::kFloat) * 0;
  states = states.index_select(0, keep);
  targets = targets.index_select(0, keep);
  const int64_t count = keep.numel();
  const int64_t vocab = std::max<int64_t>(1, model.config().vocab_size);
  const int64_t chunk = std::max<int64_t>(1, max_logits / vocab);
  auto none = F::CrossEntropyFuncOptions().reduction(torch::kNone);
  TaskModelImpl* m = &model;
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < count; begin += chunk) {
    const int64_t end = std::min(count, begin + chunk);
    torch::Tensor y = targets.slice(0, begin, end);
    auto part = [m, y, none](const torch::Tensor& x) {
      return -F::cross_entropy(m->ProjectHidden(x).to(torch::kFloat), y, none);
    };
    torch::Tensor x = states.slice(0, begin, end);
    parts.push_back(count > chunk && RecordingGradients()
                        ? RecomputeInBackward(part, x)
                        : part(x));
  }
  torch::Tensor rows = torch::floor_divide(keep, t - 1);
  return sums.index_add(0, rows, torch::cat(parts));
}

TaskBatch CollateLmExamples(const std::vector<const LmExample*>& rows,
                            int64_t pad_id, const torch::Device& device) {
  const int64_t n = static_cast<int64_t>(rows.size());
  int64_t longest = 1, real = 0;
  for (const LmExample* e : rows) {
    longest = std::max<int64_t>(longest, e->ids.size());
    real += static_cast<int64_t>(e->ids.size());
  }
  std::vector<int64_t> ids(n * longest, pad_id), mask(n * longest, 0),
      labels(n * longest, kIgnoreLabel);
  for (int64_t r = 0; r < n; ++r) {
    const LmExample& e = *rows[r];
    for (size_t c = 0; c < e.ids.size(); ++c) {
      ids[r * longest + c] = e.ids[c];
      labels[r * longest + c] = e.labels[c];
      mask[r * longest + c] = 1;
    }
  }
  auto make = [&](std::vector<int64_t>& v) {
    return torch::from_blob(v.data(), {n, longest}, torch::kLong)
        .clone()
        .to(device);
  };
  TaskBatch b;
  b.inputs.input_ids = make(ids);
  b.inputs.attention_mask = make(mask);
  b.targets["labels"] = make(labels);
  b.examples = n;
  b.tokens = real;
  return b;
}

DpoTerms DpoLoss(const torch::Tensor& policy_chosen,
                 const torch::Tensor& policy_rejected,
                 const torch::Tensor& reference_chosen,
                 const torch::Tensor& reference_rejected, double beta) {
  torch::Tensor chosen = (policy_chosen - reference_chosen) * beta;
  torch::Tensor rejected = (policy_rejected - reference_rejected) * beta;
  DpoTerms out;
  out.loss = -torch::nn::functional::logsigmoid(chosen - rejected).mean();
  out.chosen_rewards = chosen.detach();
  out.rejected_rewards = rejected.detach();
  return out;
}

namespace {

// Uniform double in [0, 1) from 53 bits, the same on every platform.
double Uniform(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

int64_t Sample(const torch::Tensor& logits_cpu, const GenerationOptions& o,
               std::mt19937_64& rng) {
  const int64_t n = logits_cpu.numel();
  const float* l = logits_cpu.data_ptr<float>();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = o.top_k > 0 ? std::min<int64_t>(o.top_k, n) : n;
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int64_t a, int64_t b) {
                      return l[a] > l[b] || (l[a] == l[b] && a < b);
                    });
  order.resize(k);
  const double top = l[order[0]] / o.temperature;
  std::vector<double> p(k);
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    p[i] = std::exp(l[order[i]] / o.temperature - top);
    sum += p[i];
  }
  // Nucleus: the most likely tokens until their mass reaches top_p (at
  // least one).
  int64_t keep = k;
  if (o.top_p < 1) {
    double cum = 0;
    for (int64_t i = 0; i < k; ++i) {
      cum += p[i] / sum;
      if (cum >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_sum = 0;
  for (int64_t i = 0; i < keep; ++i) kept_sum += p[i];
  double u = Uniform(rng) * kept_sum;
  for (int64_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u < 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace

std::vector<int64_t> GenerateTokens(TaskModelImpl& model,
                                    const std::vector<int64_t>& prompt,
                                    const GenerationOptions& options,
                                    const torch::Device& device) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> seq = prompt;
  std::vector<int64_t> out;
  std::mt19937_64 rng(options.seed);
  const int64_t max_positions = model.config().max_position_embeddings;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    if (seq.empty() || static_cast<int64_t>(seq.size()) >= max_positions) {
      break;
    }
    const int64_t t = static_cast<int64_t>(seq.size());
    ModelInputs in;
    in.input_ids = torch::tensor(seq, torch::kLong).view({1, t}).to(device);
    in.attention_mask = torch::ones({1, t}, torch::kLong).to(device);
    torch::Tensor last = model.forward(in)[0][t - 1]
                             .to(torch::kCPU)
                             .to(torch::kFloat)
                             .contiguous();
    int64_t next;
    if (options.temperature <= 0) {
      next = last.argmax().item<int64_t>();
    } else {
      next = Sample(last, options, rng);
    }
    if (options.eos_id.has_value() && next == *options.eos_id) break;
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

namespace tasks {
namespace {

bool IsDecoder(Architecture a) {
  return a == Architecture::kGpt2 || a == Architecture::kLlama;
}

class CausalLmTask : public Task {
 public:
  std::string name() const override { return "causal-lm"; }
  HeadKind head() const override { return HeadKind::kCausalLm; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "causal-lm needs a model with a tokenizer");
    }
    if (context.model_config != nullptr &&
        !IsDecoder(context.model_config->architecture)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "causal-lm needs a decoder model (GPT-2, Llama, Mistral, Qwen2); ",
          context.model_config->model_type,
          " is an encoder: use masked-lm to adapt it to text"));
    }
    tokenizer_ = context.tokenizer;
    pad_id_ = PadId(*tokenizer_);
    const TrainParams& params = *context.params;
    const LmColumns columns = LmColumnsFromParams(params);
    if (context.max_length < 2) {
      return absl::InvalidArgumentError("causal-lm needs max_seq_length >= 2");
    }
    ASSIGN_OR_RETURN(LmRows train,
                     ReadLmRows(data.train_path, data.train_name, columns,
                                /*for_prediction=*/false));
    format_ = train.format;
    LmRows val;
    val.format = train.format;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(val, ReadLmRows(data.validation_path,
                                       data.validation_name, columns, false));
    } else if (params.validation_split > 0) {
      auto [kept, held] =
          HoldOut(train.rows.size(), params.validation_split, params.seed);
      std::vector<LmRow> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train.rows[i]));
      for (size_t i : held) val.rows.push_back(std::move(train.rows[i]));
      train.rows = std::move(kept_rows);
    }
    std::unique_ptr<ChatFormatter> chat;
    if (train.format == LmFormat::kChat || val.format == LmFormat::kChat) {
      ASSIGN_OR_RETURN(chat, ChatFormatter::ForTokenizer(*tokenizer_));
      if (context.log) {
        context.log(chat->uses_template()
                        ? "chat rows are rendered with the tokenizer's chat "
                          "template"
                        : "the tokenizer has no chat template: chat rows use "
                          "Lathe's default format");
      }
    }
    const bool completion_only = params.completion_only_loss != 0;
    ASSIGN_OR_RETURN(train_, Featurize(train, data.train_name, chat.get(),
                                       context, completion_only));
    ASSIGN_OR_RETURN(
        val_, Featurize(val,
                        data.validation_name.empty() ? data.train_name
                                                     : data.validation_name,
                        chat.get(), context, completion_only));
    if (params.packing != 0) Pack(context);
    if (context.log) {
      context.log(absl::StrCat(
          "data: ", train_.size(), " training rows, ", val_.size(),
          " validation rows (", LmFormatName(format_), "; loss on ",
          format_ == LmFormat::kText || !completion_only ? "every token"
                                                         : "completions only",
          ")"));
    }
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* /*config*/) const override {}

  // With packing, a training feature is a pack of rows.
  int64_t train_size() const override {
    return packed() ? packs_.size() : train_.size();
  }
  int64_t train_rows() const override { return train_.size(); }
  std::vector<int64_t> train_lengths() const override {
    std::vector<int64_t> out;
    if (packed()) {
      for (const auto& pack : packs_) out.push_back(PackLength(pack));
      return out;
    }
    out.reserve(train_.size());
    for (const auto& f : train_) out.push_back(f.ids.size());
    return out;
  }
  int64_t validation_size() const override { return val_.size(); }
  nlohmann::json Signature() const override {
    return {{"task", "causal-lm"}, {"format", LmFormatName(format_)}};
  }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    TaskBatch b = packed() ? CollatePacks(indices, device)
                           : Collate(train_, indices, device);
    // CausalLmLoss averages over the labelled next tokens.
    b.loss_units = (b.targets.at("labels").slice(1, 1) != kIgnoreLabel)
                       .sum()
                       .item<int64_t>();
    return b;
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    return CausalLmLoss(output, batch.targets.at("labels"));
  }

  // The same mean as Loss, projecting onto the vocabulary only at labelled
  // positions and, past kMaxLmLogits logits, a chunk at a time.
  torch::Tensor TrainLoss(TaskModelImpl& model,
                          const TaskBatch& batch) const override {
    if (!model.has_lm_head()) return Loss(model.forward(batch.inputs), batch);
    return ChunkedCausalLmLoss(model, model.ForwardHidden(batch.inputs),
                               batch.targets.at("labels"), kMaxLmLogits);
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    double loss_sum = 0;
    int64_t count = 0, correct = 0;
    std::vector<size_t> indices;
    for (size_t begin = 0; begin < val_.size(); begin += batch_size) {
      const size_t end =
          std::min(val_.size(), begin + static_cast<size_t>(batch_size));
      indices.clear();
      for (size_t i = begin; i < end; ++i) indices.push_back(i);
      TaskBatch b = Collate(val_, indices, device);
      // Hidden states at the labelled positions, projected onto the
      // vocabulary kMaxLmLogits logits at a time.
      torch::Tensor hidden = model.ForwardHidden(b.inputs);
      const int64_t h = hidden.size(-1);
      torch::Tensor lab = b.targets.at("labels").slice(1, 1).reshape({-1});
      torch::Tensor keep = (lab != kIgnoreLabel).nonzero().squeeze(1);
      const int64_t n = keep.numel();
      if (n == 0) continue;
      torch::Tensor states = hidden.slice(1, 0, hidden.size(1) - 1)
                                 .reshape({-1, h})
                                 .index_select(0, keep);
      lab = lab.index_select(0, keep);
      const int64_t chunk = std::max<int64_t>(
          1, kMaxLmLogits / std::max<int64_t>(1, model.config().vocab_size));
      for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        const int64_t c1 = std::min(n, c0 + chunk);
        torch::Tensor logits =
            model.ProjectHidden(states.slice(0, c0, c1)).to(torch::kFloat);
        torch::Tensor t = lab.slice(0, c0, c1);
        loss_sum +=
            torch::nn::functional::cross_entropy(
                logits, t,
                torch::nn::functional::CrossEntropyFuncOptions().reduction(
                    torch::kSum))
                .item<double>();
        correct += (logits.argmax(-1) == t).sum().item<int64_t>();
      }
      count += n;
    }
    const double loss = count > 0 ? loss_sum / count : 0.0;
    return nlohmann::json{
        {"loss", loss},
        {"perplexity", Perplexity(loss)},
        {"token_accuracy",
         count > 0 ? static_cast<double>(correct) / count : 0.0},
        {"eval_tokens", count}};
  }

  std::string default_metric() const override { return "loss"; }

  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError("the model has no tokenizer");
    }
    if (model.head() != HeadKind::kCausalLm) {
      return absl::InvalidArgumentError(
          "causal-lm predictions need a model with a causal LM head");
    }
    const TrainParams defaults;
    const TrainParams& params =
        context.params != nullptr ? *context.params : defaults;
    ASSIGN_OR_RETURN(LmRows rows,
                     ReadLmRows(path, display_name, LmColumnsFromParams(params),
                                /*for_prediction=*/true));
    std::unique_ptr<ChatFormatter> chat;
    if (rows.format == LmFormat::kChat) {
      ASSIGN_OR_RETURN(chat, ChatFormatter::ForTokenizer(*context.tokenizer));
    }
    GenerationOptions options;
    options.max_new_tokens = params.max_new_tokens;
    options.temperature = params.temperature;
    options.top_k = params.top_k;
    options.top_p = params.top_p;
    options.eos_id = context.tokenizer->eos_id();
    // Room for the reply inside the model's positions.
    const int64_t prompt_budget = std::max<int64_t>(
        1, model.config().max_position_embeddings - params.max_new_tokens);
    std::vector<nlohmann::json> out;
    for (size_t r = 0; r < rows.rows.size(); ++r) {
      const LmRow& row = rows.rows[r];
      absl::StatusOr<std::vector<int64_t>> prompt = EncodeLmPrompt(
          *context.tokenizer, chat.get(), rows.format, row, prompt_budget);
      if (!prompt.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            display_name, ":", row.line, ": ", prompt.status().message()));
      }
      if (prompt->empty()) {
        // Nothing to condition on (an empty prompt without BOS).
        out.push_back({{"text", ""}});
        continue;
      }
      options.seed = static_cast<uint64_t>(params.seed) + r;
      std::vector<int64_t> ids;
      try {
        ids = GenerateTokens(model, *prompt, options, device);
      } catch (const std::exception& e) {
        return absl::InternalError(
            absl::StrCat("generation failed: ", e.what()));
      }
      out.push_back({{"text", context.tokenizer->Decode(ids, true)}});
    }
    return out;
  }

 private:
  using Examples = std::vector<LmExample>;

  bool packed() const { return !packs_.empty(); }

  int64_t PackLength(const std::vector<size_t>& pack) const {
    int64_t n = 0;
    for (size_t i : pack) n += static_cast<int64_t>(train_[i].ids.size());
    return n;
  }

  void Pack(const TaskContext& context) {
    std::vector<int64_t> lengths;
    lengths.reserve(train_.size());
    for (const auto& f : train_) lengths.push_back(f.ids.size());
    packs_ = PackRows(lengths, context.max_length);
    if (!context.log) return;
    int64_t tokens = 0;
    for (int64_t l : lengths) tokens += l;
    const int64_t room =
        static_cast<int64_t>(packs_.size()) * context.max_length;
    context.log(absl::StrCat(
        "packing: ", train_.size(), " training rows into ", packs_.size(),
        " sequences of up to ", context.max_length, " tokens (",
        room > 0 ? (100 * tokens) / room : 0,
        "% filled); attention and positions stay within each row"));
  }

  // Packs `indices` of packs_ as rows of one batch: each pack's rows end to
  // end, positions restarting at 0 for each row, segment ids 1, 2, ... per
  // row (0 for padding), and no label on a row's first token (the previous
  // token belongs to another row; alone, that token is never predicted
  // either).
  TaskBatch CollatePacks(const std::vector<size_t>& indices,
                         const torch::Device& device) const {
    const int64_t n = static_cast<int64_t>(indices.size());
    int64_t longest = 1, real = 0, rows = 0;
    for (size_t p : indices) {
      longest = std::max(longest, PackLength(packs_[p]));
      rows += static_cast<int64_t>(packs_[p].size());
    }
    std::vector<int64_t> ids(n * longest, pad_id_), mask(n * longest, 0),
        labels(n * longest, kIgnoreLabel), positions(n * longest, 0),
        segments(n * longest, 0);
    for (int64_t r = 0; r < n; ++r) {
      int64_t at = r * longest;
      int64_t segment = 0;
      for (size_t i : packs_[indices[r]]) {
        const LmExample& e = train_[i];
        ++segment;
        for (size_t c = 0; c < e.ids.size(); ++c, ++at) {
          ids[at] = e.ids[c];
          labels[at] = c == 0 ? kIgnoreLabel : e.labels[c];
          mask[at] = 1;
          positions[at] = static_cast<int64_t>(c);
          segments[at] = segment;
        }
        real += static_cast<int64_t>(e.ids.size());
      }
    }
    auto make = [&](std::vector<int64_t>& v) {
      return torch::from_blob(v.data(), {n, longest}, torch::kLong)
          .clone()
          .to(device);
    };
    TaskBatch b;
    b.inputs.input_ids = make(ids);
    b.inputs.attention_mask = make(mask);
    b.inputs.position_ids = make(positions);
    b.inputs.segment_ids = make(segments);
    b.targets["labels"] = make(labels);
    b.examples = rows;
    b.tokens = real;
    return b;
  }

  absl::StatusOr<Examples> Featurize(const LmRows& rows,
                                     const std::string& name,
                                     const ChatFormatter* chat,
                                     const TaskContext& context,
                                     bool completion_only) const {
    Examples out;
    int64_t untrained = 0;
    for (const LmRow& row : rows.rows) {
      absl::StatusOr<LmExample> ex =
          EncodeLmExample(*tokenizer_, chat, rows.format, row,
                          context.max_length, completion_only);
      if (!ex.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ":", row.line, ": ", ex.status().message()));
      }
      // Only labels after the first position are predicted.
      bool any = false;
      for (size_t i = 1; i < ex->labels.size(); ++i) {
        any = any || ex->labels[i] != kIgnoreLabel;
      }
      if (!any) ++untrained;
      out.push_back(*std::move(ex));
    }
    if (untrained > 0 && context.log) {
      context.log(absl::StrCat(
          "warning: ", name, ": ", untrained,
          " rows have no completion token left within max_seq_length ",
          context.max_length, " and do not train"));
    }
    return out;
  }

  TaskBatch Collate(const Examples& f, const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    std::vector<const LmExample*> rows;
    rows.reserve(indices.size());
    for (size_t i : indices) rows.push_back(&f[i]);
    return CollateLmExamples(rows, pad_id_, device);
  }

  const Tokenizer* tokenizer_ = nullptr;
  int64_t pad_id_ = 0;
  LmFormat format_ = LmFormat::kText;
  Examples train_, val_;
  std::vector<std::vector<size_t>> packs_;  // Empty unless packing.
};

}  // namespace

std::unique_ptr<Task> NewCausalLmTask() {
  return std::make_unique<CausalLmTask>();
}

}  // namespace tasks
}  // namespace lathe
