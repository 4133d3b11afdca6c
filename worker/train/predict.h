// Prediction: running a trained model directory as a task on the rows of a
// file, either for `lathe-train --predict` (RunPrediction in trainer.h) or
// as a job whose one checkpoint holds predictions.jsonl. The header has no
// LibTorch.
#ifndef LATHE_WORKER_TRAIN_PREDICT_H_
#define LATHE_WORKER_TRAIN_PREDICT_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/train/trainer.h"

namespace lathe {

// RunPrediction without its exception handling: LibTorch errors propagate.
absl::StatusOr<std::vector<nlohmann::json>> Predict(
    const std::string& model_dir, const std::string& task_name,
    const std::string& input, const std::string& input_name,
    const std::map<std::string, std::string>& raw_params,
    const std::string& device_name,
    const std::function<void(const std::string&)>& log);

// The prediction job (spec.mode "predict"): the predictions of spec.model
// on spec.train_data in OUT/checkpoint-0/predictions.jsonl, one JSON object
// per row, reported as the job's final checkpoint. LibTorch errors
// propagate (RunTraining catches them).
absl::Status PredictToCheckpoint(const TrainSpec& spec,
                                 const std::string& out_dir,
                                 const EventFn& emit);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_PREDICT_H_
