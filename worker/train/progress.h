// The "train" events of a run: the training loss averaged since the
// previous event (carried across a resume through trainer_state.json) and
// the throughput of this process's steps: samples and tokens per second,
// padding efficiency, the share of step time spent building batches and
// the time left. The run's first step (allocations, lazy initialisation)
// stays out of the rates once there are others. No LibTorch.
#ifndef LATHE_WORKER_TRAIN_PROGRESS_H_
#define LATHE_WORKER_TRAIN_PROGRESS_H_

#include <cstdint>

#include "nlohmann/json.hpp"

namespace lathe {

// What one optimizer step did.
struct StepStats {
  double seconds = 0;       // Wall time of the whole step.
  double data_seconds = 0;  // Of which building batches.
  int64_t samples = 0;
  int64_t tokens = 0;  // Real tokens; 0 for tasks without tokens.
  int64_t padded = 0;  // Token slots computed, padding included.
  double loss = 0;     // Mean over the step's rows.
};

// One per training run; not thread-safe.
class TrainProgress {
 public:
  // Continues the loss accumulation of the run being resumed.
  void Resume(double loss_since_report, int64_t steps_since_report);

  void AddStep(const StepStats& stats);

  // The loss accumulated since the last event, for a checkpoint.
  double loss_since_report() const { return loss_since_report_; }
  int64_t steps_since_report() const { return steps_since_report_; }

  // The "train" event after step `step` (1-based) at learning rate `lr`;
  // starts a new loss accumulation.
  nlohmann::json TakeEvent(int64_t step, int64_t total_steps,
                           int64_t steps_per_epoch, double lr);

 private:
  double loss_since_report_ = 0;
  int64_t steps_since_report_ = 0;
  int64_t steps_this_run_ = 0;
  double first_step_seconds_ = 0;
  int64_t first_step_samples_ = 0;
  // Sums over this run's steps after the first.
  double steady_seconds_ = 0;
  double steady_data_seconds_ = 0;
  int64_t steady_padded_ = 0;
  int64_t steady_samples_ = 0;
  int64_t steady_tokens_ = 0;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_PROGRESS_H_
