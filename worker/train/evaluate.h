// Evaluation during training: when it is due, the task's metrics on the
// validation set (eval mode, no gradients, float32 even with bf16 training),
// and early stopping on metric_for_best_model. LibTorch.
#ifndef LATHE_WORKER_TRAIN_EVALUATE_H_
#define LATHE_WORKER_TRAIN_EVALUATE_H_

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/params.h"
#include "nlohmann/json.hpp"
#include "worker/models/model.h"
#include "worker/tasks/task.h"
#include "worker/train/trainer.h"

namespace lathe {

// One per training run; not thread-safe.
class TrainingEvaluator {
 public:
  // `task` and `params` must outlive the evaluator.
  TrainingEvaluator(Task& task, const TrainParams& params);

  // metric_for_best_model, else the task's default metric.
  const std::string& best_metric() const { return best_metric_; }
  bool greater_is_better() const { return greater_is_better_; }
  // Whether the best metric has gone early_stopping_patience evaluations
  // without improving (never on the run's last step).
  bool stop_early() const { return stop_early_; }

  // Called after optimizer step `step` (`last`: the run's final one). When
  // the task has validation rows and `last` or `step` is a multiple of
  // eval_steps, evaluates `model` (leaving it in train mode), emits the
  // "eval" event and returns the metrics; otherwise an empty object. Draws
  // nothing from any generator.
  absl::StatusOr<nlohmann::json> MaybeEvaluate(TaskModel& model,
                                               const torch::Device& device,
                                               int64_t step, bool last,
                                               const EventFn& emit,
                                               const LogFn& log);

 private:
  Task& task_;
  const TrainParams& params_;
  std::string best_metric_;
  bool greater_is_better_;
  std::optional<double> best_value_;
  int64_t evals_without_improvement_ = 0;
  bool stop_early_ = false;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_EVALUATE_H_
