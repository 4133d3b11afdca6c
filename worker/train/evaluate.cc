#include "worker/train/evaluate.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lathe {

TrainingEvaluator::TrainingEvaluator(Task& task, const TrainParams& params)
    : task_(task),
      params_(params),
      best_metric_(params.metric_for_best_model.empty()
                       ? task.default_metric()
                       : params.metric_for_best_model),
      greater_is_better_(task.greater_is_better(best_metric_)) {}

absl::StatusOr<nlohmann::json> TrainingEvaluator::MaybeEvaluate(
    TaskModel& model, const torch::Device& device, int64_t step, bool last,
    const EventFn& emit, const LogFn& log) {
  nlohmann::json metrics = nlohmann::json::object();
  if (task_.validation_size() <= 0 ||
      !(last || (params_.eval_steps > 0 && step % params_.eval_steps == 0))) {
    return metrics;
  }
  absl::StatusOr<nlohmann::json> evaluated;
  {
    torch::NoGradGuard no_grad;
    model->eval();
    evaluated = task_.Evaluate(*model, params_.batch_size, device);
    model->train();
  }
  RETURN_IF_ERROR(evaluated.status());
  metrics = *std::move(evaluated);
  emit({{"type", "eval"}, {"step", step}, {"metrics", metrics}});
  if (metrics.contains(best_metric_) && metrics[best_metric_].is_number()) {
    const double v = metrics[best_metric_].get<double>();
    if (!best_value_ ||
        (greater_is_better_ ? v > *best_value_ : v < *best_value_)) {
      best_value_ = v;
      evals_without_improvement_ = 0;
    } else if (++evals_without_improvement_ >=
                   params_.early_stopping_patience &&
               params_.early_stopping_patience > 0 && !last) {
      stop_early_ = true;
      log(absl::StrCat("early stopping at step ", step, ": ", best_metric_,
                       " has not improved for ", evals_without_improvement_,
                       " evaluations (best ", *best_value_, ")"));
    }
  } else if (!metrics.empty()) {
    log(absl::StrCat("warning: metric_for_best_model \"", best_metric_,
                     "\" is not among the task's metrics"));
  }
  return metrics;
}

}  // namespace lathe
