#include "worker/train/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/params.h"
#include "common/status.h"
#include "worker/data/dataset.h"
#include "worker/models/bert.h"
#include "worker/tasks/classification_metrics.h"
#include "worker/tokenizers/wordpiece.h"

namespace lathe {
namespace {

using Clock = std::chrono::steady_clock;

struct Features {
  std::vector<Encoding> encodings;
  std::vector<int64_t> labels;
};

struct Batch {
  torch::Tensor input_ids, token_type_ids, attention_mask, labels;
};

struct EvalResult {
  double accuracy = 0, f1 = 0, loss = 0;
  nlohmann::json ToJson() const {
    return {{"accuracy", accuracy}, {"f1", f1}, {"loss", loss}};
  }
};

absl::StatusOr<std::string> StringField(const nlohmann::json& j,
                                        const char* key, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec: missing field \"", key, "\""));
    }
    return std::string();
  }
  if (!j[key].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: field \"", key, "\" is not a string"));
  }
  return j[key].get<std::string>();
}

// Pads rows [begin, end) of `order` to the batch's longest row.
Batch Collate(const Features& f, const std::vector<size_t>& order, size_t begin,
              size_t end, int64_t pad_id, const torch::Device& device) {
  const int64_t n = static_cast<int64_t>(end - begin);
  int64_t longest = 1;
  for (size_t i = begin; i < end; ++i) {
    longest =
        std::max<int64_t>(longest, f.encodings[order[i]].input_ids.size());
  }
  std::vector<int64_t> ids(n * longest, pad_id), types(n * longest, 0),
      mask(n * longest, 0), labels(n);
  for (int64_t r = 0; r < n; ++r) {
    const Encoding& e = f.encodings[order[begin + r]];
    for (size_t c = 0; c < e.input_ids.size(); ++c) {
      ids[r * longest + c] = e.input_ids[c];
      types[r * longest + c] = e.token_type_ids[c];
      mask[r * longest + c] = 1;
    }
    labels[r] = f.labels[order[begin + r]];
  }
  auto make = [&](std::vector<int64_t>& v, std::vector<int64_t> shape) {
    return torch::from_blob(v.data(), shape, torch::kLong).clone().to(device);
  };
  Batch b;
  b.input_ids = make(ids, {n, longest});
  b.token_type_ids = make(types, {n, longest});
  b.attention_mask = make(mask, {n, longest});
  b.labels = make(labels, {n});
  return b;
}

EvalResult Evaluate(BertForSequenceClassification& model, const Features& f,
                    int64_t batch_size, int64_t pad_id,
                    const torch::Device& device, int64_t num_labels) {
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<size_t> order(f.encodings.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::vector<int64_t> predicted;
  predicted.reserve(order.size());
  double loss_sum = 0;
  for (size_t begin = 0; begin < order.size(); begin += batch_size) {
    const size_t end = std::min(order.size(), begin + batch_size);
    Batch b = Collate(f, order, begin, end, pad_id, device);
    torch::Tensor logits =
        model(b.input_ids, b.token_type_ids, b.attention_mask);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, b.labels,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(
                        torch::kSum))
                    .item<double>();
    torch::Tensor pred = logits.argmax(-1).to(torch::kCPU).contiguous();
    const int64_t* p = pred.data_ptr<int64_t>();
    predicted.insert(predicted.end(), p, p + pred.numel());
  }
  model->train();
  const ClassificationMetrics m =
      ComputeClassificationMetrics(predicted, f.labels, num_labels);
  EvalResult r;
  r.accuracy = m.accuracy;
  r.f1 = m.f1;
  r.loss = f.encodings.empty() ? 0 : loss_sum / f.encodings.size();
  return r;
}

// Hugging Face's linear schedule: warmup from 0, then linear decay to 0.
double LearningRate(int64_t step0, double base, int64_t warmup, int64_t total) {
  if (step0 < warmup) return base * step0 / std::max<int64_t>(1, warmup);
  return base * std::max(0.0, static_cast<double>(total - step0) /
                                  std::max<int64_t>(1, total - warmup));
}

