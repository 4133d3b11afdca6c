#include "worker/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <pthread.h>
#include <signal.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/params.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "worker/models/model.h"
#include "worker/tasks/image_data.h"
#include "worker/tasks/task.h"
#include "worker/tokenizers/tokenizer.h"
#include "worker/train/adamw.h"
#include "worker/train/method.h"
#include "worker/train/trainer_state.h"

namespace lathe {
namespace {

using Clock = std::chrono::steady_clock;

// Set by RequestCheckpoint() (possibly from a signal handler), consumed at a
// step boundary.
std::atomic<bool> g_checkpoint_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free,
              "the SIGUSR1 handler needs a lock-free flag");

void OnCheckpointSignal(int /*signo*/) { RequestCheckpoint(); }

absl::StatusOr<std::string> StringField(const nlohmann::json& j,
                                        const char* key, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec: missing field \"", key, "\""));
    }
    return std::string();
  }
  if (!j[key].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: field \"", key, "\" is not a string"));
  }
  return j[key].get<std::string>();
}

// The model's trainable tensors by name, each once: a tied alias (GPT-2's
// lm_head.weight is transformer.wte.weight) is listed under its source's
// name only, so the optimizer updates it once per step.
std::vector<std::pair<std::string, torch::Tensor>> UniqueParameters(
    const TaskModelImpl& model) {
  std::set<std::string> aliases;
  for (const auto& [alias, source] : model.tied_parameters()) {
    aliases.insert(alias);
  }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  std::set<const void*> seen;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (aliases.count(item.key())) continue;
    if (!seen.insert(item.value().unsafeGetTensorImpl()).second) continue;
    out.emplace_back(item.key(), item.value());
  }
  return out;
}

