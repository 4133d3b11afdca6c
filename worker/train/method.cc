#include "worker/train/method.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace lathe {

absl::Status ApplyTrainingMethod(TaskModelImpl& model,
                                 const TrainParams& params, const LogFn& log) {
  if (params.method == "full") return absl::OkStatus();
  if (params.method == "linear-probe") {
    const std::vector<std::string> head = model.head_parameter_names();
    const std::set<std::string> keep(head.begin(), head.end());
    int64_t frozen = 0;
    for (auto& item : model.named_parameters(/*recurse=*/true)) {
      if (keep.count(item.key())) continue;
      item.value().set_requires_grad(false);
      frozen += item.value().numel();
    }
    if (log) {
      log(absl::StrCat("linear probe: the base is frozen (", frozen,
                       " parameters); the head trains"));
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrCat("params[method]: \"", params.method,
                   "\" is not available in this build"));
}

absl::Status SaveTrainingMethodOutputs(TaskModelImpl& model,
                                       const TrainParams& params,
                                       const std::string& dir) {
  return absl::OkStatus();
}

}  // namespace lathe
