#include "worker/models/lora.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/models/linear.h"

namespace lathe {
namespace {

constexpr char kPeftPrefix[] = "base_model.model.";
constexpr char kAdapterConfig[] = "adapter_config.json";
constexpr char kAdapterWeights[] = "adapter_model.safetensors";
// Bounds on what an adapter file may ask for.
constexpr int64_t kMaxRank = 4096;
constexpr size_t kMaxAdapterConfigBytes = 1 << 20;

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string LastComponent(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

std::string FirstComponent(const std::string& name) {
  return name.substr(0, name.find('.'));
}

// PEFT's matching of a target_modules entry against a module name: the
// whole name, or a suffix starting at a component boundary.
bool TargetMatches(const std::string& module, const std::string& target) {
  return module == target || absl::EndsWith(module, "." + target);
}

// The model's projections by name, in registration order.
std::vector<std::pair<std::string, LinearImpl*>> Projections(
    TaskModelImpl& model) {
  std::vector<std::pair<std::string, LinearImpl*>> out;
  for (const auto& item :
       model.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    if (auto* linear = item.value()->as<LinearImpl>()) {
      out.emplace_back(item.key(), linear);
    }
  }
  return out;
}

// Modules that own a head parameter: every module name that is a proper
// prefix of a head parameter's name.
std::set<std::string> HeadModules(TaskModelImpl& model) {
  std::set<std::string> out;
  for (const std::string& name : model.head_parameter_names()) {
    for (size_t dot = name.find('.'); dot != std::string::npos;
         dot = name.find('.', dot + 1)) {
      out.insert(name.substr(0, dot));
    }
  }
  return out;
}

bool IsAdapterTensor(const std::string& name) {
  return absl::StrContains(name, ".lora_A.") ||
         absl::StrContains(name, ".lora_B.");
}

bool HeadIsNew(HeadKind head) {
  return head == HeadKind::kSequenceClassification ||
         head == HeadKind::kTokenClassification ||
         head == HeadKind::kQuestionAnswering;
}

std::optional<std::string> PeftTaskType(HeadKind head) {
  switch (head) {
    case HeadKind::kSequenceClassification:
      return "SEQ_CLS";
    case HeadKind::kTokenClassification:
      return "TOKEN_CLS";
    case HeadKind::kQuestionAnswering:
      return "QUESTION_ANS";
    case HeadKind::kCausalLm:
      return "CAUSAL_LM";
    case HeadKind::kNone:
      return "FEATURE_EXTRACTION";
    default:
      // PEFT has no task type for masked language modelling.
      return std::nullopt;
  }
}

double Scaling(double alpha, int64_t r, bool rslora) {
  return rslora ? alpha / std::sqrt(static_cast<double>(r))
                : alpha / static_cast<double>(r);
}

absl::Status ValidateOptions(const LoraOptions& o) {
  if (o.r < 1 || o.r > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat("lora_r must be in 1..", kMaxRank, ", got ", o.r));
  }
  if (!(o.alpha > 0) || !std::isfinite(o.alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lora_alpha must be positive, got ", o.alpha));
  }
  if (!(o.dropout >= 0 && o.dropout < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lora_dropout must be in [0, 1), got ", o.dropout));
  }
  return absl::OkStatus();
}

// Sets requires_grad on every parameter: true for adapters and `trained`.
void Freeze(TaskModelImpl& model, const std::set<std::string>& trained) {
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    item.value().set_requires_grad(IsAdapterTensor(item.key()) ||
                                   trained.count(item.key()) > 0);
  }
}

// Copies a safetensors tensor of a floating dtype into `target`.
absl::Status CopyTensor(const std::string& file, const std::string& name,
                        const SafetensorsFile::Tensor& t,
                        torch::Tensor target) {
  torch::ScalarType type;
  if (t.dtype == "F32") {
    type = torch::kFloat32;
  } else if (t.dtype == "F16") {
    type = torch::kFloat16;
  } else if (t.dtype == "BF16") {
    type = torch::kBFloat16;
  } else if (t.dtype == "F64") {
    type = torch::kFloat64;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor \"", name, "\" has dtype ", t.dtype,
                     "; adapter tensors must be floating point"));
  }
  torch::Tensor staged = torch::empty(t.shape, torch::dtype(type));
  if (t.nbytes != static_cast<size_t>(staged.numel()) * staged.element_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": tensor \"", name, "\" has a bad byte count"));
  }
  if (t.nbytes > 0) std::memcpy(staged.data_ptr(), t.data, t.nbytes);
  torch::NoGradGuard no_grad;
  target.copy_(staged);
  return absl::OkStatus();
}