// Hugging Face's schedules: linear warmup from 0, then linear decay to 0,
// half a cosine to 0, or constant.
double LearningRate(const std::string& type, int64_t step0, double base,
                    int64_t warmup, int64_t total) {
  if (step0 < warmup) return base * step0 / std::max<int64_t>(1, warmup);
  if (type == "constant") return base;
  const double progress = static_cast<double>(step0 - warmup) /
                          std::max<int64_t>(1, total - warmup);
  if (type == "cosine") {
    return base * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return base * std::max(0.0, 1.0 - progress);
}

std::string ResolveAssetsDir(const TrainSpec& spec) {
  if (!spec.assets_dir.empty()) return spec.assets_dir;
  if (const char* env = std::getenv("LATHE_ASSETS_DIR"); env && *env)
    return env;
  return ExecutableDir() + "/../assets";
}

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

void Shuffle(std::vector<size_t>& v, std::mt19937_64& rng) {
  // Fisher-Yates with a fixed reduction, identical on every standard library.
  for (size_t i = v.size(); i > 1; --i) {
    std::swap(v[i - 1], v[rng() % i]);
  }
}

// SplitMix64's finaliser: spreads nearby seeds over the whole 64-bit range.
uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The training rows' order in `epoch`: a pure function of (seed, epoch), so
// a resumed run replays the batches of the interrupted one.
std::vector<size_t> EpochOrder(int64_t seed, int64_t epoch, size_t n) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(
      Mix64(Mix64(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(epoch)));
  Shuffle(order, rng);
  return order;
}

// group_by_length: after the epoch's shuffle, each run of `mega` rows is
// sorted by length, longest first, and cut into batches of `batch` rows;
// the full batches of a run are then put in a seeded random order (a short
// last batch stays last, so step boundaries do not move). Rows of similar
// length share a batch, and padding to the batch's longest row wastes less,
// while batches of every length still come in random order.
void GroupByLength(std::vector<size_t>& order,
                   const std::vector<int64_t>& lengths, size_t batch,
                   size_t mega, int64_t seed, int64_t epoch) {
  std::mt19937_64 rng(Mix64(Mix64(static_cast<uint64_t>(seed) ^ 0x6c656e67ull) ^
                            static_cast<uint64_t>(epoch)));
  for (size_t begin = 0; begin < order.size(); begin += mega) {
    const size_t end = std::min(order.size(), begin + mega);
    std::stable_sort(
        order.begin() + begin, order.begin() + end,
        [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
    std::vector<size_t> chunks((end - begin) / batch);
    for (size_t i = 0; i < chunks.size(); ++i) chunks[i] = i;
    Shuffle(chunks, rng);
    std::vector<size_t> sorted(order.begin() + begin,
                               order.begin() + begin + chunks.size() * batch);
    for (size_t i = 0; i < chunks.size(); ++i) {
      std::copy(sorted.begin() + chunks[i] * batch,
                sorted.begin() + (chunks[i] + 1) * batch,
                order.begin() + begin + i * batch);
    }
  }
}

// bf16 autocast over a scope (the forward pass and the loss): matrix
// products and convolutions run in bfloat16, reductions and the loss stay
// in float32 (LibTorch's autocast op lists), the weights and the optimizer
// stay float32. Backward runs outside, as autocast expects.
class Bf16Autocast {
 public:
  Bf16Autocast(bool enabled, const torch::Device& device)
      : enabled_(enabled), cuda_(device.is_cuda()) {
    if (!enabled_) return;
    if (cuda_) {
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
    at::autocast::increment_nesting();
  }
  ~Bf16Autocast() {
    if (!enabled_) return;
    // The casts of weights cached for this scope are dropped when it ends.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    if (cuda_) {
      at::autocast::set_enabled(false);
    } else {
      at::autocast::set_cpu_enabled(false);
    }
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
  bool cuda_;
};

bool IsOutOfMemoryMessage(absl::string_view m) {
  return absl::StrContains(m, "out of memory") ||
         absl::StrContains(m, "not enough memory");
}

torch::Tensor GeneratorState(const torch::Device& device) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state().to(torch::kCPU).contiguous();
}

void SetGeneratorState(const torch::Device& device, const torch::Tensor& s) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(s);
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

// Restores what WriteTrainingState wrote in `dir` into a fresh `optimizer`
// over `model`'s parameters and into the generators. INVALID_ARGUMENT naming
// the file and tensor when something is missing, extra or mis-shaped.
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

// Reads and validates `dir`/trainer_state.json: INVALID_ARGUMENT when
// missing or malformed.
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

// SHA-256 of a data file; for a folder dataset (image classes), of its
// files' relative paths and SHA-256s in path order. A resumed run compares
// it with the checkpoint's.
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

// Where a model comes from: its config, its tokenizer (null when it has
// none, as image models) and how to build it once the task has configured
// the head.
struct ModelSource {
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string load_dir;  // Empty: random initialisation from `config`.
  std::string description;
};

// Reads the tokenizer in `dir` when there is one.
absl::StatusOr<std::unique_ptr<Tokenizer>> OptionalTokenizer(
    const std::string& dir) {
  auto tok = Tokenizer::FromDirectory(dir);
  if (tok.ok()) return std::move(tok).value();
  if (tok.status().code() == absl::StatusCode::kNotFound) {
    return std::unique_ptr<Tokenizer>();
  }
  return absl::InvalidArgumentError(tok.status().message());
}

absl::StatusOr<ModelSource> ResolveModel(const TrainSpec& spec,
                                         const TrainParams& params) {
  ModelSource m;
  auto from_dir = [&](const std::string& dir,
                      const std::string& what) -> absl::Status {
    auto config = ModelConfig::FromFile(dir + "/config.json");
    if (!config.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", config.status().message()));
    }
    m.config = *std::move(config);
    ASSIGN_OR_RETURN(m.tokenizer, OptionalTokenizer(dir));
    m.load_dir = dir;
    return absl::OkStatus();
  };
  if (!spec.resume_from.empty()) {
    RETURN_IF_ERROR(from_dir(spec.resume_from, "resume_from"));
    m.description = absl::StrCat("resumed from ", spec.resume_from);
  } else if (spec.model_config.has_value()) {
    m.config = *spec.model_config;
    ASSIGN_OR_RETURN(m.tokenizer, OptionalTokenizer(spec.tokenizer_dir));
    m.description = "test configuration (random initialisation)";
  } else if (absl::StartsWith(spec.model, "preset:")) {
    ASSIGN_OR_RETURN(const Preset preset, FindPreset(spec.model));
    m.config = preset.config;
    if (!preset.tokenizer_dir.empty()) {
      const std::string dir =
          ResolveAssetsDir(spec) + "/" + preset.tokenizer_dir;
      if (!std::filesystem::is_directory(dir)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the tokenizer of ", spec.model, " (", dir,
            ") is missing; run ./run setup (tools/prepare_assets.js) or set "
            "LATHE_ASSETS_DIR"));
      }
      ASSIGN_OR_RETURN(m.tokenizer, Tokenizer::FromDirectory(dir));
    }
    m.description = absl::StrCat(spec.model, " (random initialisation, seed ",
                                 params.seed, ")");
  } else {
    if (spec.model.empty() || !std::filesystem::is_directory(spec.model)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown model \"", spec.model,
          "\": expected a preset (preset:bert-tiny, ...) or a model "
          "directory"));
    }
    RETURN_IF_ERROR(from_dir(spec.model, spec.model));
    m.description = absl::StrCat("loaded ", spec.model);
  }
  return m;
}

