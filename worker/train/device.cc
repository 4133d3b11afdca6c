#include "worker/train/device.h"

#include "absl/strings/str_cat.h"

namespace lathe {

absl::StatusOr<torch::Device> TrainingDevice(const std::string& name) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name.empty() ? "cpu" : name);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec: device \"", name, "\" is not \"cpu\" or \"cuda:N\""));
  }
  if (device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", name,
                       " requested but CUDA is not available to this LibTorch "
                       "build or machine"));
    }
    if (device.has_index() &&
        device.index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", name, " does not exist (",
                       torch::cuda::device_count(), " CUDA devices)"));
    }
  } else if (!device.is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: device \"", name, "\" is not supported"));
  }
  return device;
}

}  // namespace lathe
