// The training child's core: reads a job spec, fine-tunes a model (any
// family in worker/models) on a task (worker/tasks) and reports progress as
// JSON events. No LibTorch in this header.
//
// trainer.cc holds the training loop; the parts it composes live beside it:
// model_source.h (which model and tokenizer), device.h, optimizer.h
// (parameters, AdamW groups, learning-rate schedule), batch_order.h (the
// rows of each step), autocast.h (bf16), evaluate.h (evaluation and early
// stopping), progress.h ("train" events), checkpoint_writer.h and resume.h
// (writing checkpoints and continuing from one), predict.h (prediction).
#ifndef LATHE_WORKER_TRAIN_TRAINER_H_
#define LATHE_WORKER_TRAIN_TRAINER_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/models/model_config.h"
#include "worker/train/distributed_spec.h"

namespace lathe {

// The spec file the agent writes for one training attempt.
struct TrainSpec {
  std::string job_id;
  std::string task = "text-classification";
  // A preset ("preset:bert-tiny", see Presets()) or a Hugging Face model
  // directory (config.json, safetensors weights, tokenizer files).
  std::string model;
  std::string train_data;       // Local path.
  std::string train_name;       // Display name used in messages.
  std::string validation_data;  // Empty: hold out params.validation_split.
  std::string validation_name;
  std::map<std::string, std::string> params;  // See common/params.h.
  std::string device = "cpu";                 // "cpu" or "cuda:N".
  // Holds the presets' tokenizer directories (bert-base-uncased, gpt2,
  // llama2). Empty: $LATHE_ASSETS_DIR, else <executable dir>/../assets.
  std::string assets_dir;
  // A checkpoint directory (OUT/checkpoint-STEP of an earlier attempt of this
  // job, with trainer_state.json and training_state.safetensors) to continue
  // from: the model comes from its config.json + model.safetensors (not from
  // `model`), the optimizer, schedule, RNG and data position from its state.
  // Empty: start at step 0.
  std::string resume_from;
  // "train" (default) or "predict": run `model` on the rows of train_data
  // and write OUT/checkpoint-0/predictions.jsonl (one JSON object per row),
  // emitted as the final checkpoint.
  std::string mode = "train";
  // Data-parallel training: this process's rank, the gang's size and rank
  // 0's store. world_size 1 (the default): one process alone. Each rank
  // runs with the same spec but this object and `device`; rank 0 reports,
  // evaluates and writes the checkpoints (distributed.h).
  DistributedSpec distributed;

  // Test hooks, never read from JSON: when set, the model is a random-init
  // model with this architecture (id2label is replaced by the data's labels)
  // and the tokenizer is the one in `tokenizer_dir`.
  std::optional<ModelConfig> model_config;
  std::string tokenizer_dir;

  // INVALID_ARGUMENT naming the field when the JSON is malformed.
  static absl::StatusOr<TrainSpec> FromJson(const std::string& text);
};

// Receives each event ({"type": "log" | "train" | "eval" | "checkpoint", ...})
// in order, from the calling thread.
using EventFn = std::function<void(const nlohmann::json&)>;

// Trains per `spec`, writing checkpoints to `out_dir`/checkpoint-STEP (each
// emitted as an event once complete, never modified afterwards). Each holds
// the Hugging Face files plus the training state (trainer_state.json,
// training_state.safetensors) that `resume_from` reads. On the CPU with the
// same seed and num_threads, a run resumed from any of its checkpoints ends
// with bitwise the same weights as the uninterrupted run. Invalid input
// (data, model, params, spec, resume directory) is INVALID_ARGUMENT or
// NOT_FOUND; running out of memory is RESOURCE_EXHAUSTED; other failures keep
// their codes. Catches every LibTorch exception and std::bad_alloc.
absl::Status RunTraining(const TrainSpec& spec, const std::string& out_dir,
                         const EventFn& emit);

// Runs `model_dir` (a Hugging Face directory with config.json, weights and
// its tokenizer, such as a Lathe checkpoint) as `task` on the rows of
// `input` (display name `input_name`) and returns one JSON object per row.
// `params` supplies max_seq_length, the column names and the generation
// settings. INVALID_ARGUMENT for bad input. Catches LibTorch exceptions.
absl::StatusOr<std::vector<nlohmann::json>> RunPrediction(
    const std::string& model_dir, const std::string& task,
    const std::string& input, const std::string& input_name,
    const std::map<std::string, std::string>& params,
    const std::string& device);

// Writes a random-initialisation base model of `preset` ("preset:gpt2-tiny",
// ...) to `dir` (created; must not exist yet) in the published Hugging Face
// layout: the family's usual pre-training class (BertForMaskedLM,
// GPT2LMHeadModel, LlamaForCausalLM, ...), config.json, model.safetensors and
// the preset's tokenizer files from `assets_dir` (empty: as TrainSpec's).
// A base for pre-training from scratch, or to push to the model store.
absl::Status WritePresetModel(const std::string& preset,
                              const std::string& assets_dir, int64_t seed,
                              const std::string& dir);

// Asks the running (or next) RunTraining to write a checkpoint at its next
// step boundary (after at least one step), emitted with "requested": true.
// Async-signal-safe: only sets a lock-free atomic flag.
void RequestCheckpoint();

// Installs RequestCheckpoint() as the process's SIGUSR1 handler ("checkpoint
// now") and unblocks SIGUSR1 in the calling thread. Call first in main():
// until then SIGUSR1's default action kills the process, so a parent that
// may signal early should spawn the child with SIGUSR1 blocked (the mask is
// inherited across exec; the pending signal is delivered here).
void InstallCheckpointSignalHandler();

// Exit code for a status from RunTraining: 0 ok, 2 invalid input
// (INVALID_ARGUMENT, NOT_FOUND), 3 out of memory (RESOURCE_EXHAUSTED), 1 else.
int ExitCodeForStatus(const absl::Status& status);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_TRAINER_H_