// Parameter of `model` named `name`, or undefined.
torch::Tensor FindParameter(TaskModelImpl& model, const std::string& name) {
  auto params = model.named_parameters(/*recurse=*/true);
  const torch::Tensor* t = params.find(name);
  return t == nullptr ? torch::Tensor() : *t;
}

std::string DescribeCounts(TaskModelImpl& model) {
  int64_t total = 0, trainable = 0, adapters = 0;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const int64_t n = item.value().numel();
    total += n;
    if (item.value().requires_grad()) trainable += n;
    if (IsAdapterTensor(item.key())) adapters += n;
  }
  const double percent =
      total > 0 ? 100.0 * static_cast<double>(trainable) / total : 0.0;
  char percent_text[32];
  std::snprintf(percent_text, sizeof(percent_text), "%.3f", percent);
  return absl::StrCat("trainable parameters ", trainable, " of ", total, " (",
                      percent_text, "%; adapters ", adapters, ", head ",
                      trainable - adapters, ")");
}

}  // namespace

double LoraOptions::scaling() const { return Scaling(alpha, r, use_rslora); }

absl::StatusOr<std::vector<std::string>> DefaultLoraTargets(
    const ModelConfig& config) {
  switch (config.architecture) {
    case Architecture::kBert:
    case Architecture::kRoberta:
    case Architecture::kVit:
      return std::vector<std::string>{"query", "value"};
    case Architecture::kDistilBert:
      return std::vector<std::string>{"q_lin", "v_lin"};
    case Architecture::kGpt2:
      return std::vector<std::string>{"c_attn"};
    case Architecture::kLlama:
    case Architecture::kWav2Vec2:
      return std::vector<std::string>{"q_proj", "v_proj"};
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("LoRA has no default target modules for model_type \"",
                   config.model_type, "\"; set params[lora_target_modules]"));
}

std::vector<std::string> ParseTargetModules(const std::string& csv) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(csv, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

absl::StatusOr<LoraOptions> LoraOptionsFromParams(const TrainParams& params) {
  LoraOptions o;
  o.r = params.lora_r;
  o.alpha = params.lora_alpha;
  o.dropout = params.lora_dropout;
  o.use_rslora = params.use_rslora != 0;
  o.target_modules = ParseTargetModules(params.lora_target_modules);
  absl::Status s = ValidateOptions(o);
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("params[", s.message().substr(0, s.message().find(' ')),
                     "]: ", s.message()));
  }
  return o;
}

std::vector<std::string> LoraModuleNames(TaskModelImpl& model) {
  std::vector<std::string> out;
  for (const auto& [name, linear] : Projections(model)) {
    if (linear->has_lora()) out.push_back(name);
  }
  return out;
}

std::vector<std::string> LoraTrainedHeadNames(TaskModelImpl& model) {
  if (!HeadIsNew(model.head())) return {};
  return model.head_parameter_names();
}

int64_t TrainableParameterCount(TaskModelImpl& model) {
  int64_t n = 0;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) n += item.value().numel();
  }
  return n;
}

