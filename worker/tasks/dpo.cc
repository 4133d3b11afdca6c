// Preference tuning of causal-lm with Direct Preference Optimization
// (params.method dpo or dpo-lora): rows of a prompt with a chosen and a
// rejected reply (preference_data.h), the loss of DpoLoss (lm_tasks.h)
// against the summed log-probabilities the starting model gives each reply.
// Those reference log-probabilities are computed once, before the first
// step (BeforeTraining), with the starting model in eval mode and float32,
// so no second copy of the model is held during training; checkpoints carry
// them (dpo_reference.safetensors) for a resumed run. Predictions generate
// text as causal-lm does.
#include <algorithm>
#include <chrono>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "worker/tasks/lm_data.h"
#include "worker/tasks/lm_tasks.h"
#include "worker/tasks/preference_data.h"
#include "worker/tasks/task_factories.h"

namespace lathe {
namespace tasks {
namespace {

bool IsDecoder(Architecture a) {
  return a == Architecture::kGpt2 || a == Architecture::kLlama;
}

// A pair's two encoded replies.
struct Pair {
  LmExample chosen, rejected;
};

class DpoTask : public Task {
 public:
  std::string name() const override { return "causal-lm"; }
  HeadKind head() const override { return HeadKind::kCausalLm; }

  absl::Status Prepare(const TaskData& data,
                       const TaskContext& context) override {
    if (context.tokenizer == nullptr) {
      return absl::InvalidArgumentError(
          "preference tuning needs a model with a tokenizer");
    }
    if (context.model_config != nullptr &&
        !IsDecoder(context.model_config->architecture)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "params[method]: preference tuning needs a decoder model (GPT-2, "
          "Llama, Mistral, Qwen2); ",
          context.model_config->model_type, " is an encoder"));
    }
    if (context.max_length < 2) {
      return absl::InvalidArgumentError(
          "preference tuning needs max_seq_length >= 2");
    }
    tokenizer_ = context.tokenizer;
    pad_id_ = PadId(*tokenizer_);
    const TrainParams& params = *context.params;
    beta_ = params.dpo_beta;
    batch_size_ = params.batch_size;
    log_ = context.log;
    const PreferenceColumns columns = PreferenceColumnsFromParams(params);
    ASSIGN_OR_RETURN(
        std::vector<PreferenceRow> train,
        ReadPreferenceRows(data.train_path, data.train_name, columns));
    std::vector<PreferenceRow> val;
    if (!data.validation_path.empty()) {
      ASSIGN_OR_RETURN(val, ReadPreferenceRows(data.validation_path,
                                               data.validation_name, columns));
    } else if (params.validation_split > 0) {
      auto [kept, held] =
          HoldOut(train.size(), params.validation_split, params.seed);
      std::vector<PreferenceRow> kept_rows;
      for (size_t i : kept) kept_rows.push_back(std::move(train[i]));
      for (size_t i : held) val.push_back(std::move(train[i]));
      train = std::move(kept_rows);
    }
    bool any_chat = false;
    for (const auto* rows : {&train, &val}) {
      for (const PreferenceRow& r : *rows) {
        any_chat = any_chat || r.format == LmFormat::kChat;
      }
    }
    std::unique_ptr<ChatFormatter> chat;
    if (any_chat) {
      ASSIGN_OR_RETURN(chat, ChatFormatter::ForTokenizer(*tokenizer_));
      if (context.log) {
        context.log(chat->uses_template()
                        ? "chat rows are rendered with the tokenizer's chat "
                          "template"
                        : "the tokenizer has no chat template: chat rows use "
                          "Lathe's default format");
      }
    }
    ASSIGN_OR_RETURN(train_,
                     Featurize(train, data.train_name, chat.get(), context));
    ASSIGN_OR_RETURN(
        val_, Featurize(val,
                        data.validation_name.empty() ? data.train_name
                                                     : data.validation_name,
                        chat.get(), context));
    if (context.log) {
      context.log(absl::StrCat(
          "data: ", train_.size(), " training pairs, ", val_.size(),
          " validation pairs (preference rows; DPO with beta ", beta_,
          ", each batch holds batch_size pairs, so twice as many sequences)"));
    }
    return absl::OkStatus();
  }

  void ConfigureModel(ModelConfig* /*config*/) const override {}

  int64_t train_size() const override { return train_.size(); }
  int64_t validation_size() const override { return val_.size(); }
  std::vector<int64_t> train_lengths() const override {
    std::vector<int64_t> out;
    out.reserve(train_.size());
    for (const Pair& p : train_) {
      out.push_back(static_cast<int64_t>(
          std::max(p.chosen.ids.size(), p.rejected.ids.size())));
    }
    return out;
  }
  nlohmann::json Signature() const override {
    return {{"task", "causal-lm"}, {"format", "preference"}};
  }

