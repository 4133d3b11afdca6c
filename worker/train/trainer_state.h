// trainer_state.json: the scalar half of a checkpoint's training state (the
// tensors live in training_state.safetensors). No LibTorch.
#ifndef LATHE_WORKER_TRAIN_TRAINER_STATE_H_
#define LATHE_WORKER_TRAIN_TRAINER_STATE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/params.h"
#include "nlohmann/json.hpp"

namespace lathe {

inline constexpr char kTrainerStateFile[] = "trainer_state.json";
inline constexpr char kTrainingStateFile[] = "training_state.safetensors";
inline constexpr int kTrainerStateVersion = 1;

// Where a training run stands after `global_step` optimizer steps, enough
// (with the tensors) to continue it exactly.
struct TrainerState {
  int64_t global_step = 0;
  int64_t total_steps = 0;
  int64_t steps_per_epoch = 0;
  int64_t warmup_steps = 0;
  // The next step reads rows [position, position + batch_size) of epoch
  // `epoch`'s order (0-based). position == train_rows never occurs: the end
  // of an epoch is written as (epoch + 1, 0).
  int64_t epoch = 0;
  int64_t position = 0;
  int64_t train_rows = 0;
  int64_t validation_rows = 0;
  std::string train_data_sha256;  // Of the training file as read.
  int64_t max_length = 0;         // Tokens per row after truncation.
  std::vector<std::string> labels;
  std::string device;  // Informational: where it was trained.
  // Data-parallel processes that trained it (1 when absent). The state is
  // whole (every parameter's moments) whatever the count.
  int64_t world_size = 1;
  // Adam step count shared by every parameter, plus exceptions by HF name
  // (written only for parameters whose count differs).
  int64_t adam_step = 0;
  std::map<std::string, int64_t> adam_steps;
  TrainParams params;  // The effective hyperparameters.
  // Training loss summed since the last "train" event, so the first event
  // after a resume reports what the uninterrupted run would have.
  double loss_since_report = 0;
  int64_t steps_since_report = 0;

  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT naming `display_name` and the field when `text` is not
  // a trainer_state.json of a supported format_version, or is inconsistent.
  static absl::StatusOr<TrainerState> Parse(const std::string& text,
                                            const std::string& display_name);
};

// The hyperparameters that shape the training trajectory (seed, batch size,
// schedule, optimizer, data split and truncation) as name -> value; logging,
// evaluation, saving and thread counts are left out.
std::map<std::string, nlohmann::json> TrajectoryParams(const TrainParams& p);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_TRAINER_STATE_H_