std::string ResolveAssetsDir(const TrainSpec& spec) {
  if (!spec.assets_dir.empty()) return spec.assets_dir;
  if (const char* env = std::getenv("LATHE_ASSETS_DIR"); env && *env)
    return env;
  return ExecutableDir() + "/../assets";
}

// Writes a complete Hugging Face directory to `dir`.tmp, then renames it to
// `dir`, so a directory that exists under its final name is complete.
absl::Status WriteCheckpoint(BertForSequenceClassification& model,
                             const WordPieceTokenizer& tokenizer,
                             int64_t max_length, const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::remove_all(dir, ec);
  RETURN_IF_ERROR(MakeDirs(tmp));
  RETURN_IF_ERROR(SaveBertWeights(model, tmp));
  RETURN_IF_ERROR(WriteFileAtomic(
      tmp + "/vocab.txt", absl::StrJoin(tokenizer.vocab(), "\n") + "\n"));
  const nlohmann::json tokenizer_config = {{"do_lower_case", true},
                                           {"model_max_length", max_length},
                                           {"tokenizer_class", "BertTokenizer"},
                                           {"unk_token", "[UNK]"},
                                           {"sep_token", "[SEP]"},
                                           {"pad_token", "[PAD]"},
                                           {"cls_token", "[CLS]"},
                                           {"mask_token", "[MASK]"}};
  RETURN_IF_ERROR(WriteFileAtomic(tmp + "/tokenizer_config.json",
                                  tokenizer_config.dump(2) + "\n"));
  const nlohmann::json special = {{"unk_token", "[UNK]"},
                                  {"sep_token", "[SEP]"},
                                  {"pad_token", "[PAD]"},
                                  {"cls_token", "[CLS]"},
                                  {"mask_token", "[MASK]"}};
  RETURN_IF_ERROR(WriteFileAtomic(tmp + "/special_tokens_map.json",
                                  special.dump(2) + "\n"));
  fs::rename(tmp, dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("renaming ", tmp, " to ", dir, ": ", ec.message()));
  }
  return SyncParentDir(dir);
}

Features Featurize(const WordPieceTokenizer& tok,
                   const std::vector<Example>& rows,
                   const std::vector<std::string>& labels, int64_t max_length) {
  Features f;
  f.encodings.reserve(rows.size());
  for (const Example& ex : rows) {
    std::optional<std::string_view> pair;
    if (ex.text_pair.has_value()) pair = *ex.text_pair;
    f.encodings.push_back(tok.Encode(ex.text, pair, max_length));
  }
  f.labels = LabelIndices(rows, labels);
  return f;
}

void Shuffle(std::vector<size_t>& v, std::mt19937_64& rng) {
  // Fisher-Yates with a fixed reduction, identical on every standard library.
  for (size_t i = v.size(); i > 1; --i) {
    std::swap(v[i - 1], v[rng() % i]);
  }
}

