// Resuming a training run from one of its checkpoints: reading the
// training state that checkpoint_writer.h wrote, checking that this job
// continues the same trajectory (parameters, data, schedule), and restoring
// the optimizer and generators. Every problem with the checkpoint is
// INVALID_ARGUMENT naming the file and field. LibTorch.
#ifndef LATHE_WORKER_TRAIN_RESUME_H_
#define LATHE_WORKER_TRAIN_RESUME_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/params.h"
#include "worker/models/model.h"
#include "worker/train/trainer_state.h"

namespace lathe {

// Reads and validates `dir`/trainer_state.json: INVALID_ARGUMENT when
// missing or malformed.
absl::StatusOr<TrainerState> ReadTrainerState(const std::string& dir);

// Only the same trajectory can be continued exactly: the checkpoint of
// `resume_from` must have been trained with the same TrajectoryParams.
absl::Status CheckResumeParams(const std::string& resume_from,
                               const TrainerState& resume,
                               const TrainParams& params);

// The data must have the checkpoint's labels and row count. Data that
// differs with the same row count is only a warning through `log` (the
// resumed run is then not exact).
absl::Status CheckResumeData(const std::string& resume_from,
                             const TrainerState& resume,
                             const std::vector<std::string>& labels,
                             int64_t train_rows, const std::string& train_sha,
                             const std::string& train_name, const LogFn& log);

// The schedule (step counts, warmup, max_length) must be the checkpoint's.
absl::Status CheckResumeSchedule(const std::string& resume_from,
                                 const TrainerState& resume,
                                 int64_t total_steps, int64_t steps_per_epoch,
                                 int64_t warmup_steps, int64_t max_length);

// Restores what WriteTrainingCheckpoint wrote in `dir` into a fresh `optimizer`
// over `model`'s parameters and into the generators. INVALID_ARGUMENT naming
// the file and tensor when something is missing, extra or mis-shaped.
absl::Status RestoreTrainingState(const std::string& dir,
                                  const TrainerState& state, TaskModel& model,
                                  torch::optim::AdamW& optimizer,
                                  const torch::Device& device,
                                  const std::function<void(std::string)>& log);

// SHA-256 of a data file; for a folder dataset (image classes), of its
// files' relative paths and SHA-256s in path order. A resumed run compares
// it with the checkpoint's.
absl::StatusOr<std::string> DataFingerprint(const std::string& path);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_RESUME_H_