  absl::Status BeforeTraining(TaskModelImpl& model, const torch::Device& device,
                              const std::string& resume_from) override {
    if (!resume_from.empty()) return ReadReference(resume_from);
    const auto start = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(Score(model, train_, device, &train_reference_));
    RETURN_IF_ERROR(Score(model, val_, device, &val_reference_));
    if (log_) {
      log_(absl::StrCat(
          "dpo: the starting model scored ", train_.size(), " training and ",
          val_.size(), " validation pairs as the reference in ",
          absl::SixDigits(std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - start)
                              .count()),
          " s"));
    }
    return absl::OkStatus();
  }

  // The reference log-probabilities, so that a resumed run goes on against
  // the model the run started from, not the checkpoint's.
  absl::Status WriteTrainingFiles(const std::string& dir) const override {
    std::vector<TensorView> views;
    for (const auto& [name, values] :
         {std::pair<const char*, const std::vector<float>*>{"train",
                                                            &train_reference_},
          {"validation", &val_reference_}}) {
      TensorView v;
      v.name = name;
      v.dtype = "F32";
      v.shape = {static_cast<int64_t>(values->size())};
      v.data = values->data();
      v.nbytes = values->size() * sizeof(float);
      views.push_back(v);
    }
    return WriteSafetensors(dir + "/" + kReferenceFile, views,
                            {{"format", "lathe-dpo-reference"}});
  }

  TaskBatch TrainBatch(const std::vector<size_t>& indices,
                       const torch::Device& device,
                       torch::Generator* /*generator*/) const override {
    return Collate(train_, train_reference_, indices, device);
  }

  torch::Tensor Loss(const torch::Tensor& output,
                     const TaskBatch& batch) const override {
    return Terms(SequenceLogProbs(output, batch.targets.at("labels")), batch)
        .loss;
  }

  torch::Tensor TrainLoss(TaskModelImpl& model,
                          const TaskBatch& batch) const override {
    return Terms(LogProbs(model, batch), batch).loss;
  }

  absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const override {
    double loss_sum = 0, chosen_sum = 0, rejected_sum = 0;
    int64_t wins = 0;
    std::vector<size_t> indices;
    for (size_t begin = 0; begin < val_.size(); begin += batch_size) {
      const size_t end =
          std::min(val_.size(), begin + static_cast<size_t>(batch_size));
      indices.clear();
      for (size_t i = begin; i < end; ++i) indices.push_back(i);
      TaskBatch b = Collate(val_, val_reference_, indices, device);
      DpoTerms t = Terms(LogProbs(model, b), b);
      const double n = static_cast<double>(indices.size());
      loss_sum += t.loss.item<double>() * n;
      chosen_sum += t.chosen_rewards.sum().item<double>();
      rejected_sum += t.rejected_rewards.sum().item<double>();
      wins += (t.chosen_rewards > t.rejected_rewards).sum().item<int64_t>();
    }
    const double n = static_cast<double>(std::max<size_t>(1, val_.size()));
    return nlohmann::json{{"loss", loss_sum / n},
                          {"reward_accuracy", wins / n},
                          {"reward_margin", (chosen_sum - rejected_sum) / n},
                          {"chosen_reward", chosen_sum / n},
                          {"rejected_reward", rejected_sum / n},
                          {"eval_pairs", static_cast<int64_t>(val_.size())}};
  }

  std::string default_metric() const override { return "loss"; }
  bool greater_is_better(const std::string& metric) const override {
    return metric != "loss" && metric != "rejected_reward";
  }

  // A preference-tuned model generates as any causal-lm model does.
  absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const override {
    return NewCausalLmTask()->Predict(model, path, display_name, context,
                                      device);
  }

 private:
  using Pairs = std::vector<Pair>;

  // Policy log-probabilities [2B] of a collated batch.
  torch::Tensor LogProbs(TaskModelImpl& model, const TaskBatch& b) const {
    const torch::Tensor& labels = b.targets.at("labels");
    if (!model.has_lm_head()) {
      return SequenceLogProbs(model.forward(b.inputs), labels);
    }
    return ProjectedSequenceLogProbs(model, model.ForwardHidden(b.inputs),
                                     labels, kMaxLmLogits);
  }

  DpoTerms Terms(const torch::Tensor& logps, const TaskBatch& b) const {
    const torch::Tensor& ref = b.targets.at("reference_logps");
    const int64_t n = logps.size(0) / 2;
    return DpoLoss(logps.slice(0, 0, n), logps.slice(0, n), ref.slice(0, 0, n),
                   ref.slice(0, n), beta_);
  }

  static constexpr char kReferenceFile[] = "dpo_reference.safetensors";