// The token budget of one example: the job's max_seq_length within the
// model's positions (RoBERTa's start after the padding index).
int64_t MaxLength(const ModelConfig& config, const TrainParams& params) {
  const int64_t positions =
      config.architecture == Architecture::kRoberta
          ? config.max_position_embeddings - config.pad_token_id.value_or(1) - 1
          : config.max_position_embeddings;
  return std::min(params.max_seq_length, positions);
}

// Token types reach BERT only, the one family here whose Hugging Face class
// embeds them for every tokenizer.
void DropUnusedInputs(const TaskModelImpl& model, ModelInputs* in) {
  if (model.config().architecture != Architecture::kBert) {
    in->token_type_ids = torch::Tensor();
  }
}

absl::Status Train(const TrainSpec& spec, const std::string& out_dir,
                   const EventFn& emit) {
  auto log = [&](const std::string& message) {
    emit({{"type", "log"}, {"message", message}});
  };
  ASSIGN_OR_RETURN(const TrainParams params, ParseTrainParams(spec.params));
  ASSIGN_OR_RETURN(std::unique_ptr<Task> task, CreateTask(spec.task));
  const bool resuming = !spec.resume_from.empty();
  TrainerState resume;
  if (resuming) {
    ASSIGN_OR_RETURN(resume, ReadTrainerState(spec.resume_from));
    // Only the same trajectory can be continued exactly.
    const auto want = TrajectoryParams(params);
    const auto have = TrajectoryParams(resume.params);
    for (const auto& [name, value] : want) {
      if (have.at(name) != value) {
        return absl::InvalidArgumentError(absl::StrCat(
            "resume_from ", spec.resume_from, ": params[", name, "] is ",
            value.dump(), " but the checkpoint was trained with ",
            have.at(name).dump()));
      }
    }
  }

  // Model source and tokenizer, then the data (which the task reads with
  // the tokenizer), then the model with the task's head.
  torch::manual_seed(static_cast<uint64_t>(params.seed));
  const int64_t threads =
      params.num_threads > 0
          ? params.num_threads
          : std::max<int64_t>(1, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(threads));
  ASSIGN_OR_RETURN(ModelSource source, ResolveModel(spec, params));
  const int64_t max_length = MaxLength(source.config, params);
  TaskData data;
  data.train_path = spec.train_data;
  data.train_name = spec.train_name.empty() ? spec.train_data : spec.train_name;
  data.validation_path = spec.validation_data;
  data.validation_name = spec.validation_name.empty() ? spec.validation_data
                                                      : spec.validation_name;
  TaskContext context;
  context.params = &params;
  context.tokenizer = source.tokenizer.get();
  context.model_config = &source.config;
  context.max_length = max_length;
  context.log = log;
  const auto prepare_start = Clock::now();
  RETURN_IF_ERROR(task->Prepare(data, context));
  const double prepare_seconds =
      std::chrono::duration<double>(Clock::now() - prepare_start).count();
  // Tokenization happens once, here; batches are then cut from the cached
  // features. The figures let users (and the benchmark) see its cost.
  const std::vector<int64_t> lengths = task->train_lengths();
  int64_t train_tokens = 0;
  for (int64_t l : lengths) train_tokens += l;
  log(absl::StrCat(
      "data prepared in ", absl::SixDigits(prepare_seconds), " s (",
      task->train_size(), " training features",
      lengths.empty() ? "" : absl::StrCat(", ", train_tokens, " tokens"), ")"));
  if (params.group_by_length != 0 && lengths.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("params[group_by_length]: task ", task->name(),
                     " has rows of one size; leave it at 0"));
  }
  ASSIGN_OR_RETURN(const std::string train_sha,
                   DataFingerprint(spec.train_data));
  const nlohmann::json signature = task->Signature();
  std::vector<std::string> labels;
  {
    ModelConfig configured = source.config;
    task->ConfigureModel(&configured);
    labels = configured.id2label;
  }
  if (resuming) {
    if (resume.labels != labels) {
      return absl::InvalidArgumentError(absl::StrCat(
          "resume_from ", spec.resume_from, ": the checkpoint's labels [",
          absl::StrJoin(resume.labels, ", "), "] differ from the data's [",
          absl::StrJoin(labels, ", "), "]"));
    }
    if (resume.train_rows != task->train_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("resume_from ", spec.resume_from,
                       ": the checkpoint was trained on ", resume.train_rows,
                       " training rows, this data has ", task->train_size()));
    }
    if (!resume.train_data_sha256.empty() &&
        resume.train_data_sha256 != train_sha) {
      log(absl::StrCat("warning: ", data.train_name,
                       " differs from the data the checkpoint was trained on "
                       "(same row count); the resumed run is not exact"));
    }
  }
  TaskModel model;
  if (source.load_dir.empty()) {
    ModelConfig config = source.config;
    task->ConfigureModel(&config);
    RETURN_IF_ERROR(config.Validate());
    ASSIGN_OR_RETURN(model, CreateModel(config, task->head()));
  } else {
    auto loaded = LoadModel(source.load_dir, task->head(), labels, log);
    if (!loaded.ok()) {
      return loaded.status().code() == absl::StatusCode::kNotFound
                 ? absl::InvalidArgumentError(loaded.status().message())
                 : loaded.status();
    }
    model = *std::move(loaded);
  }
  task->ConfigureModel(model->mutable_config());
  model->mutable_config()->original["finetuning_task"] = task->name();
  log(absl::StrCat("model: ", source.description, " (",
                   model->architecture_class(), ")"));
  const Tokenizer* tokenizer = source.tokenizer.get();
  if (tokenizer != nullptr &&
      tokenizer->vocab_size() > model->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer has ", tokenizer->vocab_size(),
        " tokens but the model's vocab_size is ", model->config().vocab_size));
  }

  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(spec.device.empty() ? "cpu" : spec.device);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec: device \"", spec.device, "\" is not \"cpu\" or \"cuda:N\""));
  }
  if (device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", spec.device,
                       " requested but CUDA is not available to this LibTorch "
                       "build or machine"));
    }
    if (device.has_index() &&
        device.index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", spec.device, " does not exist (",
                       torch::cuda::device_count(), " CUDA devices)"));
    }
  } else if (!device.is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: device \"", spec.device, "\" is not supported"));
  }
  if (params.bf16 != 0) {
    log(absl::StrCat("bf16 autocast on ", device.str(),
                     ": forward and loss in bfloat16 where LibTorch's "
                     "autocast allows, weights, gradients and optimizer "
                     "state in float32; evaluation in float32"));
  }
  RETURN_IF_ERROR(ApplyTrainingMethod(*model, params, log));
  model->to(device);
  model->train();
  log(absl::StrCat("device: ", device.str(), ", threads: ", threads));

  const int64_t n_train = task->train_size();
  if (n_train == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(data.train_name, ": no training examples"));
  }
  const int64_t rows_per_step =
      params.batch_size * params.gradient_accumulation_steps;
  const int64_t steps_per_epoch = (n_train + rows_per_step - 1) / rows_per_step;
  int64_t total_steps = params.epochs * steps_per_epoch;
  if (params.max_steps > 0)
    total_steps = std::min(total_steps, params.max_steps);
  const int64_t warmup_steps =
      static_cast<int64_t>(std::ceil(params.warmup_ratio * total_steps));
  if (resuming && (resume.total_steps != total_steps ||
                   resume.steps_per_epoch != steps_per_epoch ||
                   resume.warmup_steps != warmup_steps ||
                   resume.max_length != max_length)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_from ", spec.resume_from, ": the checkpoint's schedule (",
        resume.total_steps, " steps, ", resume.steps_per_epoch,
        " per epoch, warmup ", resume.warmup_steps, ", max_length ",
        resume.max_length, ") differs from this job's (", total_steps, ", ",
        steps_per_epoch, ", ", warmup_steps, ", ", max_length, ")"));
  }

  // Biases and normalisation weights (the one-dimensional parameters of
  // every family here) are not decayed, as in Hugging Face. Frozen
  // parameters (LoRA's base, a linear probe's body) stay out.
  std::vector<torch::Tensor> decay, no_decay;
  std::vector<torch::Tensor> all_params;
  int64_t trainable = 0, total_count = 0;
  for (const auto& [key, value] : UniqueParameters(*model)) {
    total_count += value.numel();
    if (!value.requires_grad()) continue;
    trainable += value.numel();
    (value.dim() <= 1 ? no_decay : decay).push_back(value);
    all_params.push_back(value);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(params.learning_rate)
                              .weight_decay(params.weight_decay)
                              .eps(1e-8)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(params.learning_rate)
                              .weight_decay(0.0)
                              .eps(1e-8)));
  torch::optim::AdamW optimizer(
      groups, torch::optim::AdamWOptions(params.learning_rate));
  log(absl::StrCat(
      "training: ", total_steps, " steps (", steps_per_epoch, " per epoch",
      params.gradient_accumulation_steps > 1
          ? absl::StrCat(", ", params.gradient_accumulation_steps,
                         " micro-batches each")
          : std::string(),
      "), warmup ", warmup_steps, ", ", params.lr_scheduler_type,
      " schedule, max_length ", max_length, ", method ", params.method,
      ", trainable parameters ", trainable, " of ", total_count));

  const std::string best_metric = params.metric_for_best_model.empty()
                                      ? task->default_metric()
                                      : params.metric_for_best_model;
  const bool greater_better = task->greater_is_better(best_metric);
  std::optional<double> best_value;
  int64_t evals_without_improvement = 0;
  bool stop_early = false;

  double loss_since_report = 0;
  int64_t steps_since_report = 0;
  double steady_seconds = 0;       // Step time after this run's first step.
  double steady_data_seconds = 0;  // Of which building batches.
  int64_t steady_padded = 0;       // Token slots incl. padding.
  int64_t steady_samples = 0, steady_tokens = 0;
  double first_step_seconds = 0;
  int64_t first_step_samples = 0;
  int64_t steps_this_run = 0;
  int64_t step = 0;
  int64_t epoch = -1;
  std::vector<size_t> order;
  size_t cursor = 0;  // Rows of `order` already trained on.
  auto epoch_order = [&](int64_t e) {
    std::vector<size_t> o = EpochOrder(params.seed, e, n_train);
    if (params.group_by_length != 0) {
      GroupByLength(o, lengths, static_cast<size_t>(params.batch_size),
                    50 * static_cast<size_t>(rows_per_step), params.seed, e);
    }
    return o;
  };
  if (resuming) {
    RETURN_IF_ERROR(RestoreTrainingState(spec.resume_from, resume, model,
                                         optimizer, device, log));
    step = resume.global_step;
    epoch = resume.epoch;
    order = epoch_order(epoch);
    cursor = static_cast<size_t>(resume.position);
    loss_since_report = resume.loss_since_report;
    steps_since_report = resume.steps_since_report;
    log(absl::StrCat("resumed from checkpoint at step ", step));
  }

  TrainerState snapshot;
  snapshot.total_steps = total_steps;
  snapshot.steps_per_epoch = steps_per_epoch;
  snapshot.warmup_steps = warmup_steps;
  snapshot.train_rows = n_train;
  snapshot.validation_rows = task->validation_size();
  snapshot.train_data_sha256 = train_sha;
  snapshot.max_length = max_length;
  snapshot.labels = labels;
  snapshot.device = device.str();
  snapshot.params = params;
  // Evaluates when due, then writes a checkpoint (Hugging Face files plus the
  // training state) when due or requested. Draws nothing from any generator.
  auto after_step = [&](bool requested) -> absl::Status {
    const bool last = step == total_steps || stop_early;
    nlohmann::json metrics = nlohmann::json::object();
    if (task->validation_size() > 0 &&
        (last || (params.eval_steps > 0 && step % params.eval_steps == 0))) {
      absl::StatusOr<nlohmann::json> evaluated;
      {
        torch::NoGradGuard no_grad;
        model->eval();
        evaluated = task->Evaluate(*model, params.batch_size, device);
        model->train();
      }
      RETURN_IF_ERROR(evaluated.status());
      metrics = *std::move(evaluated);
      emit({{"type", "eval"}, {"step", step}, {"metrics", metrics}});
      if (metrics.contains(best_metric) && metrics[best_metric].is_number()) {
        const double v = metrics[best_metric].get<double>();
        if (!best_value ||
            (greater_better ? v > *best_value : v < *best_value)) {
          best_value = v;
          evals_without_improvement = 0;
        } else if (++evals_without_improvement >=
                       params.early_stopping_patience &&
                   params.early_stopping_patience > 0 && !last) {
          stop_early = true;
          log(absl::StrCat("early stopping at step ", step, ": ", best_metric,
                           " has not improved for ", evals_without_improvement,
                           " evaluations (best ", *best_value, ")"));
        }
      } else if (!metrics.empty()) {
        log(absl::StrCat("warning: metric_for_best_model \"", best_metric,
                         "\" is not among the task's metrics"));
      }
    }
    if (!(last || stop_early || requested ||
          (params.save_steps > 0 && step % params.save_steps == 0))) {
      return absl::OkStatus();
    }
    TrainerState state = snapshot;
    state.global_step = step;
    const bool epoch_done = cursor >= order.size();
    state.epoch = epoch_done ? epoch + 1 : epoch;
    state.position = epoch_done ? 0 : static_cast<int64_t>(cursor);
    state.loss_since_report = loss_since_report;
    state.steps_since_report = steps_since_report;
    const std::string dir = absl::StrCat(out_dir, "/checkpoint-", step);
    RETURN_IF_ERROR(WriteCheckpoint(
        *model, tokenizer, max_length, dir, [&](const std::string& tmp) {
          RETURN_IF_ERROR(
              SaveTrainingMethodOutputs(*model, params, spec.model, tmp));
          return WriteTrainingState(model, optimizer, device, state, tmp);
        }));
    nlohmann::json event = {{"type", "checkpoint"},
                            {"step", step},
                            {"dir", dir},
                            {"final", last || stop_early},
                            {"metrics", metrics},
                            {"metric_for_best_model", best_metric},
                            {"greater_is_better", greater_better}};
    if (requested) event["requested"] = true;
    emit(event);
    return absl::OkStatus();
  };
  if (resuming && step == total_steps) {
    // The interrupted attempt had finished: report its final checkpoint again.
    RETURN_IF_ERROR(after_step(g_checkpoint_requested.exchange(false)));
  }

  while (step < total_steps && !stop_early) {
    const auto t0 = Clock::now();
    if (cursor >= order.size()) {
      ++epoch;
      order = epoch_order(epoch);
      cursor = 0;
    }
    const double lr =
        LearningRate(params.lr_scheduler_type, step, params.learning_rate,
                     warmup_steps, total_steps);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    // Undefined rather than zeroed gradients: every step, the first after a
    // resume included, then computes them the same way.
    for (torch::Tensor& p : all_params) p.mutable_grad() = torch::Tensor();
    // One optimizer step over up to gradient_accumulation_steps
    // micro-batches, never past the end of the epoch. Each micro-batch's
    // loss is weighted by its share of the step's rows.
    const size_t step_end =
        std::min(order.size(), cursor + static_cast<size_t>(rows_per_step));
    const double step_rows = static_cast<double>(step_end - cursor);
    double loss_value = 0;
    int64_t samples = 0, tokens = 0, padded = 0;
    double data_seconds = 0;
    while (cursor < step_end) {
      const size_t end =
          std::min(step_end, cursor + static_cast<size_t>(params.batch_size));
      std::vector<size_t> indices(order.begin() + cursor, order.begin() + end);
      // Per-step randomness (masking) from (seed, step, micro-batch): the
      // same after a resume, without generator state to carry.
      torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(
          Mix64(Mix64(static_cast<uint64_t>(params.seed)) ^
                static_cast<uint64_t>(step) * 1315423911ull ^ cursor));
      const auto data_start = Clock::now();
      TaskBatch b = task->TrainBatch(indices, device, &gen);
      DropUnusedInputs(*model, &b.inputs);
      data_seconds +=
          std::chrono::duration<double>(Clock::now() - data_start).count();
      if (b.inputs.input_ids.defined()) padded += b.inputs.input_ids.numel();
      torch::Tensor loss;
      {
        Bf16Autocast autocast(params.bf16 != 0, device);
        loss = task->Loss(model->forward(b.inputs), b);
      }
      const double weight = static_cast<double>(end - cursor) / step_rows;
      (loss * weight).backward();
      loss_value += loss.item<double>() * weight;
      samples += b.examples;
      tokens += b.tokens;
      cursor = end;
    }
    if (params.max_grad_norm > 0) {
      torch::nn::utils::clip_grad_norm_(all_params, params.max_grad_norm);
    }
    AdamWStep(optimizer);
    ++step;
    ++steps_this_run;
    const double seconds =
        std::chrono::duration<double>(Clock::now() - t0).count();
    if (steps_this_run == 1) {
      first_step_seconds = seconds;
      first_step_samples = samples;
    } else {
      steady_seconds += seconds;
      steady_samples += samples;
      steady_tokens += tokens;
      steady_data_seconds += data_seconds;
      steady_padded += padded;
    }
    if (!std::isfinite(loss_value)) {
      return absl::InternalError(absl::StrCat("training diverged at step ",
                                              step, " (loss ", loss_value,
                                              "); try a lower learning_rate"));
    }
    loss_since_report += loss_value;
    ++steps_since_report;

    if (step == 1 || step % params.logging_steps == 0 || step == total_steps) {
      const double sps =
          steady_samples > 0
              ? steady_samples / std::max(1e-9, steady_seconds)
              : first_step_samples / std::max(1e-9, first_step_seconds);
      const double sec_per_step = steps_this_run > 1
                                      ? steady_seconds / (steps_this_run - 1)
                                      : first_step_seconds;
      nlohmann::json event = {
          {"type", "train"},
          {"step", step},
          {"total_steps", total_steps},
          {"epoch", static_cast<double>(step) / steps_per_epoch},
          {"loss", loss_since_report / steps_since_report},
          {"learning_rate", lr},
          {"samples_per_second", sps},
          {"eta_seconds", sec_per_step * (total_steps - step)}};
      if (steady_tokens > 0) {
        event["tokens_per_second"] =
            steady_tokens / std::max(1e-9, steady_seconds);
      }
      if (steady_padded > 0) {
        // Real tokens over token slots computed: 1 means no padding.
        event["padding_efficiency"] =
            static_cast<double>(steady_tokens) / steady_padded;
      }
      if (steady_seconds > 0) {
        // Share of step time spent building batches (collating cached
        // features, copying them to the device).
        event["data_time_share"] = steady_data_seconds / steady_seconds;
      }
      if (step == 1) {
        event["prepare_seconds"] = prepare_seconds;
        if (train_tokens > 0) event["train_tokens"] = train_tokens;
      }
      emit(event);
      loss_since_report = 0;
      steps_since_report = 0;
    }
    RETURN_IF_ERROR(after_step(g_checkpoint_requested.exchange(false)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<nlohmann::json>> Predict(
    const std::string& model_dir, const std::string& task_name,
    const std::string& input, const std::string& input_name,
    const std::map<std::string, std::string>& raw_params,
    const std::string& device_name, const LogFn& log) {
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

// The prediction job: predictions.jsonl in OUT/checkpoint-0, reported as
// the job's final checkpoint.
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

}  // namespace

absl::StatusOr<TrainSpec> TrainSpec::FromJson(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: invalid JSON: ", e.what()));
  }
  if (!j.is_object())
    return absl::InvalidArgumentError("spec: not a JSON object");
  TrainSpec s;
  ASSIGN_OR_RETURN(s.job_id, StringField(j, "job_id", false));
  ASSIGN_OR_RETURN(s.task, StringField(j, "task", false));
  if (s.task.empty()) s.task = "text-classification";
  ASSIGN_OR_RETURN(s.model, StringField(j, "model", true));
  ASSIGN_OR_RETURN(s.train_data, StringField(j, "train_data", true));
  ASSIGN_OR_RETURN(s.train_name, StringField(j, "train_name", false));
  ASSIGN_OR_RETURN(s.validation_data, StringField(j, "validation_data", false));
  ASSIGN_OR_RETURN(s.validation_name, StringField(j, "validation_name", false));
  ASSIGN_OR_RETURN(s.device, StringField(j, "device", false));
  if (s.device.empty()) s.device = "cpu";
  ASSIGN_OR_RETURN(s.assets_dir, StringField(j, "assets_dir", false));
  ASSIGN_OR_RETURN(s.resume_from, StringField(j, "resume_from", false));
  ASSIGN_OR_RETURN(s.mode, StringField(j, "mode", false));
  if (s.mode.empty()) s.mode = "train";
  if (s.mode != "train" && s.mode != "predict") {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: mode \"", s.mode, "\" is not train or predict"));
  }
  if (j.contains("params") && !j["params"].is_null()) {
    if (!j["params"].is_object()) {
      return absl::InvalidArgumentError("spec: \"params\" is not an object");
    }
    for (auto it = j["params"].begin(); it != j["params"].end(); ++it) {
      if (it.value().is_string()) {
        s.params[it.key()] = it.value().get<std::string>();
      } else if (it.value().is_number()) {
        s.params[it.key()] = it.value().dump();
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("spec: params[", it.key(), "] is not a string"));
      }
    }
  }
  return s;
}

