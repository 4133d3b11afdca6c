#include "worker/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <pthread.h>
#include <signal.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/params.h"
#include "common/status.h"
#include "worker/models/model.h"
#include "worker/tasks/task.h"
#include "worker/tokenizers/tokenizer.h"
#include "worker/train/adamw.h"
#include "worker/train/autocast.h"
#include "worker/train/batch_order.h"
#include "worker/train/checkpoint_writer.h"
#include "worker/train/device.h"
#include "worker/train/distributed.h"
#include "worker/train/evaluate.h"
#include "worker/train/method.h"
#include "worker/train/model_source.h"
#include "worker/train/optimizer.h"
#include "worker/train/predict.h"
#include "worker/train/progress.h"
#include "worker/train/resume.h"
#include "worker/train/tensorboard.h"
#include "worker/train/trainer_state.h"

namespace lathe {
namespace {

using Clock = std::chrono::steady_clock;

// Set by RequestCheckpoint() (possibly from a signal handler), consumed at a
// step boundary.
std::atomic<bool> g_checkpoint_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free,
              "the SIGUSR1 handler needs a lock-free flag");

void OnCheckpointSignal(int /*signo*/) { RequestCheckpoint(); }

// params.freeze_feature_encoder for a speech model: its convolutional
// feature encoder keeps its weights when the job says so, or (auto) when
// training starts from a checkpoint rather than a random initialisation.
// Decided from the job's own model, so a resumed run decides the same.
void FreezeFeatureEncoder(TaskModelImpl& model, const TrainSpec& spec,
                          const TrainParams& params, const LogFn& log) {
  const std::string& setting = params.freeze_feature_encoder;
  const bool random_start =
      spec.model_config.has_value() || absl::StartsWith(spec.model, "preset:");
  const bool freeze = setting == "true" || (setting == "auto" && !random_start);
  int64_t frozen = 0;
  for (const auto& item : model.named_parameters()) {
    if (!absl::StartsWith(item.key(), "wav2vec2.feature_extractor.")) continue;
    if (freeze && item.value().requires_grad()) {
      item.value().set_requires_grad(false);
      frozen += item.value().numel();
    }
  }
  if (freeze) {
    log(absl::StrCat("feature encoder frozen (freeze_feature_encoder=", setting,
                     setting == "auto" ? ": a pre-trained start" : "",
                     "): ", frozen, " parameters keep their weights"));
  } else if (setting == "auto") {
    log("feature encoder trained (freeze_feature_encoder=auto: a random "
        "start must learn its features)");
  }
}

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

bool IsOutOfMemoryMessage(absl::string_view m) {
  return absl::StrContains(m, "out of memory") ||
         absl::StrContains(m, "not enough memory");
}

// Token types reach BERT only, the one family here whose Hugging Face class
// embeds them for every tokenizer.
void DropUnusedInputs(const TaskModelImpl& model, ModelInputs* in) {
  if (model.config().architecture != Architecture::kBert) {
    in->token_type_ids = torch::Tensor();
  }
}

// The number of optimizer steps and their rows.
struct Schedule {
  int64_t rows_per_step = 0;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  int64_t warmup_steps = 0;
};

Schedule MakeSchedule(const TrainParams& params, int64_t n_train) {
  Schedule s;
  s.rows_per_step = params.batch_size * params.gradient_accumulation_steps;
  s.steps_per_epoch = (n_train + s.rows_per_step - 1) / s.rows_per_step;
  s.total_steps = params.epochs * s.steps_per_epoch;
  if (params.max_steps > 0) {
    s.total_steps = std::min(s.total_steps, params.max_steps);
  }
  s.warmup_steps =
      static_cast<int64_t>(std::ceil(params.warmup_ratio * s.total_steps));
  return s;
}

// Where a run stands in its data: the epoch, the epoch's row order and how
// many rows of it have been trained on.
struct DataPosition {
  int64_t epoch = -1;
  std::vector<size_t> order;
  size_t cursor = 0;
};

// One optimizer step over up to gradient_accumulation_steps micro-batches
// from `position`, never past the end of the epoch. Each micro-batch's loss
// is weighted by its share of the step's rows. With `dp`, each rank trains
// on its slice of every micro-batch, weighted also by its share of what the
// micro-batch's loss averages over (rows or labelled tokens, summed over
// the ranks), the gradients are summed over the ranks, and with `owners`
// (zero_stage=1) each rank steps the parameters it owns and broadcasts
// them. Fills every field of the result but `seconds`; samples, tokens and
// the loss are the whole gang's.
StepStats TrainStep(Task& task, TaskModel& model, TrainingOptimizer& optimizer,
                    const TrainParams& params, const torch::Device& device,
                    int64_t step, int64_t rows_per_step, DataPosition& position,
                    DataParallel* dp, const std::vector<int>* owners) {
  StepStats stats;
  const int rank = dp != nullptr ? dp->rank() : 0;
  const int world = dp != nullptr ? dp->world_size() : 1;
  if (dp != nullptr) {
    // Dropout draws from (seed, step, rank): ranks differ, and a resumed
    // run draws what the interrupted one would have, with no generator
    // state to gather from every rank.
    torch::manual_seed(Mix64(Mix64(static_cast<uint64_t>(params.seed)) ^
                             static_cast<uint64_t>(step) * 2654435761ull ^
                             (static_cast<uint64_t>(rank) + 1) << 40));
  }
  // Undefined rather than zeroed gradients: every step, the first after a
  // resume included, then computes them the same way.
  for (torch::Tensor& p : optimizer.trainable) {
    p.mutable_grad() = torch::Tensor();
  }
  const std::vector<size_t>& order = position.order;
  size_t& cursor = position.cursor;
  const size_t step_end =
      std::min(order.size(), cursor + static_cast<size_t>(rows_per_step));
  const double step_rows = static_cast<double>(step_end - cursor);
  while (cursor < step_end) {
    const size_t end =
        std::min(step_end, cursor + static_cast<size_t>(params.batch_size));
    const auto [begin, stop] = SplitRows(cursor, end, rank, world);
    // This micro-batch's share of the step.
    const double share = static_cast<double>(end - cursor) / step_rows;
    cursor = end;
    TaskBatch b;
    if (begin < stop) {
      std::vector<size_t> indices(order.begin() + begin, order.begin() + stop);
      // Per-step randomness (masking) from (seed, step, first row): the
      // same after a resume, without generator state to carry.
      torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(
          Mix64(Mix64(static_cast<uint64_t>(params.seed)) ^
                static_cast<uint64_t>(step) * 1315423911ull ^ begin));
      const auto data_start = Clock::now();
      b = task.TrainBatch(indices, device, &gen);
      DropUnusedInputs(*model, &b.inputs);
      stats.data_seconds +=
          std::chrono::duration<double>(Clock::now() - data_start).count();
    }
    // The rank's part of the micro-batch's loss: its share of what the loss
    // averages over (rows, or labelled tokens), summed over the ranks.
    double part = 1.0;
    if (dp != nullptr) {
      const double units = begin == stop ? 0.0
                           : b.loss_units > 0
                               ? static_cast<double>(b.loss_units)
                               : static_cast<double>(stop - begin);
      const double total = dp->SumScalars({units})[0];
      part = total > 0 ? units / total : 0.0;
    }
    if (begin == stop) continue;  // More ranks than rows left.
    if (b.inputs.input_ids.defined()) {
      stats.padded += b.inputs.input_ids.numel();
    }
    torch::Tensor loss;
    {
      Bf16Autocast autocast(params.bf16 != 0, device);
      loss = task.TrainLoss(*model, b);
    }
    const double weight = part * share;
    (loss * weight).backward();
    stats.loss += loss.item<double>() * weight;
    stats.samples += b.examples;
    stats.tokens += b.tokens;
  }
  if (dp != nullptr) {
    dp->AllReduceGradients(optimizer.trainable);
    const std::vector<double> sums = dp->SumScalars(
        {stats.loss, static_cast<double>(stats.samples),
         static_cast<double>(stats.tokens), static_cast<double>(stats.padded)});
    stats.loss = sums[0];
    stats.samples = static_cast<int64_t>(sums[1]);
    stats.tokens = static_cast<int64_t>(sums[2]);
    stats.padded = static_cast<int64_t>(sums[3]);
  }
  if (params.max_grad_norm > 0) {
    torch::nn::utils::clip_grad_norm_(optimizer.trainable,
                                      params.max_grad_norm);
  }
  if (owners != nullptr) {
    // Another rank steps these and sends them after the step.
    for (size_t i = 0; i < optimizer.trainable.size(); ++i) {
      if ((*owners)[i] != rank) {
        optimizer.trainable[i].mutable_grad() = torch::Tensor();
      }
    }
  }
  AdamWStep(*optimizer.adamw);
  if (owners != nullptr) dp->BroadcastOwned(optimizer.trainable, *owners);
  return stats;
}

absl::Status Train(const TrainSpec& spec, const std::string& out_dir,
                   const EventFn& report) {
  // Every scalar reported also goes to the run's TensorBoard event file,
  // which each checkpoint carries a copy of (tensorboard.h).
  ASSIGN_OR_RETURN(EventLog scalars, EventLog::Open(out_dir, spec.resume_from));
  absl::Status scalars_status;
  // In a data-parallel gang rank 0 speaks for all; the others report
  // nothing (their failures reach the agent through their exit codes).
  const bool lead = spec.distributed.rank == 0;
  const EventFn emit = [&](const nlohmann::json& event) {
    if (!lead) return;
    if (scalars_status.ok()) scalars_status = scalars.AddEvent(event);
    report(event);
  };
  auto log = [&](const std::string& message) {
    emit({{"type", "log"}, {"message", message}});
  };
  ASSIGN_OR_RETURN(TrainParams params, ParseTrainParams(spec.params));
  // A preset starts from random weights: unless the job sets a learning
  // rate, it trains at the preset's own.
  std::string learning_rate_note;
  if (spec.params.count("learning_rate") == 0 &&
      absl::StartsWith(spec.model, "preset:")) {
    auto preset = FindPreset(spec.model);
    if (preset.ok() && preset->default_learning_rate > 0) {
      params.learning_rate = preset->default_learning_rate;
      learning_rate_note = absl::StrCat(
          "learning_rate ", params.learning_rate, ": ", spec.model,
          "'s default for its random start (set learning_rate to change it)");
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Task> task,
                   CreateTrainingTask(spec.task, params));
  const bool resuming = !spec.resume_from.empty();
  TrainerState resume;
  if (resuming) {
    ASSIGN_OR_RETURN(resume, ReadTrainerState(spec.resume_from));
    RETURN_IF_ERROR(CheckResumeParams(spec.resume_from, resume, params));
  }

  // Model source and tokenizer, then the data (which the task reads with
  // the tokenizer), then the model with the task's head.
  torch::manual_seed(static_cast<uint64_t>(params.seed));
  // Data-parallel CPU ranks on one machine share its cores.
  const int64_t local_ranks = spec.distributed.local_ranks > 0
                                  ? spec.distributed.local_ranks
                                  : spec.distributed.world_size;
  const int64_t threads =
      params.num_threads > 0
          ? params.num_threads
          : std::max<int64_t>(
                1, static_cast<int64_t>(std::thread::hardware_concurrency()) /
                       (spec.device == "cpu" ? local_ranks : 1));
  torch::set_num_threads(static_cast<int>(threads));
  ASSIGN_OR_RETURN(ModelSource source, ResolveModel(spec, params));
  const int64_t max_length = MaxLength(source.config, params);
  TaskData data;
  data.train_path = spec.train_data;
  data.train_name = spec.train_name.empty() ? spec.train_data : spec.train_name;
  data.validation_path = spec.validation_data;
  data.validation_name = spec.validation_name.empty() ? spec.validation_data
                                                      : spec.validation_name;
  TaskContext context;
  context.params = &params;
  context.tokenizer = source.tokenizer.get();
  context.model_config = &source.config;
  context.max_length = max_length;
  context.log = log;
  const auto prepare_start = Clock::now();
  RETURN_IF_ERROR(task->Prepare(data, context));
  const double prepare_seconds =
      std::chrono::duration<double>(Clock::now() - prepare_start).count();
  // Tokenization happens once, here; batches are then cut from the cached
  // features. The figures let users (and the benchmark) see its cost.
  const std::vector<int64_t> lengths = task->train_lengths();
  int64_t train_tokens = 0;
  for (int64_t l : lengths) train_tokens += l;
  log(absl::StrCat(
      "data prepared in ", absl::SixDigits(prepare_seconds), " s (",
      task->train_size(), " training features",
      lengths.empty() ? "" : absl::StrCat(", ", train_tokens, " tokens"), ")"));
  if (params.group_by_length != 0 && lengths.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("params[group_by_length]: task ", task->name(),
                     " has rows of one size; leave it at 0"));
  }
  ASSIGN_OR_RETURN(const std::string train_sha,
                   DataFingerprint(spec.train_data));
  const nlohmann::json signature = task->Signature();
  std::vector<std::string> labels;
  {
    ModelConfig configured = source.config;
    task->ConfigureModel(&configured);
    labels = configured.id2label;
  }
  if (resuming) {
    RETURN_IF_ERROR(CheckResumeData(spec.resume_from, resume, labels,
                                    task->train_size(), train_sha,
                                    data.train_name, log));
  }
  TaskModel model;
  if (source.load_dir.empty()) {
    ModelConfig config = source.config;
    task->ConfigureModel(&config);
    RETURN_IF_ERROR(config.Validate());
    ASSIGN_OR_RETURN(model, CreateModel(config, task->head()));
  } else {
    auto loaded = LoadModel(source.load_dir, task->head(), labels, log);
    if (!loaded.ok()) {
      return loaded.status().code() == absl::StatusCode::kNotFound
                 ? absl::InvalidArgumentError(loaded.status().message())
                 : loaded.status();
    }
    model = *std::move(loaded);
  }
  task->ConfigureModel(model->mutable_config());
  model->mutable_config()->original["finetuning_task"] = task->name();
  if (!learning_rate_note.empty()) log(learning_rate_note);
  log(absl::StrCat("model: ", source.description, " (",
                   model->architecture_class(), ")"));
  const Tokenizer* tokenizer = source.tokenizer.get();
  if (tokenizer != nullptr &&
      tokenizer->vocab_size() > model->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer has ", tokenizer->vocab_size(),
        " tokens but the model's vocab_size is ", model->config().vocab_size));
  }

  ASSIGN_OR_RETURN(const torch::Device device, TrainingDevice(spec.device));
  if (params.bf16 != 0) {
    log(absl::StrCat("bf16 autocast on ", device.str(),
                     ": forward and loss in bfloat16 where LibTorch's "
                     "autocast allows, weights, gradients and optimizer "
                     "state in float32; evaluation in float32"));
  }
  RETURN_IF_ERROR(ApplyTrainingMethod(*model, params, log));
  if (model->config().architecture == Architecture::kWav2Vec2) {
    FreezeFeatureEncoder(*model, spec, params, log);
  }
  if (params.gradient_checkpointing != 0) {
    if (!model->SetGradientCheckpointing(true)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "params[gradient_checkpointing]: ", model->architecture_class(),
          " has no transformer layers to checkpoint"));
    }
    log("gradient checkpointing: each layer's activations are recomputed "
        "in the backward pass");
  }
  model->to(device);
  std::unique_ptr<DataParallel> dp;
  if (spec.distributed.world_size > 1) {
    ASSIGN_OR_RETURN(dp, DataParallel::Connect(spec.distributed, device));
    // Every rank starts from rank 0's weights, whatever each initialised.
    std::vector<torch::Tensor> state;
    for (const auto& p : model->parameters()) state.push_back(p);
    for (const auto& b : model->buffers()) state.push_back(b);
    dp->Broadcast(state, 0);
    log(absl::StrCat("data parallel: ", dp->world_size(), " processes (",
                     dp->backend(), "), global batch ", params.batch_size,
                     " rows split by rank",
                     params.zero_stage != 0
                         ? ", AdamW moments sharded across ranks (zero_stage=1)"
                         : ""));
    if (params.batch_size < dp->world_size()) {
      log(absl::StrCat("warning: batch_size ", params.batch_size,
                       " is below the ", dp->world_size(),
                       " processes; some ranks idle every micro-batch"));
    }
  } else if (params.zero_stage != 0) {
    log("zero_stage=1 shards optimizer state across data-parallel "
        "processes; with one process it changes nothing");
  }
  {
    model->eval();
    torch::NoGradGuard no_grad;
    RETURN_IF_ERROR(task->BeforeTraining(*model, device, spec.resume_from));
  }
  model->train();
  log(absl::StrCat("device: ", device.str(), ", threads: ", threads));

  const int64_t n_train = task->train_size();
  if (n_train == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(data.train_name, ": no training examples"));
  }
  const Schedule schedule = MakeSchedule(params, n_train);
  const int64_t total_steps = schedule.total_steps;
  if (resuming) {
    RETURN_IF_ERROR(CheckResumeSchedule(spec.resume_from, resume, total_steps,
                                        schedule.steps_per_epoch,
                                        schedule.warmup_steps, max_length));
  }

  TrainingOptimizer optimizer = BuildOptimizer(*model, params);
  // zero_stage=1: which rank keeps each parameter's moments.
  std::vector<int> owners;
  if (dp != nullptr && params.zero_stage != 0) {
    owners = ShardOwners(optimizer.trainable, dp->world_size());
  }
  const std::vector<int>* shard = owners.empty() ? nullptr : &owners;
  if (shard != nullptr) {
    // AdamW keeps two float32 moments per trainable element.
    std::vector<int64_t> elements(static_cast<size_t>(dp->world_size()), 0);
    for (size_t i = 0; i < owners.size(); ++i) {
      elements[static_cast<size_t>(owners[i])] +=
          optimizer.trainable[i].numel();
    }
    std::vector<std::string> per_rank;
    for (int64_t n : elements) {
      per_rank.push_back(absl::StrFormat("%.1f MiB", n * 8.0 / 1048576));
    }
    log(absl::StrCat(
        "AdamW moments per rank: ", absl::StrJoin(per_rank, ", "),
        absl::StrFormat(" (unsharded: %.1f MiB on every rank)",
                        optimizer.trainable_count * 8.0 / 1048576)));
  }
  log(absl::StrCat("training: ", total_steps, " steps (",
                   schedule.steps_per_epoch, " per epoch",
                   params.gradient_accumulation_steps > 1
                       ? absl::StrCat(", ", params.gradient_accumulation_steps,
                                      " micro-batches each")
                       : std::string(),
                   "), warmup ", schedule.warmup_steps, ", ",
                   params.lr_scheduler_type, " schedule",
                   // Image and audio models read no tokens.
                   source.tokenizer != nullptr
                       ? absl::StrCat(", max_length ", max_length)
                       : std::string(),
                   ", method ", params.method, ", trainable parameters ",
                   optimizer.trainable_count, " of ", optimizer.total_count));

  TrainingEvaluator evaluator(*task, params);
  TrainProgress progress;
  int64_t step = 0;
  DataPosition position;
  auto epoch_order = [&](int64_t e) {
    std::vector<size_t> o = EpochOrder(params.seed, e, n_train);
    if (params.group_by_length != 0) {
      GroupByLength(o, lengths, static_cast<size_t>(params.batch_size),
                    50 * static_cast<size_t>(schedule.rows_per_step),
                    params.seed, e);
    }
    return o;
  };
  if (resuming) {
    RETURN_IF_ERROR(RestoreTrainingState(spec.resume_from, resume, model,
                                         *optimizer.adamw, device, log));
    if (shard != nullptr) {
      DropForeignMoments(*optimizer.adamw, optimizer.trainable, owners,
                         dp->rank());
    }
    const int64_t world = dp != nullptr ? dp->world_size() : 1;
    if (resume.world_size != world) {
      log(absl::StrCat(
          "resuming on ", world, " process", world == 1 ? "" : "es",
          " a run trained on ", resume.world_size,
          ": the same global batches, but the gradient sums and dropout "
          "draws differ, so the result is close to, not bitwise, the "
          "uninterrupted run's"));
    }
    step = resume.global_step;
    position.epoch = resume.epoch;
    position.order = epoch_order(position.epoch);
    position.cursor = static_cast<size_t>(resume.position);
    progress.Resume(resume.loss_since_report, resume.steps_since_report);
    log(absl::StrCat("resumed from checkpoint at step ", step));
  }

  TrainerState snapshot;
  snapshot.total_steps = total_steps;
  snapshot.steps_per_epoch = schedule.steps_per_epoch;
  snapshot.warmup_steps = schedule.warmup_steps;
  snapshot.train_rows = n_train;
  snapshot.validation_rows = task->validation_size();
  snapshot.train_data_sha256 = train_sha;
  snapshot.max_length = max_length;
  snapshot.labels = labels;
  snapshot.device = device.str();
  snapshot.world_size = dp != nullptr ? dp->world_size() : 1;
  // Early stopping as rank 0 decided it (every rank follows).
  bool gang_stop = false;
  auto stopped_early = [&] {
    return dp != nullptr ? gang_stop : evaluator.stop_early();
  };
  snapshot.params = params;
  // Evaluates when due, then writes a checkpoint (Hugging Face files plus the
  // training state) when due or requested. Draws nothing from any generator.
  auto after_step = [&](bool requested) -> absl::Status {
    const bool last = step == total_steps || stopped_early();
    nlohmann::json metrics = nlohmann::json::object();
    if (lead) {
      ASSIGN_OR_RETURN(metrics, evaluator.MaybeEvaluate(model, device, step,
                                                        last, emit, log));
    }
    if (dp != nullptr) {
      // Only rank 0 evaluates and receives "checkpoint now".
      const std::vector<int64_t> flags =
          dp->Flags({requested ? 1 : 0, evaluator.stop_early() ? 1 : 0});
      requested = flags[0] != 0;
      gang_stop = flags[1] != 0;
    }
    const bool final_step = last || stopped_early();
    if (!(final_step || requested ||
          (params.save_steps > 0 && step % params.save_steps == 0))) {
      return absl::OkStatus();
    }
    if (shard != nullptr) {
      // The checkpoint holds every parameter's moments: rank 0 gathers
      // them from their owners, writes, and lets go of them again.
      GatherMoments(*dp, *optimizer.adamw, optimizer.trainable, owners);
    }
    if (!lead) return absl::OkStatus();
    TrainerState state = snapshot;
    state.global_step = step;
    const bool epoch_done = position.cursor >= position.order.size();
    state.epoch = epoch_done ? position.epoch + 1 : position.epoch;
    state.position = epoch_done ? 0 : static_cast<int64_t>(position.cursor);
    state.loss_since_report = progress.loss_since_report();
    state.steps_since_report = progress.steps_since_report();
    const std::string dir = absl::StrCat(out_dir, "/checkpoint-", step);
    RETURN_IF_ERROR(WriteTrainingCheckpoint(
        model, tokenizer, params, spec.model, *optimizer.adamw, device, state,
        dir,
        [&](const std::string& tmp) { return task->WriteTrainingFiles(tmp); }));
    if (shard != nullptr) {
      DropForeignMoments(*optimizer.adamw, optimizer.trainable, owners, 0);
    }
    RETURN_IF_ERROR(scalars_status);
    RETURN_IF_ERROR(scalars.CopyInto(dir));
    nlohmann::json event = {
        {"type", "checkpoint"},
        {"step", step},
        {"dir", dir},
        {"final", final_step},
        {"metrics", metrics},
        {"metric_for_best_model", evaluator.best_metric()},
        {"greater_is_better", evaluator.greater_is_better()}};
    if (requested) event["requested"] = true;
    emit(event);
    return absl::OkStatus();
  };
  if (resuming && step == total_steps) {
    // The interrupted attempt had finished: report its final checkpoint again.
    RETURN_IF_ERROR(after_step(g_checkpoint_requested.exchange(false)));
  }

  while (step < total_steps && !stopped_early()) {
    const auto t0 = Clock::now();
    if (position.cursor >= position.order.size()) {
      ++position.epoch;
      position.order = epoch_order(position.epoch);
      position.cursor = 0;
    }
    const double lr =
        LearningRate(params.lr_scheduler_type, step, params.learning_rate,
                     schedule.warmup_steps, total_steps);
    SetLearningRate(*optimizer.adamw, lr);
    StepStats stats =
        TrainStep(*task, model, optimizer, params, device, step,
                  schedule.rows_per_step, position, dp.get(), shard);
    ++step;
    stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!std::isfinite(stats.loss)) {
      return absl::InternalError(absl::StrCat("training diverged at step ",
                                              step, " (loss ", stats.loss,
                                              "); try a lower learning_rate"));
    }
    progress.AddStep(stats);
    if (step == 1 || step % params.logging_steps == 0 || step == total_steps) {
      nlohmann::json event =
          progress.TakeEvent(step, total_steps, schedule.steps_per_epoch, lr);
      if (step == 1) {
        event["prepare_seconds"] = prepare_seconds;
        if (train_tokens > 0) event["train_tokens"] = train_tokens;
      }
      emit(event);
    }
    RETURN_IF_ERROR(after_step(g_checkpoint_requested.exchange(false)));
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
  ASSIGN_OR_RETURN(s.resume_from, StringField(j, "resume_from", false));
  if (j.contains("distributed")) {
    ASSIGN_OR_RETURN(s.distributed,
                     DistributedSpec::FromJson(j["distributed"]));
  }
  ASSIGN_OR_RETURN(s.mode, StringField(j, "mode", false));
  if (s.mode.empty()) s.mode = "train";
  if (s.mode != "train" && s.mode != "predict") {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: mode \"", s.mode, "\" is not train or predict"));
  }
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
  absl::Status status;
  try {
    status = MakeDirs(out_dir);
    if (status.ok()) {
      status = spec.mode == "predict" ? PredictToCheckpoint(spec, out_dir, emit)
                                      : Train(spec, out_dir, emit);
    }
  } catch (const c10::Error& e) {
    status = absl::InternalError(
        absl::StrCat("LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory (std::bad_alloc: ", e.what(), ")"));
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("error: ", e.what()));
  }
  // LibTorch reports allocation failures as c10::Error ("CUDA out of
  // memory", "DefaultCPUAllocator: not enough memory"), some of them caught
  // and wrapped deeper down.
  if (status.code() == absl::StatusCode::kInternal &&
      IsOutOfMemoryMessage(status.message())) {
    return absl::ResourceExhaustedError(status.message());
  }
  return status;
}

void RequestCheckpoint() {
  g_checkpoint_requested.store(true, std::memory_order_relaxed);
}

void InstallCheckpointSignalHandler() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnCheckpointSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, nullptr);
  // A parent may block SIGUSR1 across fork/exec so that a request sent
  // before this point stays pending instead of killing the child; it is
  // delivered here.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);
}

int ExitCodeForStatus(const absl::Status& status) {
  if (status.ok()) return 0;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
      return 2;
    case absl::StatusCode::kResourceExhausted:
      return 3;
    default:
      return 1;
  }
}

}  // namespace lathe
