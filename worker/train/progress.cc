#include "worker/train/progress.h"

#include <algorithm>

namespace lathe {

void TrainProgress::Resume(double loss_since_report,
                           int64_t steps_since_report) {
  loss_since_report_ = loss_since_report;
  steps_since_report_ = steps_since_report;
}

void TrainProgress::AddStep(const StepStats& stats) {
  ++steps_this_run_;
  if (steps_this_run_ == 1) {
    first_step_seconds_ = stats.seconds;
    first_step_samples_ = stats.samples;
  } else {
    steady_seconds_ += stats.seconds;
    steady_samples_ += stats.samples;
    steady_tokens_ += stats.tokens;
    steady_data_seconds_ += stats.data_seconds;
    steady_padded_ += stats.padded;
  }
  loss_since_report_ += stats.loss;
  ++steps_since_report_;
}

nlohmann::json TrainProgress::TakeEvent(int64_t step, int64_t total_steps,
                                        int64_t steps_per_epoch, double lr) {
  const double sps =
      steady_samples_ > 0
          ? steady_samples_ / std::max(1e-9, steady_seconds_)
          : first_step_samples_ / std::max(1e-9, first_step_seconds_);
  const double sec_per_step = steps_this_run_ > 1
                                  ? steady_seconds_ / (steps_this_run_ - 1)
                                  : first_step_seconds_;
  nlohmann::json event = {
      {"type", "train"},
      {"step", step},
      {"total_steps", total_steps},
      {"epoch", static_cast<double>(step) / steps_per_epoch},
      {"loss", loss_since_report_ / steps_since_report_},
      {"learning_rate", lr},
      {"samples_per_second", sps},
      {"eta_seconds", sec_per_step * (total_steps - step)}};
  if (steady_tokens_ > 0) {
    event["tokens_per_second"] =
        steady_tokens_ / std::max(1e-9, steady_seconds_);
  }
  if (steady_padded_ > 0) {
    // Real tokens over token slots computed: 1 means no padding.
    event["padding_efficiency"] =
        static_cast<double>(steady_tokens_) / steady_padded_;
  }
  if (steady_seconds_ > 0) {
    // Share of step time spent building batches (collating cached
    // features, copying them to the device).
    event["data_time_share"] = steady_data_seconds_ / steady_seconds_;
  }
  loss_since_report_ = 0;
  steps_since_report_ = 0;
  return event;
}

}  // namespace lathe
