// A fine-tuning task: how its data is read and batched, which head the model
// gets, its loss, its metrics and its predictions. The training loop
// (worker/train/trainer.cc) is task-independent and drives a Task.
// LibTorch.
#ifndef LATHE_WORKER_TASKS_TASK_H_
#define LATHE_WORKER_TASKS_TASK_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/params.h"
#include "nlohmann/json.hpp"
#include "worker/models/model.h"
#include "worker/tokenizers/tokenizer.h"

namespace lathe {

// The data a training run reads.
struct TaskData {
  std::string train_path;       // Local file or directory (image folders).
  std::string train_name;       // Display name for messages ("train.jsonl").
  std::string validation_path;  // Empty: hold out params.validation_split.
  std::string validation_name;
};

// What a task may read while preparing: the job's parameters, the
// tokenizer (null for image tasks) and the model's configuration (for
// limits such as max positions, image size, special token ids).
struct TaskContext {
  const TrainParams* params = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const ModelConfig* model_config = nullptr;
  int64_t max_length = 128;  // Token budget per example (model-capped).
  LogFn log;                 // Progress and warnings for the job's events.
};

// One collated batch on the training device.
struct TaskBatch {
  ModelInputs inputs;
  // Targets by name ("labels", "start_positions", ...), on the device.
  std::map<std::string, torch::Tensor> targets;
  int64_t examples = 0;  // Rows in the batch (for samples/s).
  int64_t tokens = 0;    // Non-padding input tokens (for tokens/s).
  // What the training loss is a mean over when that is not the rows: the
  // labelled tokens of a token-level task (0: the rows). Data-parallel
  // ranks weight their losses by it, so that N ranks compute the gradient
  // of one device's batch.
  int64_t loss_units = 0;
};

class Task {
 public:
  virtual ~Task() = default;

  // "text-classification", ...
  virtual std::string name() const = 0;
  virtual HeadKind head() const = 0;

  // Reads and featurises the training and validation data (holding out a
  // seeded validation_split when there is no validation file). Errors are
  // INVALID_ARGUMENT starting with "NAME:LINE: " where a row is at fault;
  // labels in the validation data that training lacks are named.
  virtual absl::Status Prepare(const TaskData& data,
                               const TaskContext& context) = 0;

  // Sets what the head needs in the model's config before the model is
  // built or loaded: id2label for classifiers (the labels Prepare found),
  // problem_type and so on. Called after Prepare.
  virtual void ConfigureModel(ModelConfig* config) const = 0;

  // Features after Prepare (a long QA context gives several).
  virtual int64_t train_size() const = 0;
  virtual int64_t validation_size() const = 0;
  // Rows the user gave (before windowing), for messages.
  virtual int64_t train_rows() const { return train_size(); }
  // Tokens of each training feature, in index order, for group_by_length
  // and the data-path figures; empty for tasks whose rows all have the same
  // size (images).
  virtual std::vector<int64_t> train_lengths() const { return {}; }
  // What a resumed run must find unchanged (labels, ...), as JSON.
  virtual nlohmann::json Signature() const = 0;

  // The training features `indices` as a batch (padded to its longest row).
  // `generator` draws any per-batch randomness (masked-lm masking) so that
  // runs are reproducible and resumable.
  virtual TaskBatch TrainBatch(const std::vector<size_t>& indices,
                               const torch::Device& device,
                               torch::Generator* generator) const = 0;
  // Mean loss of `output` (the model's forward) over the batch.
  virtual torch::Tensor Loss(const torch::Tensor& output,
                             const TaskBatch& batch) const = 0;
  // The training step's loss: Loss(model.forward(batch.inputs), batch),
  // unless the task computes it from parts of the model (causal-lm projects
  // onto a large vocabulary a chunk at a time).
  virtual torch::Tensor TrainLoss(TaskModelImpl& model,
                                  const TaskBatch& batch) const {
    return Loss(model.forward(batch.inputs), batch);
  }

  // Called once as training starts, with the model on the training device
  // in eval mode, no gradients, the method applied. A fresh run
  // (`resume_from` empty) passes the model it starts from: DPO scores its
  // pairs with it here (the reference model). A resumed run passes the
  // checkpoint's model and `resume_from`, whose files from
  // WriteTrainingFiles the task reads back instead. Other tasks need
  // nothing.
  virtual absl::Status BeforeTraining(TaskModelImpl& /*model*/,
                                      const torch::Device& /*device*/,
                                      const std::string& /*resume_from*/) {
    return absl::OkStatus();
  }
  // Writes into a checkpoint directory `dir` (before it takes its final
  // name) what a run resumed from it needs from the task, beyond the model
  // and the trainer's state.
  virtual absl::Status WriteTrainingFiles(const std::string& /*dir*/) const {
    return absl::OkStatus();
  }

  // Evaluates `model` (put in eval mode by the caller, no gradients) on the
  // validation features; returns every metric of the task plus "loss".
  virtual absl::StatusOr<nlohmann::json> Evaluate(
      TaskModelImpl& model, int64_t batch_size,
      const torch::Device& device) const = 0;
  // Metric for the best checkpoint when params.metric_for_best_model is
  // empty, and whether larger is better for a metric name.
  virtual std::string default_metric() const = 0;
  virtual bool greater_is_better(const std::string& metric) const {
    return metric != "loss" && metric != "mse" && metric != "mae" &&
           metric != "perplexity";
  }

  // Reads rows from `path` in the training format (labels, if present, are
  // ignored) and returns one JSON object per row, in order: at least
  // "label" for classification, "value" for regression, "entities" for
  // token classification, "answer" for QA, "text" for generation, "image"
  // naming the file for image rows. `model` is in eval mode; the task was
  // not Prepared (it reads labels from the model's config).
  virtual absl::StatusOr<std::vector<nlohmann::json>> Predict(
      TaskModelImpl& model, const std::string& path,
      const std::string& display_name, const TaskContext& context,
      const torch::Device& device) const = 0;
};

// The task named `name`; INVALID_ARGUMENT naming the known tasks otherwise.
absl::StatusOr<std::unique_ptr<Task>> CreateTask(const std::string& name);

// The task a training run with `params` drives: CreateTask(name), except
// that a preference method (dpo, dpo-lora) on causal-lm gives the DPO task
// (INVALID_ARGUMENT naming params[method] on any other task).
absl::StatusOr<std::unique_ptr<Task>> CreateTrainingTask(
    const std::string& name, const TrainParams& params);

// Every task name, for messages and the server's validation.
const std::vector<std::string>& TaskNames();

// Token features padded into model inputs: ids with `pad_id`, mask 1/0,
// type ids; `tokens` receives the count of real tokens.
ModelInputs PadTokenBatch(const std::vector<const TokenizedText*>& rows,
                          int64_t pad_id, const torch::Device& device,
                          int64_t* tokens);

// Indices [0, n) split into (kept, held out): a seeded shuffle, the first
// round(fraction * n) held out (at least one row is kept). A pure function
// of (seed, n, fraction), so resumed runs hold out the same rows.
std::pair<std::vector<size_t>, std::vector<size_t>> HoldOut(size_t n,
                                                            double fraction,
                                                            int64_t seed);

// The tokenizer's padding id, else its end-of-sequence id, else 0 (padding
// is masked out, so any id works).
int64_t PadId(const Tokenizer& tokenizer);

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_TASK_H_
