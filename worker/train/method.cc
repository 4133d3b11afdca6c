#include "worker/train/method.h"

#include "worker/models/lora.h"

namespace lathe {

absl::Status ApplyTrainingMethod(TaskModelImpl& model,
                                 const TrainParams& params, const LogFn& log) {
  return ApplyMethod(model, params, log);
}

absl::Status SaveTrainingMethodOutputs(TaskModelImpl& model,
                                       const TrainParams& params,
                                       const std::string& base_model,
                                       const std::string& dir) {
  return SaveMethodOutputs(model, params, dir, base_model,
                           params.merge_lora != 0);
}

}  // namespace lathe
