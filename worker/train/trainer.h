// The training child's core: reads a job spec, trains a text classifier and
// reports progress as JSON events. No LibTorch in this header.
#ifndef LATHE_WORKER_TRAIN_TRAINER_H_
#define LATHE_WORKER_TRAIN_TRAINER_H_

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/models/bert_config.h"

namespace lathe {

// The spec file the agent writes for one training attempt.
struct TrainSpec {
  std::string job_id;
  std::string task = "text-classification";
  // "preset:bert-tiny", "preset:bert-mini" or a model directory.
  std::string model;
  std::string train_data;       // Local path.
  std::string train_name;       // Display name used in messages.
  std::string validation_data;  // Empty: hold out params.validation_split.
  std::string validation_name;
  std::map<std::string, std::string> params;  // See common/params.h.
  std::string device = "cpu";                 // "cpu" or "cuda:N".
  // Holds bert-base-uncased/vocab.txt for presets. Empty: $LATHE_ASSETS_DIR,
  // else <executable dir>/../assets.
  std::string assets_dir;

  // Test hooks, never read from JSON: when set, the model is a random-init
  // BERT with this architecture (id2label is replaced by the data's labels)
  // and the tokenizer reads `vocab_path`.
  std::optional<BertConfig> model_config;
  std::string vocab_path;

  // INVALID_ARGUMENT naming the field when the JSON is malformed.
  static absl::StatusOr<TrainSpec> FromJson(const std::string& text);
};

// Receives each event ({"type": "log" | "train" | "eval" | "checkpoint", ...})
// in order, from the calling thread.
using EventFn = std::function<void(const nlohmann::json&)>;

// Trains per `spec`, writing checkpoints to `out_dir`/checkpoint-STEP (each
// emitted as an event once complete, never modified afterwards). Invalid input
// (data, model, params, spec) is INVALID_ARGUMENT or NOT_FOUND; other
// failures keep their codes. Catches every LibTorch exception.
absl::Status RunTraining(const TrainSpec& spec, const std::string& out_dir,
                         const EventFn& emit);

// Exit code for a status from RunTraining: 0 ok, 2 invalid input, 1 else.
int ExitCodeForStatus(const absl::Status& status);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_TRAINER_H_