  absl::Status ReadReference(const std::string& resume_from) {
    const std::string path = resume_from + "/" + kReferenceFile;
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(path);
    if (!file.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "resume_from ", resume_from, ": ", kReferenceFile,
          " (the reference log-probabilities of a DPO run) cannot be read: ",
          file.status().message()));
    }
    for (const auto& [name, pairs, out] :
         {std::tuple<const char*, size_t, std::vector<float>*>{
              "train", train_.size(), &train_reference_},
          {"validation", val_.size(), &val_reference_}}) {
      const SafetensorsFile::Tensor* t = (*file)->Find(name);
      if (t == nullptr || t->dtype != "F32" || t->shape.size() != 1 ||
          t->shape[0] != static_cast<int64_t>(2 * pairs)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": \"", name,
                         "\" must hold 2 float32 values for each of the ",
                         pairs, " ", name, " pairs"));
      }
      const float* data = reinterpret_cast<const float*>(t->data);
      out->assign(data, data + 2 * pairs);
    }
    if (log_) {
      log_(absl::StrCat("dpo: reference log-probabilities read from ",
                        kReferenceFile, " (scored by the starting model)"));
    }
    return absl::OkStatus();
  }

  // The starting model's log-probabilities of each pair's replies, chosen
  // then rejected, in float32 without autocast.
  absl::Status Score(TaskModelImpl& model, const Pairs& pairs,
                     const torch::Device& device,
                     std::vector<float>* out) const {
    out->assign(2 * pairs.size(), 0.f);
    const std::vector<float> none(2 * pairs.size(), 0.f);
    std::vector<size_t> indices;
    const size_t step = static_cast<size_t>(std::max<int64_t>(1, batch_size_));
    try {
      for (size_t begin = 0; begin < pairs.size(); begin += step) {
        const size_t end = std::min(pairs.size(), begin + step);
        indices.clear();
        for (size_t i = begin; i < end; ++i) indices.push_back(i);
        TaskBatch b = Collate(pairs, none, indices, device);
        torch::Tensor logps =
            LogProbs(model, b).to(torch::kCPU).to(torch::kFloat).contiguous();
        const int64_t n = static_cast<int64_t>(indices.size());
        const float* p = logps.data_ptr<float>();
        for (int64_t k = 0; k < n; ++k) {
          (*out)[2 * indices[k]] = p[k];
          (*out)[2 * indices[k] + 1] = p[n + k];
        }
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("dpo: scoring pairs with the reference model: ",
                       e.what_without_backtrace()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Pairs> Featurize(const std::vector<PreferenceRow>& rows,
                                  const std::string& name,
                                  const ChatFormatter* chat,
                                  const TaskContext& context) const {
    Pairs out;
    int64_t dropped = 0;
    for (const PreferenceRow& row : rows) {
      Pair pair;
      for (const auto& [lm_row, example] :
           {std::pair<const LmRow*, LmExample*>{&row.chosen, &pair.chosen},
            {&row.rejected, &pair.rejected}}) {
        absl::StatusOr<LmExample> ex =
            EncodeLmExample(*tokenizer_, chat, row.format, *lm_row,
                            context.max_length, /*completion_only=*/true);
        if (!ex.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, ":", row.line, ": ", ex.status().message()));
        }
        *example = *std::move(ex);
      }
      if (!Scored(pair.chosen) || !Scored(pair.rejected)) {
        ++dropped;
        continue;
      }
      out.push_back(std::move(pair));
    }
    if (dropped > 0 && context.log) {
      context.log(absl::StrCat(
          "warning: ", name, ": ", dropped,
          " pairs have a reply with no token left within max_seq_length ",
          context.max_length, " and are left out"));
    }
    return out;
  }

  // Whether a reply has a labelled token after the first position.
  static bool Scored(const LmExample& e) {
    for (size_t i = 1; i < e.labels.size(); ++i) {
      if (e.labels[i] != kIgnoreLabel) return true;
    }
    return false;
  }

  // Pairs `indices` as 2B rows, the chosen replies then the rejected ones,
  // padded to the longest; targets "labels" and "reference_logps" [2B].
  TaskBatch Collate(const Pairs& pairs, const std::vector<float>& reference,
                    const std::vector<size_t>& indices,
                    const torch::Device& device) const {
    const int64_t n = static_cast<int64_t>(indices.size());
    std::vector<const LmExample*> rows;
    std::vector<float> ref;
    for (int side = 0; side < 2; ++side) {
      for (size_t i : indices) {
        rows.push_back(side == 0 ? &pairs[i].chosen : &pairs[i].rejected);
        ref.push_back(reference[2 * i + side]);
      }
    }
    TaskBatch b = CollateLmExamples(rows, pad_id_, device);
    b.targets["reference_logps"] =
        torch::from_blob(ref.data(), {2 * n}, torch::kFloat).clone().to(device);
    b.examples = n;  // Pairs.
    return b;
  }

  const Tokenizer* tokenizer_ = nullptr;
  int64_t pad_id_ = 0;
  double beta_ = 0.1;
  int64_t batch_size_ = 8;
  LogFn log_;
  Pairs train_, val_;
  // Two per pair (chosen, rejected), set by BeforeTraining.
  std::vector<float> train_reference_, val_reference_;
};

}  // namespace

std::unique_ptr<Task> NewDpoTask() { return std::make_unique<DpoTask>(); }

}  // namespace tasks
}  // namespace lathe
