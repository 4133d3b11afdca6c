#include "worker/train/checkpoint_writer.h"

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/models/model_config.h"
#include "worker/tasks/audio_data.h"
#include "worker/tasks/image_data.h"
#include "worker/train/adamw.h"
#include "worker/train/method.h"
#include "worker/train/model_source.h"
#include "worker/train/optimizer.h"
#include "worker/train/trainer.h"

namespace lathe {
namespace {

// A bare vocab.txt (the BERT presets' tokenizer) gets the files that tell
// other tools it is an uncased BERT WordPiece tokenizer.
absl::Status WriteBertTokenizerConfig(const std::string& tmp,
                                      int64_t max_length) {
  const nlohmann::json tokenizer_config = {{"do_lower_case", true},
                                           {"model_max_length", max_length},
                                           {"tokenizer_class", "BertTokenizer"},
                                           {"unk_token", "[UNK]"},
                                           {"sep_token", "[SEP]"},
                                           {"pad_token", "[PAD]"},
                                           {"cls_token", "[CLS]"},
                                           {"mask_token", "[MASK]"}};
  RETURN_IF_ERROR(WriteFileAtomic(tmp + "/tokenizer_config.json",
                                  tokenizer_config.dump(2) + "\n"));
  const nlohmann::json special = {{"unk_token", "[UNK]"},
                                  {"sep_token", "[SEP]"},
                                  {"pad_token", "[PAD]"},
                                  {"cls_token", "[CLS]"},
                                  {"mask_token", "[MASK]"}};
  return WriteFileAtomic(tmp + "/special_tokens_map.json",
                         special.dump(2) + "\n");
}

// Writes a complete Hugging Face directory to `dir`.tmp, then renames it to
// `dir`, so a directory that exists under its final name is complete.
// `write_state` adds the training state to the temporary directory.
absl::Status WriteCheckpoint(
    TaskModelImpl& model, const Tokenizer* tokenizer, int64_t max_length,
    const std::string& dir,
    const std::function<absl::Status(const std::string&)>& write_state) {
  namespace fs = std::filesystem;
  const std::string tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::remove_all(dir, ec);
  RETURN_IF_ERROR(MakeDirs(tmp));
  RETURN_IF_ERROR(SaveModel(model, tmp));
  if (tokenizer != nullptr) RETURN_IF_ERROR(tokenizer->CopyFilesTo(tmp));
  if (model.config().architecture == Architecture::kVit ||
      model.config().architecture == Architecture::kCnn) {
    RETURN_IF_ERROR(WriteImageProcessorConfig(tmp, model.config().image_size));
  }
  if (model.config().architecture == Architecture::kWav2Vec2) {
    RETURN_IF_ERROR(WriteAudioFeatureExtractorConfig(tmp, 16000));
    if (!model.config().speech.vocab.empty()) {
      RETURN_IF_ERROR(WriteCtcTokenizerFiles(tmp, model.config().speech.vocab));
    }
  }
  if (write_state) RETURN_IF_ERROR(write_state(tmp));
  if (!PathExists(tmp + "/tokenizer_config.json") &&
      PathExists(tmp + "/vocab.txt")) {
    RETURN_IF_ERROR(WriteBertTokenizerConfig(tmp, max_length));
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("renaming ", tmp, " to ", dir, ": ", ec.message()));
  }
  return SyncParentDir(dir);
}

torch::Tensor GeneratorState(const torch::Device& device) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state().to(torch::kCPU).contiguous();
}