absl::Status MergeLora(TaskModelImpl& model) {
  try {
    for (const auto& [name, linear] : Projections(model)) {
      linear->MergeLora();
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("merging LoRA adapters: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::Status ApplyLora(TaskModelImpl& model, const LoraOptions& options,
                       const LogFn& log) {
  RETURN_IF_ERROR(ValidateOptions(options));
  std::vector<std::string> targets = options.target_modules;
  if (targets.empty()) {
    ASSIGN_OR_RETURN(targets, DefaultLoraTargets(model.config()));
  }
  const std::set<std::string> head_modules = HeadModules(model);
  const auto projections = Projections(model);
  std::vector<LinearImpl*> selected;
  std::vector<std::string> selected_names;
  std::set<std::string> matched_targets;
  std::set<std::string> candidates;
  for (const auto& [name, linear] : projections) {
    if (head_modules.count(name)) continue;
    candidates.insert(LastComponent(name));
    for (const std::string& target : targets) {
      if (TargetMatches(name, target)) {
        matched_targets.insert(target);
        selected.push_back(linear);
        selected_names.push_back(name);
        break;
      }
    }
  }
  for (const std::string& target : targets) {
    if (!matched_targets.count(target)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lora_target_modules: \"", target, "\" names no projection of ",
          model.architecture_class(), "; its projections are ",
          candidates.empty() ? std::string("none")
                             : absl::StrJoin(candidates, ", ")));
    }
  }
  const double scaling = options.scaling();
  try {
    // Adapters the model came with (a LoRA checkpoint) continue when they
    // are exactly what these options would attach; otherwise they are
    // folded into the weights before fresh ones start.
    const std::vector<std::string> existing = LoraModuleNames(model);
    bool keep = existing == selected_names;
    for (LinearImpl* l : selected) {
      keep = keep && l->lora_rank() == options.r &&
             std::abs(l->lora_scaling() - scaling) <=
                 1e-12 * std::max(1.0, std::abs(scaling));
    }
    if (keep) {
      for (LinearImpl* l : selected) l->SetLoraDropout(options.dropout);
      if (log) {
        log(absl::StrCat("lora: continuing the ", existing.size(),
                         " adapters the model was loaded with"));
      }
    } else {
      if (!existing.empty()) {
        RETURN_IF_ERROR(MergeLora(model));
        if (log) {
          log(absl::StrCat("lora: merged the model's ", existing.size(),
                           " earlier adapters into its weights"));
        }
      }
      for (LinearImpl* l : selected) {
        l->AttachLora(options.r, scaling, options.dropout);
      }
    }
    const std::vector<std::string> head = LoraTrainedHeadNames(model);
    Freeze(model, std::set<std::string>(head.begin(), head.end()));
    if (log) {
      log(absl::StrCat(
          "lora: r=", options.r, ", alpha=", options.alpha, ", scaling ",
          scaling, options.use_rslora ? " (rsLoRA)" : "", ", dropout ",
          options.dropout, ", targets [", absl::StrJoin(targets, ", "),
          "]: ", selected.size(), " adapted modules; ", DescribeCounts(model)));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("attaching LoRA adapters: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::Status ApplyLinearProbe(TaskModelImpl& model, const LogFn& log) {
  const std::vector<std::string> head = model.head_parameter_names();
  if (head.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("linear-probe needs a head with parameters of its own; ",
                     model.architecture_class(),
                     " has none (its head is tied to the input embedding)"));
  }
  if (!LoraModuleNames(model).empty()) {
    RETURN_IF_ERROR(MergeLora(model));
    if (log) log("linear probe: merged the model's LoRA adapters");
  }
  const std::set<std::string> keep(head.begin(), head.end());
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    item.value().set_requires_grad(keep.count(item.key()) > 0);
  }
  if (log) {
    log(absl::StrCat("linear probe: the base is frozen, the head (",
                     absl::StrJoin(head, ", "), ") trains; ",
                     DescribeCounts(model)));
  }
  return absl::OkStatus();
}

absl::Status SavePeftAdapter(TaskModelImpl& model, const LoraOptions& options,
                             const std::string& dir) {
  const auto projections = Projections(model);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  bool fan_in_fan_out = false;
  try {
    for (const auto& [name, linear] : projections) {
      if (!linear->has_lora()) continue;
      fan_in_fan_out = fan_in_fan_out || linear->fan_in_fan_out();
      tensors.emplace_back(kPeftPrefix + name + ".lora_A.weight",
                           linear->lora_A->weight);
      tensors.emplace_back(kPeftPrefix + name + ".lora_B.weight",
                           linear->lora_B->weight);
    }
    if (tensors.empty()) {
      return absl::FailedPreconditionError(
          "the model holds no LoRA adapters to save");
    }
    // PEFT saves a modules_to_save module under its own name (the wrapper's
    // "modules_to_save.default" dropped).
    std::set<std::string> modules_to_save;
    for (const std::string& name : LoraTrainedHeadNames(model)) {
      torch::Tensor t = FindParameter(model, name);
      if (!t.defined()) continue;
      modules_to_save.insert(FirstComponent(name));
      tensors.emplace_back(kPeftPrefix + name, t);
    }
    std::vector<torch::Tensor> keep;
    std::vector<TensorView> views;
    for (const auto& [name, value] : tensors) {
      torch::Tensor t = value.detach().to(torch::kCPU, torch::kFloat32);
      t = t.contiguous();
      keep.push_back(t);
      TensorView v;
      v.name = name;
      v.dtype = "F32";
      v.shape = t.sizes().vec();
      v.data = t.data_ptr();
      v.nbytes = static_cast<size_t>(t.numel()) * t.element_size();
      views.push_back(std::move(v));
    }
    RETURN_IF_ERROR(WriteSafetensors(dir + "/" + kAdapterWeights, views,
                                     {{"format", "pt"}}));

    std::vector<std::string> targets = options.target_modules;
    if (targets.empty()) {
      ASSIGN_OR_RETURN(targets, DefaultLoraTargets(model.config()));
    }
    nlohmann::json config = {
        {"peft_type", "LORA"},
        {"r", options.r},
        {"lora_dropout", options.dropout},
        {"use_rslora", options.use_rslora},
        {"target_modules", targets},
        {"fan_in_fan_out", fan_in_fan_out},
        {"bias", "none"},
        {"inference_mode", true},
        {"init_lora_weights", true},
        {"use_dora", false},
        {"rank_pattern", nlohmann::json::object()},
        {"alpha_pattern", nlohmann::json::object()},
        {"layers_to_transform", nullptr},
        {"layers_pattern", nullptr},
        {"revision", nullptr},
    };
    // PEFT declares lora_alpha an integer; keep it one when it is.
    if (options.alpha == std::floor(options.alpha) && options.alpha < 1e15) {
      config["lora_alpha"] = static_cast<int64_t>(options.alpha);
    } else {
      config["lora_alpha"] = options.alpha;
    }
    const std::optional<std::string> task = PeftTaskType(model.head());
    config["task_type"] =
        task.has_value() ? nlohmann::json(*task) : nlohmann::json(nullptr);
    config["modules_to_save"] =
        modules_to_save.empty()
            ? nlohmann::json(nullptr)
            : nlohmann::json(std::vector<std::string>(modules_to_save.begin(),
                                                      modules_to_save.end()));
    config["base_model_name_or_path"] =
        options.base_model_name_or_path.empty()
            ? nlohmann::json(nullptr)
            : nlohmann::json(options.base_model_name_or_path);
    return WriteFileAtomic(dir + "/" + kAdapterConfig, config.dump(2) + "\n");
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("saving the adapter: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("saving the adapter: ", e.what()));
  }
}

absl::Status LoadPeftAdapter(TaskModelImpl& model, const std::string& dir,
                             const LogFn& log) {
  const std::string config_path = dir + "/" + kAdapterConfig;
  if (!PathExists(config_path)) {
    return absl::NotFoundError(absl::StrCat(dir, " has no ", kAdapterConfig));
  }
  std::error_code size_ec;
  const auto size = std::filesystem::file_size(config_path, size_ec);
  if (size_ec || size > kMaxAdapterConfigBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": unreadable or larger than ",
                     kMaxAdapterConfigBytes, " bytes"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  nlohmann::json config =
      nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", why));
  };
  if (!config.is_object()) return bad("not a JSON object");
  if (config.value("peft_type", std::string()) != "LORA") {
    return bad("peft_type is not \"LORA\"");
  }
  if (!config.contains("r") || !config["r"].is_number_integer() ||
      !config.contains("lora_alpha") || !config["lora_alpha"].is_number()) {
    return bad("r (an integer) and lora_alpha (a number) are required");
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (config.contains(key) && !config[key].is_null() &&
        !(config[key].is_object() && config[key].empty())) {
      return bad(absl::StrCat(key, " is not supported"));
    }
  }
  if (config.contains("use_dora") && config["use_dora"].is_boolean() &&
      config["use_dora"].get<bool>()) {
    return bad("use_dora is not supported");
  }
  if (config.contains("bias") && config["bias"].is_string() &&
      config["bias"].get<std::string>() != "none") {
    return bad("bias \"" + config["bias"].get<std::string>() +
               "\" is not supported (only \"none\")");
  }
  const double alpha = config["lora_alpha"].get<double>();
  const bool rslora = config.value("use_rslora", false);
  double dropout = 0;
  if (config.contains("lora_dropout") && config["lora_dropout"].is_number()) {
    dropout = config["lora_dropout"].get<double>();
  }
  if (!(alpha > 0) || !std::isfinite(alpha)) return bad("lora_alpha <= 0");
  if (!(dropout >= 0 && dropout < 1)) dropout = 0;

  auto file_or = SafetensorsFile::Open(dir + "/" + kAdapterWeights);
  if (!file_or.ok()) return file_or.status();
  const SafetensorsFile& file = **file_or;
  const std::string weights_path = dir + "/" + kAdapterWeights;

  std::map<std::string, LinearImpl*> projections;
  for (const auto& [name, linear] : Projections(model)) {
    projections[name] = linear;
  }
  // Module name -> (lora_A, lora_B) tensors; head tensors by model name.
  std::map<std::string, std::pair<const SafetensorsFile::Tensor*,
                                  const SafetensorsFile::Tensor*>>
      adapters;
  std::vector<std::pair<std::string, const SafetensorsFile::Tensor*>> others;
  for (const auto& [saved, tensor] : file.tensors()) {
    if (!absl::StartsWith(saved, kPeftPrefix)) {
      return bad(absl::StrCat(weights_path, ": tensor \"", saved,
                              "\" lacks the \"", kPeftPrefix, "\" prefix"));
    }
    std::string name = saved.substr(std::strlen(kPeftPrefix));
    // Accept the in-memory spellings too (adapter name kept).
    for (const char* from : {".lora_A.default.", ".lora_B.default."}) {
      const size_t at = name.find(from);
      if (at != std::string::npos) name.erase(at + 7, 8);
    }
    const size_t wrapped = name.find(".modules_to_save.default.");
    if (wrapped != std::string::npos) name.erase(wrapped, 24);
    for (const char* part : {".lora_A.weight", ".lora_B.weight"}) {
      if (absl::EndsWith(name, part)) {
        const std::string module = name.substr(0, name.size() - 14);
        auto& slot = adapters[module];
        (part[6] == 'A' ? slot.first : slot.second) = &tensor;
        name.clear();
        break;
      }
    }
    if (!name.empty()) others.emplace_back(name, &tensor);
  }
  if (adapters.empty()) {
    return bad(absl::StrCat(weights_path, " holds no lora_A/lora_B tensors"));
  }
  try {
    if (!LoraModuleNames(model).empty()) RETURN_IF_ERROR(MergeLora(model));
    for (const auto& [module, pair] : adapters) {
      auto it = projections.find(module);
      if (it == projections.end()) {
        return bad(absl::StrCat(weights_path, ": \"", module,
                                "\" is not a projection of ",
                                model.architecture_class()));
      }
      const auto* a = pair.first;
      const auto* b = pair.second;
      if (a == nullptr || b == nullptr) {
        return bad(absl::StrCat(weights_path, ": \"", module,
                                "\" lacks its lora_A or lora_B tensor"));
      }
      LinearImpl* linear = it->second;
      if (a->shape.size() != 2 || b->shape.size() != 2 || a->shape[0] < 1 ||
          a->shape[0] > kMaxRank || a->shape[1] != linear->in_features() ||
          b->shape[0] != linear->out_features() || b->shape[1] != a->shape[0]) {
        return bad(absl::StrCat(weights_path, ": \"", module, "\" has lora_A ",
                                ShapeString(a->shape), " and lora_B ",
                                ShapeString(b->shape), "; the projection is ",
                                linear->in_features(), " -> ",
                                linear->out_features()));
      }
      const int64_t r = a->shape[0];
      linear->AttachLora(r, Scaling(alpha, r, rslora), dropout);
      RETURN_IF_ERROR(CopyTensor(weights_path, module + ".lora_A.weight", *a,
                                 linear->lora_A->weight));
      RETURN_IF_ERROR(CopyTensor(weights_path, module + ".lora_B.weight", *b,
                                 linear->lora_B->weight));
    }
    std::vector<std::string> skipped;
    for (const auto& [name, tensor] : others) {
      torch::Tensor target = FindParameter(model, name);
      if (!target.defined()) {
        return bad(absl::StrCat(weights_path, ": tensor \"", name,
                                "\" is not a parameter of ",
                                model.architecture_class()));
      }
      if (tensor->shape != target.sizes().vec()) {
        skipped.push_back(absl::StrCat(name, " ", ShapeString(tensor->shape),
                                       " vs ", ShapeString(target.sizes())));
        continue;
      }
      RETURN_IF_ERROR(CopyTensor(weights_path, name, *tensor, target));
    }
    if (log) {
      log(absl::StrCat("loaded the LoRA adapter in ", dir, ": ",
                       adapters.size(), " adapted modules, ", others.size(),
                       " other tensors"));
      if (!skipped.empty()) {
        log(absl::StrCat("adapter head tensors sized for other labels were ",
                         "skipped: ", absl::StrJoin(skipped, "; ")));
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("loading the adapter in ", dir,
                                            ": ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::Status SaveMergedModel(TaskModelImpl& model, const std::string& dir) {
  std::vector<std::pair<LinearImpl*, torch::Tensor>> saved;
  absl::Status status;
  try {
    torch::NoGradGuard no_grad;
    for (const auto& [name, linear] : Projections(model)) {
      if (!linear->has_lora()) continue;
      saved.emplace_back(linear, linear->weight.detach().clone());
      linear->weight.add_(linear->LoraDelta());
    }
    status = SaveModel(model, dir);
    for (auto& [linear, original] : saved) linear->weight.copy_(original);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("saving the merged model: ", e.what_without_backtrace()));
  }
  return status;
}

absl::Status ApplyMethod(TaskModelImpl& model, const TrainParams& params,
                         const LogFn& log) {
  // DPO trains like full fine-tuning or LoRA; only its loss differs.
  if (params.method == "full" || params.method == "dpo") {
    const size_t n = LoraModuleNames(model).size();
    if (n > 0) {
      RETURN_IF_ERROR(MergeLora(model));
      if (log) {
        log(absl::StrCat("full fine-tuning: merged the model's ", n,
                         " LoRA adapters into its weights"));
      }
    }
    return absl::OkStatus();
  }
  if (params.method == "linear-probe") return ApplyLinearProbe(model, log);
  if (MethodUsesLora(params.method)) {
    ASSIGN_OR_RETURN(LoraOptions options, LoraOptionsFromParams(params));
    return ApplyLora(model, options, log);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("params[method]: \"", params.method,
                   "\" is not one of full, lora, linear-probe, dpo, dpo-lora"));
}

absl::Status SaveMethodOutputs(TaskModelImpl& model, const TrainParams& params,
                               const std::string& dir,
                               const std::string& base_model,
                               bool write_merged) {
  if (!MethodUsesLora(params.method)) return absl::OkStatus();
  ASSIGN_OR_RETURN(LoraOptions options, LoraOptionsFromParams(params));
  options.base_model_name_or_path = base_model;
  RETURN_IF_ERROR(SavePeftAdapter(model, options, dir));
  if (!write_merged) return absl::OkStatus();
  const std::string merged = dir + "/merged";
  RETURN_IF_ERROR(MakeDirs(merged));
  RETURN_IF_ERROR(SaveMergedModel(model, merged));
  // The tokenizer travels with the merged model so it loads on its own.
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const char* name :
       {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
        "added_tokens.json", "generation_config.json"}) {
    const std::string from = dir + "/" + name;
    if (!PathExists(from)) continue;
    fs::copy_file(from, merged + "/" + name,
                  fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("copying ", from, " to ", merged, ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace lathe