absl::Status RunTraining(const TrainSpec& spec, const std::string& out_dir,
                         const EventFn& emit) {
  absl::Status status;
  try {
    status = MakeDirs(out_dir);
    if (status.ok()) {
      status = spec.mode == "predict" ? PredictToCheckpoint(spec, out_dir, emit)
                                      : Train(spec, out_dir, emit);
    }
  } catch (const c10::Error& e) {
    status = absl::InternalError(
        absl::StrCat("LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory (std::bad_alloc: ", e.what(), ")"));
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("error: ", e.what()));
  }
  // LibTorch reports allocation failures as c10::Error ("CUDA out of
  // memory", "DefaultCPUAllocator: not enough memory"), some of them caught
  // and wrapped deeper down.
  if (status.code() == absl::StatusCode::kInternal &&
      IsOutOfMemoryMessage(status.message())) {
    return absl::ResourceExhaustedError(status.message());
  }
  return status;
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
    ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                     Tokenizer::FromDirectory(ResolveAssetsDir(spec) + "/" +
                                              p.tokenizer_dir));
    const bool decoder = p.config.architecture == Architecture::kGpt2 ||
                         p.config.architecture == Architecture::kLlama;
    torch::manual_seed(static_cast<uint64_t>(seed));
    ASSIGN_OR_RETURN(TaskModel model,
                     CreateModel(p.config, decoder ? HeadKind::kCausalLm
                                                   : HeadKind::kMaskedLm));
    const std::string tmp = dir + ".tmp";
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);
    RETURN_IF_ERROR(MakeDirs(tmp));
    RETURN_IF_ERROR(SaveModel(*model, tmp));
    RETURN_IF_ERROR(tokenizer->CopyFilesTo(tmp));
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

void RequestCheckpoint() {
  g_checkpoint_requested.store(true, std::memory_order_relaxed);
}

void InstallCheckpointSignalHandler() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnCheckpointSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, nullptr);
  // A parent may block SIGUSR1 across fork/exec so that a request sent
  // before this point stays pending instead of killing the child; it is
  // delivered here.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);
}

int ExitCodeForStatus(const absl::Status& status) {
  if (status.ok()) return 0;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
      return 2;
    case absl::StatusCode::kResourceExhausted:
      return 3;
    default:
      return 1;
  }
}

}  // namespace lathe
