// The device a training run computes on: "cpu" or "cuda:N" from the job
// spec, checked against what this LibTorch build and machine have. LibTorch.
#ifndef LATHE_WORKER_TRAIN_DEVICE_H_
#define LATHE_WORKER_TRAIN_DEVICE_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/statusor.h"

namespace lathe {

// `name` ("cpu" when empty). INVALID_ARGUMENT for a malformed or missing
// device, FAILED_PRECONDITION when CUDA is asked for but not available.
absl::StatusOr<torch::Device> TrainingDevice(const std::string& name);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_DEVICE_H_