// Writes `dir`/training_state.safetensors (Adam moments by HF parameter name,
// generator states) and `dir`/trainer_state.json. `state` carries every
// scalar but the Adam step counts, which are read from the optimizer.
// Reads generator states without drawing from them.
absl::Status WriteTrainingState(TaskModel& model,
                                torch::optim::AdamW& optimizer,
                                const torch::Device& device, TrainerState state,
                                const std::string& dir) {
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  auto add = [&](const std::string& name, torch::Tensor t, const char* dtype) {
    keep.push_back(t);
    TensorView v;
    v.name = name;
    v.dtype = dtype;
    v.shape = t.sizes().vec();
    v.data = t.data_ptr();
    v.nbytes = static_cast<size_t>(t.numel()) * t.element_size();
    views.push_back(std::move(v));
  };
  bool first = true;
  for (const auto& [key, value] : UniqueParameters(*model)) {
    if (!value.requires_grad()) continue;  // Frozen: not in the optimizer.
    const torch::optim::AdamWParamState* ps = FindAdamState(optimizer, value);
    const int64_t steps = ps == nullptr ? 0 : ps->step();
    if (first) {
      state.adam_step = steps;
      first = false;
    } else if (steps != state.adam_step) {
      state.adam_steps[key] = steps;
    }
    if (ps == nullptr) continue;
    auto cpu = [](const torch::Tensor& t) {
      return t.detach().to(torch::kCPU).contiguous();
    };
    if (ps->exp_avg().scalar_type() != torch::kFloat32) {
      return absl::InternalError(
          absl::StrCat("optimizer state of ", key, " is not float32"));
    }
    add("exp_avg." + key, cpu(ps->exp_avg()), "F32");
    add("exp_avg_sq." + key, cpu(ps->exp_avg_sq()), "F32");
  }
  add("rng.torch_cpu", GeneratorState(torch::Device(torch::kCPU)), "U8");
  if (device.is_cuda()) add("rng.torch_cuda", GeneratorState(device), "U8");
  for (const TensorView& v : views) {
    if (v.dtype == "U8" &&
        keep[&v - views.data()].scalar_type() != torch::kUInt8) {
      return absl::InternalError("a generator state is not a byte tensor");
    }
  }
  RETURN_IF_ERROR(WriteSafetensors(
      dir + "/" + kTrainingStateFile, views,
      {{"format", "lathe-training-state"},
       {"format_version", std::to_string(kTrainerStateVersion)}}));
  return WriteFileAtomic(dir + "/" + kTrainerStateFile,
                         state.ToJson().dump(2) + "\n");
}

}  // namespace

absl::Status WriteTrainingCheckpoint(
    TaskModel& model, const Tokenizer* tokenizer, const TrainParams& params,
    const std::string& base_model, torch::optim::AdamW& optimizer,
    const torch::Device& device, const TrainerState& state,
    const std::string& dir,
    const std::function<absl::Status(const std::string&)>& task_files) {
  return WriteCheckpoint(
      *model, tokenizer, state.max_length, dir, [&](const std::string& tmp) {
        RETURN_IF_ERROR(
            SaveTrainingMethodOutputs(*model, params, base_model, tmp));
        if (task_files) RETURN_IF_ERROR(task_files(tmp));
        return WriteTrainingState(model, optimizer, device, state, tmp);
      });
}

absl::Status WritePresetModel(const std::string& preset,
                              const std::string& assets_dir, int64_t seed,
                              const std::string& dir) {
  try {
    ASSIGN_OR_RETURN(const Preset p, FindPreset(preset));
    if (std::filesystem::exists(dir)) {
      return absl::AlreadyExistsError(absl::StrCat(dir, " already exists"));
    }
    TrainSpec spec;
    spec.assets_dir = assets_dir;
    // Image presets have no tokenizer, and no head until a task adds one.
    std::unique_ptr<Tokenizer> tokenizer;
    if (!p.tokenizer_dir.empty()) {
      ASSIGN_OR_RETURN(tokenizer,
                       Tokenizer::FromDirectory(ResolveAssetsDir(spec) + "/" +
                                                p.tokenizer_dir));
    }
    const bool decoder = p.config.architecture == Architecture::kGpt2 ||
                         p.config.architecture == Architecture::kLlama;
    // Image and speech presets get their head from the task.
    const bool image = p.config.architecture == Architecture::kVit ||
                       p.config.architecture == Architecture::kCnn ||
                       p.config.architecture == Architecture::kWav2Vec2;
    torch::manual_seed(static_cast<uint64_t>(seed));
    ASSIGN_OR_RETURN(TaskModel model,
                     CreateModel(p.config, image     ? HeadKind::kNone
                                           : decoder ? HeadKind::kCausalLm
                                                     : HeadKind::kMaskedLm));
    const std::string tmp = dir + ".tmp";
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);
    RETURN_IF_ERROR(MakeDirs(tmp));
    RETURN_IF_ERROR(SaveModel(*model, tmp));
    if (tokenizer != nullptr) RETURN_IF_ERROR(tokenizer->CopyFilesTo(tmp));
    if (!PathExists(tmp + "/tokenizer_config.json") &&
        PathExists(tmp + "/vocab.txt")) {
      RETURN_IF_ERROR(
          WriteBertTokenizerConfig(tmp, p.config.max_position_embeddings));
    }
    std::filesystem::rename(tmp, dir, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("renaming ", tmp, " to ", dir, ": ", ec.message()));
    }
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("error: ", e.what()));
  }
}

}  // namespace lathe
