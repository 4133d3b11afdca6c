#include "worker/train/resume.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "worker/train/adamw.h"
#include "worker/train/optimizer.h"

namespace lathe {
namespace {

void SetGeneratorState(const torch::Device& device, const torch::Tensor& s) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(s);
}

}  // namespace

absl::StatusOr<TrainerState> ReadTrainerState(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("resume_from ", dir, " is not a directory"));
  }
  const std::string path = dir + "/" + kTrainerStateFile;
  if (!PathExists(path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_from ", dir, ": ", kTrainerStateFile,
        " is missing (not a checkpoint written with training state)"));
  }
  auto text = ReadFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("resume_from: ", text.status().message()));
  }
  return TrainerState::Parse(*text, path);
}

absl::Status CheckResumeParams(const std::string& resume_from,
                               const TrainerState& resume,
                               const TrainParams& params) {
  const auto want = TrajectoryParams(params);
  const auto have = TrajectoryParams(resume.params);
  for (const auto& [name, value] : want) {
    if (have.at(name) != value) {
      return absl::InvalidArgumentError(absl::StrCat(
          "resume_from ", resume_from, ": params[", name, "] is ", value.dump(),
          " but the checkpoint was trained with ", have.at(name).dump()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckResumeData(const std::string& resume_from,
                             const TrainerState& resume,
                             const std::vector<std::string>& labels,
                             int64_t train_rows, const std::string& train_sha,
                             const std::string& train_name, const LogFn& log) {
  if (resume.labels != labels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_from ", resume_from, ": the checkpoint's labels [",
        absl::StrJoin(resume.labels, ", "), "] differ from the data's [",
        absl::StrJoin(labels, ", "), "]"));
  }
  if (resume.train_rows != train_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_from ", resume_from, ": the checkpoint was trained on ",
        resume.train_rows, " training rows, this data has ", train_rows));
  }
  if (!resume.train_data_sha256.empty() &&
      resume.train_data_sha256 != train_sha) {
    log(absl::StrCat("warning: ", train_name,
                     " differs from the data the checkpoint was trained on "
                     "(same row count); the resumed run is not exact"));
  }
  return absl::OkStatus();
}

absl::Status CheckResumeSchedule(const std::string& resume_from,
                                 const TrainerState& resume,
                                 int64_t total_steps, int64_t steps_per_epoch,
                                 int64_t warmup_steps, int64_t max_length) {
  if (resume.total_steps != total_steps ||
      resume.steps_per_epoch != steps_per_epoch ||
      resume.warmup_steps != warmup_steps || resume.max_length != max_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_from ", resume_from, ": the checkpoint's schedule (",
        resume.total_steps, " steps, ", resume.steps_per_epoch,
        " per epoch, warmup ", resume.warmup_steps, ", max_length ",
        resume.max_length, ") differs from this job's (", total_steps, ", ",
        steps_per_epoch, ", ", warmup_steps, ", ", max_length, ")"));
  }
  return absl::OkStatus();
}

absl::Status RestoreTrainingState(const std::string& dir,
                                  const TrainerState& state, TaskModel& model,
                                  torch::optim::AdamW& optimizer,
                                  const torch::Device& device,
                                  const std::function<void(std::string)>& log) {
  const std::string path = dir + "/" + kTrainingStateFile;
  if (!PathExists(path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_from ", dir, ": ", kTrainingStateFile, " is missing"));
  }
  auto file_or = SafetensorsFile::Open(path);
  if (!file_or.ok()) {
    return absl::InvalidArgumentError(file_or.status().message());
  }
  const SafetensorsFile& file = **file_or;
  std::set<std::string> used;
  auto tensor =
      [&](const std::string& name,
          const torch::Tensor& like) -> absl::StatusOr<torch::Tensor> {
    const SafetensorsFile::Tensor* t = file.Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": missing tensor \"", name, "\""));
    }
    if (t->dtype != "F32" || t->shape != like.sizes().vec()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", name, "\" is ", t->dtype, " [",
                       absl::StrJoin(t->shape, ","), "], expected F32 [",
                       absl::StrJoin(like.sizes().vec(), ","), "]"));
    }
    used.insert(name);
    torch::Tensor out = torch::empty(t->shape, torch::kFloat32);
    if (t->nbytes > 0) std::memcpy(out.data_ptr(), t->data, t->nbytes);
    return out.to(device);
  };
  std::set<std::string> names;
  for (const auto& [key, value] : UniqueParameters(*model)) {
    if (!value.requires_grad()) continue;  // Frozen: not in the optimizer.
    names.insert(key);
    auto it = state.adam_steps.find(key);
    const int64_t steps =
        it != state.adam_steps.end() ? it->second : state.adam_step;
    if (steps == 0) continue;
    ASSIGN_OR_RETURN(torch::Tensor exp_avg, tensor("exp_avg." + key, value));
    ASSIGN_OR_RETURN(torch::Tensor exp_avg_sq,
                     tensor("exp_avg_sq." + key, value));
    auto ps = std::make_unique<torch::optim::AdamWParamState>();
    ps->step(steps);
    ps->exp_avg(exp_avg);
    ps->exp_avg_sq(exp_avg_sq);
    SetAdamState(optimizer, value, std::move(ps));
  }
  for (const auto& [name, steps] : state.adam_steps) {
    if (!names.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/", kTrainerStateFile, ": adam_steps names \"",
                       name, "\", not a parameter of the model"));
    }
  }
  auto set_rng = [&](const std::string& name,
                     const torch::Device& gen_device) -> absl::Status {
    const SafetensorsFile::Tensor* t = file.Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": missing tensor \"", name, "\""));
    }
    if (t->dtype != "U8" || t->shape.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", name, "\" is not a U8 vector"));
    }
    used.insert(name);
    torch::Tensor s = torch::empty(t->shape, torch::kUInt8);
    if (t->nbytes > 0) std::memcpy(s.data_ptr(), t->data, t->nbytes);
    try {
      SetGeneratorState(gen_device, s);
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", name,
          "\" is not a generator state: ", e.what_without_backtrace()));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(set_rng("rng.torch_cpu", torch::Device(torch::kCPU)));
  if (device.is_cuda()) {
    if (file.Find("rng.torch_cuda") != nullptr) {
      RETURN_IF_ERROR(set_rng("rng.torch_cuda", device));
    } else {
      log("warning: the checkpoint has no CUDA generator state (it was "
          "trained on the CPU); dropout on CUDA continues from the seed");
    }
  } else if (file.Find("rng.torch_cuda") != nullptr) {
    used.insert("rng.torch_cuda");  // Trained on CUDA, resumed on the CPU.
  }
  for (const auto& [name, t] : file.tensors()) {
    if (!used.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": unexpected tensor \"", name, "\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> DataFingerprint(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(path)) return Sha256File(path);
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(path, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file()) {
      names.push_back(fs::relative(it->path(), path).generic_string());
    }
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot list ", path, ": ", ec.message()));
  }
  std::sort(names.begin(), names.end());
  std::string listing;
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(const std::string sha, Sha256File(path + "/" + name));
    absl::StrAppend(&listing, sha, "  ", name, "\n");
  }
  return Sha256Hex(listing);
}

}  // namespace lathe
