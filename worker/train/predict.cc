#include "worker/train/predict.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/params.h"
#include "common/status.h"
#include "worker/models/model.h"
#include "worker/tasks/task.h"
#include "worker/tokenizers/tokenizer.h"
#include "worker/train/model_source.h"

namespace lathe {

namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

absl::StatusOr<std::vector<nlohmann::json>> Predict(
    const std::string& model_dir, const std::string& task_name,
    const std::string& input, const std::string& input_name,
    const std::map<std::string, std::string>& raw_params,
    const std::string& device_name,
    const std::function<void(const std::string&)>& log) {
  ASSIGN_OR_RETURN(const TrainParams params, ParseTrainParams(raw_params));
  ASSIGN_OR_RETURN(std::unique_ptr<Task> task, CreateTask(task_name));
  if (!std::filesystem::is_directory(model_dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", model_dir, " is not a directory"));
  }
  auto config = ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok())
    return absl::InvalidArgumentError(config.status().message());
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                   OptionalTokenizer(model_dir));
  auto loaded = LoadModel(model_dir, task->head(), {}, log);
  if (!loaded.ok()) {
    return loaded.status().code() == absl::StatusCode::kNotFound
               ? absl::InvalidArgumentError(loaded.status().message())
               : loaded.status();
  }
  TaskModel model = *std::move(loaded);
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(device_name.empty() ? "cpu" : device_name);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", device_name, "\" is not cpu or cuda:N"));
  }
  model->to(device);
  model->eval();
  torch::NoGradGuard no_grad;
  TaskContext context;
  context.params = &params;
  context.tokenizer = tokenizer.get();
  context.model_config = &model->config();
  context.max_length = MaxLength(model->config(), params);
  context.log = log;
  return task->Predict(*model, input, input_name, context, device);
}

absl::Status PredictToCheckpoint(const TrainSpec& spec,
                                 const std::string& out_dir,
                                 const EventFn& emit) {
  auto log = [&](const std::string& message) {
    emit({{"type", "log"}, {"message", message}});
  };
  ASSIGN_OR_RETURN(const TrainParams params, ParseTrainParams(spec.params));
  torch::set_num_threads(static_cast<int>(
      params.num_threads > 0
          ? params.num_threads
          : std::max<int64_t>(1, std::thread::hardware_concurrency())));
  torch::manual_seed(static_cast<uint64_t>(params.seed));
  std::string model_dir = spec.model;
  if (absl::StartsWith(model_dir, "preset:")) {
    return absl::InvalidArgumentError(
        "predictions need a trained model (job:ID, job:ID@STEP, a stored "
        "model or a model directory), not a preset");
  }
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(
      std::vector<nlohmann::json> rows,
      Predict(model_dir, spec.task, spec.train_data,
              spec.train_name.empty() ? spec.train_data : spec.train_name,
              spec.params, spec.device, log));
  std::string text;
  for (const nlohmann::json& row : rows) {
    text += row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    text += "\n";
  }
  const std::string dir = out_dir + "/checkpoint-0";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  RETURN_IF_ERROR(MakeDirs(dir));
  RETURN_IF_ERROR(WriteFileAtomic(dir + "/predictions.jsonl", text));
  log(absl::StrCat(rows.size(), " predictions in ",
                   std::chrono::duration<double>(Clock::now() - start).count(),
                   " s"));
  emit({{"type", "checkpoint"},
        {"step", 0},
        {"dir", dir},
        {"final", true},
        {"metrics", nlohmann::json::object()}});
  return absl::OkStatus();
}

absl::StatusOr<std::vector<nlohmann::json>> RunPrediction(
    const std::string& model_dir, const std::string& task,
    const std::string& input, const std::string& input_name,
    const std::map<std::string, std::string>& params,
    const std::string& device) {
  try {
    return Predict(
        model_dir, task, input, input_name, params, device,
        [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); });
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("error: ", e.what()));
  }
}

}  // namespace lathe