absl::Status Train(const TrainSpec& spec, const std::string& out_dir,
                   const EventFn& emit) {
  auto log = [&](const std::string& message) {
    emit({{"type", "log"}, {"message", message}});
  };
  ASSIGN_OR_RETURN(const TrainParams params, ParseTrainParams(spec.params));
  if (spec.task != "text-classification") {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: task \"", spec.task,
                     "\" is not supported (text-classification)"));
  }
  // Data.
  const std::string train_name =
      spec.train_name.empty() ? spec.train_data : spec.train_name;
  ASSIGN_OR_RETURN(std::vector<Example> train_rows,
                   ReadExamples(spec.train_data, train_name));
  ASSIGN_OR_RETURN(const std::vector<std::string> labels,
                   LabelSet(train_rows, train_name));
  std::vector<Example> val_rows;
  if (!spec.validation_data.empty()) {
    const std::string val_name = spec.validation_name.empty()
                                     ? spec.validation_data
                                     : spec.validation_name;
    ASSIGN_OR_RETURN(val_rows, ReadExamples(spec.validation_data, val_name));
    RETURN_IF_ERROR(CheckLabels(val_rows, labels, val_name));
  } else if (params.validation_split > 0) {
    std::vector<size_t> order(train_rows.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::mt19937_64 split_rng(static_cast<uint64_t>(params.seed) ^
                              0x9E3779B97F4A7C15ull);
    Shuffle(order, split_rng);
    const size_t n_val =
        std::min(train_rows.size() - 1,
                 static_cast<size_t>(std::llround(params.validation_split *
                                                  train_rows.size())));
    std::vector<bool> is_val(train_rows.size(), false);
    for (size_t i = 0; i < n_val; ++i) is_val[order[i]] = true;
    std::vector<Example> kept;
    for (size_t i = 0; i < train_rows.size(); ++i) {
      (is_val[i] ? val_rows : kept).push_back(std::move(train_rows[i]));
    }
    train_rows = std::move(kept);
  }
  if (labels.size() < 2) {
    log(absl::StrCat("warning: the training data has a single label \"",
                     labels[0], "\""));
  }
  log(absl::StrCat("data: ", train_rows.size(), " training rows, ",
                   val_rows.size(), " validation rows, labels [",
                   absl::StrJoin(labels, ", "), "]"));

  // Model and tokenizer.
  torch::manual_seed(static_cast<uint64_t>(params.seed));
  const int64_t threads =
      params.num_threads > 0
          ? params.num_threads
          : std::max<int64_t>(1, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(threads));
  std::unique_ptr<WordPieceTokenizer> tokenizer;
  BertForSequenceClassification model{nullptr};
  if (spec.model_config.has_value()) {
    ASSIGN_OR_RETURN(tokenizer,
                     WordPieceTokenizer::FromVocabFile(spec.vocab_path));
    BertConfig config = *spec.model_config;
    config.id2label = labels;
    RETURN_IF_ERROR(config.Validate());
    model = BertForSequenceClassification(config);
  } else if (absl::StartsWith(spec.model, "preset:")) {
    ASSIGN_OR_RETURN(BertConfig config, BertConfig::Preset(spec.model));
    config.id2label = labels;
    const std::string vocab =
        ResolveAssetsDir(spec) + "/bert-base-uncased/vocab.txt";
    if (!PathExists(vocab)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the preset's vocabulary ", vocab,
          " is missing; run the asset preparation (tools/prepare_assets.js) "
          "or set LATHE_ASSETS_DIR"));
    }
    ASSIGN_OR_RETURN(tokenizer, WordPieceTokenizer::FromVocabFile(vocab));
    model = BertForSequenceClassification(config);
    log(absl::StrCat("model: ", spec.model, " (random initialisation, seed ",
                     params.seed, ")"));
  } else {
    if (spec.model.empty() || !std::filesystem::is_directory(spec.model)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown model \"", spec.model,
                       "\": expected preset:bert-tiny, preset:bert-mini or a "
                       "model directory"));
    }
    const std::string vocab = spec.model + "/vocab.txt";
    if (!PathExists(vocab)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model directory ", spec.model,
          " has no vocab.txt (only WordPiece BERT tokenizers are supported)"));
    }
    ASSIGN_OR_RETURN(tokenizer, WordPieceTokenizer::FromVocabFile(vocab));
    ASSIGN_OR_RETURN(model, LoadBertForClassification(spec.model, labels, log));
    log(absl::StrCat("model: loaded ", spec.model));
  }
  const BertConfig& config = model->config();
  if (tokenizer->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the vocabulary has ", tokenizer->vocab_size(),
        " tokens but the model's vocab_size is ", config.vocab_size));
  }

  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(spec.device.empty() ? "cpu" : spec.device);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec: device \"", spec.device, "\" is not \"cpu\" or \"cuda:N\""));
  }
  if (device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", spec.device,
                       " requested but CUDA is not available to this LibTorch "
                       "build or machine"));
    }
    if (device.has_index() &&
        device.index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", spec.device, " does not exist (",
                       torch::cuda::device_count(), " CUDA devices)"));
    }
  } else if (!device.is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: device \"", spec.device, "\" is not supported"));
  }
  model->to(device);
  model->train();
  log(absl::StrCat("device: ", device.str(), ", threads: ", threads));

  const int64_t max_length =
      std::min(params.max_seq_length, config.max_position_embeddings);
  const Features train = Featurize(*tokenizer, train_rows, labels, max_length);
  const Features val = Featurize(*tokenizer, val_rows, labels, max_length);
  const int64_t n_train = static_cast<int64_t>(train.encodings.size());
  const int64_t steps_per_epoch =
      (n_train + params.batch_size - 1) / params.batch_size;
  int64_t total_steps = params.epochs * steps_per_epoch;
  if (params.max_steps > 0)
    total_steps = std::min(total_steps, params.max_steps);
  const int64_t warmup_steps =
      static_cast<int64_t>(std::ceil(params.warmup_ratio * total_steps));

  // Biases and LayerNorm weights are not decayed (as in Hugging Face).
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& item : model->named_parameters()) {
    if (absl::EndsWith(item.key(), ".bias") ||
        absl::StrContains(item.key(), "LayerNorm.")) {
      no_decay.push_back(item.value());
    } else {
      decay.push_back(item.value());
    }
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(params.learning_rate)
                              .weight_decay(params.weight_decay)
                              .eps(1e-8)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(params.learning_rate)
                              .weight_decay(0.0)
                              .eps(1e-8)));
  torch::optim::AdamW optimizer(
      groups, torch::optim::AdamWOptions(params.learning_rate));
  std::vector<torch::Tensor> all_params = model->parameters();
  log(absl::StrCat("training: ", total_steps, " steps (", steps_per_epoch,
                   " per epoch), warmup ", warmup_steps, ", max_length ",
                   max_length));

  std::mt19937_64 rng(static_cast<uint64_t>(params.seed));
  std::vector<size_t> order(n_train);
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  double loss_since_report = 0;
  int64_t steps_since_report = 0;
  double steady_seconds = 0;  // Training-step time after the first step.
  int64_t steady_samples = 0;
  double first_step_seconds = 0;
  int64_t first_step_samples = 0;
  int64_t step = 0;
  size_t cursor = order.size();  // Forces a shuffle before the first step.
  while (step < total_steps) {
    const auto t0 = Clock::now();
    if (cursor >= order.size()) {
      Shuffle(order, rng);
      cursor = 0;
    }
    const size_t end = std::min(order.size(), cursor + params.batch_size);
    Batch b = Collate(train, order, cursor, end, tokenizer->pad_id(), device);
    const int64_t samples = static_cast<int64_t>(end - cursor);
    cursor = end;
    const double lr =
        LearningRate(step, params.learning_rate, warmup_steps, total_steps);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    optimizer.zero_grad();
    torch::Tensor logits =
        model(b.input_ids, b.token_type_ids, b.attention_mask);
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits, b.labels);
    loss.backward();
    if (params.max_grad_norm > 0) {
      torch::nn::utils::clip_grad_norm_(all_params, params.max_grad_norm);
    }
    optimizer.step();
    const double loss_value = loss.item<double>();
    ++step;
    const double seconds =
        std::chrono::duration<double>(Clock::now() - t0).count();
    if (step == 1) {
      first_step_seconds = seconds;
      first_step_samples = samples;
    } else {
      steady_seconds += seconds;
      steady_samples += samples;
    }
    if (!std::isfinite(loss_value)) {
      return absl::InternalError(absl::StrCat("training diverged at step ",
                                              step, " (loss ", loss_value,
                                              "); try a lower learning_rate"));
    }
    loss_since_report += loss_value;
    ++steps_since_report;

    if (step == 1 || step % params.logging_steps == 0 || step == total_steps) {
      const double sps =
          steady_samples > 0
              ? steady_samples / std::max(1e-9, steady_seconds)
              : first_step_samples / std::max(1e-9, first_step_seconds);
      const double sec_per_step =
          step > 1 ? steady_seconds / (step - 1) : first_step_seconds;
      emit({{"type", "train"},
            {"step", step},
            {"total_steps", total_steps},
            {"epoch", static_cast<double>(step) / steps_per_epoch},
            {"loss", loss_since_report / steps_since_report},
            {"learning_rate", lr},
            {"samples_per_second", sps},
            {"eta_seconds", sec_per_step * (total_steps - step)}});
      loss_since_report = 0;
      steps_since_report = 0;
    }
    const bool last = step == total_steps;
    nlohmann::json metrics = nlohmann::json::object();
    if (!val.encodings.empty() &&
        (last || (params.eval_steps > 0 && step % params.eval_steps == 0))) {
      const EvalResult r =
          Evaluate(model, val, params.batch_size, tokenizer->pad_id(), device,
                   static_cast<int64_t>(labels.size()));
      metrics = r.ToJson();
      emit({{"type", "eval"}, {"step", step}, {"metrics", metrics}});
    }
    if (last || (params.save_steps > 0 && step % params.save_steps == 0)) {
      const std::string dir = absl::StrCat(out_dir, "/checkpoint-", step);
      RETURN_IF_ERROR(WriteCheckpoint(model, *tokenizer, max_length, dir));
      emit({{"type", "checkpoint"},
            {"step", step},
            {"dir", dir},
            {"final", last},
            {"metrics", metrics}});
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TrainSpec> TrainSpec::FromJson(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: invalid JSON: ", e.what()));
  }
  if (!j.is_object())
    return absl::InvalidArgumentError("spec: not a JSON object");
  TrainSpec s;
  ASSIGN_OR_RETURN(s.job_id, StringField(j, "job_id", false));
  ASSIGN_OR_RETURN(s.task, StringField(j, "task", false));
  if (s.task.empty()) s.task = "text-classification";
  ASSIGN_OR_RETURN(s.model, StringField(j, "model", true));
  ASSIGN_OR_RETURN(s.train_data, StringField(j, "train_data", true));
  ASSIGN_OR_RETURN(s.train_name, StringField(j, "train_name", false));
  ASSIGN_OR_RETURN(s.validation_data, StringField(j, "validation_data", false));
  ASSIGN_OR_RETURN(s.validation_name, StringField(j, "validation_name", false));
  ASSIGN_OR_RETURN(s.device, StringField(j, "device", false));
  if (s.device.empty()) s.device = "cpu";
  ASSIGN_OR_RETURN(s.assets_dir, StringField(j, "assets_dir", false));
  if (j.contains("params") && !j["params"].is_null()) {
    if (!j["params"].is_object()) {
      return absl::InvalidArgumentError("spec: \"params\" is not an object");
    }
    for (auto it = j["params"].begin(); it != j["params"].end(); ++it) {
      if (it.value().is_string()) {
        s.params[it.key()] = it.value().get<std::string>();
      } else if (it.value().is_number()) {
        s.params[it.key()] = it.value().dump();
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("spec: params[", it.key(), "] is not a string"));
      }
    }
  }
  return s;
}

absl::Status RunTraining(const TrainSpec& spec, const std::string& out_dir,
                         const EventFn& emit) {
  try {
    RETURN_IF_ERROR(MakeDirs(out_dir));
    return Train(spec, out_dir, emit);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("error: ", e.what()));
  }
}

int ExitCodeForStatus(const absl::Status& status) {
  if (status.ok()) return 0;
  if (status.code() == absl::StatusCode::kInvalidArgument ||
      status.code() == absl::StatusCode::kNotFound) {
    return 2;
  }
  return 1;
}

}  // namespace lathe
