// The family-independent parts of model.h: dispatch to the families, and
// loading and saving Hugging Face directories by tensor name.
#include "worker/models/model.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "worker/models/family_models.h"
#include "worker/models/lora.h"

namespace lathe {
namespace {

bool IsEncoder(Architecture a) {
  return a == Architecture::kBert || a == Architecture::kRoberta ||
         a == Architecture::kDistilBert;
}

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string FirstComponent(const std::string& name) {
  return name.substr(0, name.find('.'));
}

// The checkpoint dtype as torch's, or nullopt for one torch lacks.
std::optional<torch::ScalarType> TorchType(const std::string& dtype) {
  static const std::map<std::string, torch::ScalarType>* const kTypes =
      new std::map<std::string, torch::ScalarType>{
          {"F64", torch::kFloat64}, {"F32", torch::kFloat32},
          {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
          {"I64", torch::kInt64},   {"I32", torch::kInt32},
          {"I16", torch::kInt16},   {"I8", torch::kInt8},
          {"U8", torch::kUInt8},    {"BOOL", torch::kBool}};
  auto it = kTypes->find(dtype);
  if (it == kTypes->end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> SafetensorsType(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return "F32";
    case torch::kInt64:
      return "I64";
    case torch::kInt32:
      return "I32";
    case torch::kInt16:
      return "I16";
    case torch::kInt8:
      return "I8";
    case torch::kUInt8:
      return "U8";
    case torch::kBool:
      return "BOOL";
    default:
      return std::nullopt;
  }
}

// Copies checkpoint tensor `t` (named `name`, shape already checked) into
// `target`, converting floating types to the target's: floating-point data
// only into floating-point tensors, integers only into integer buffers.
absl::Status CopyInto(const std::string& name,
                      const SafetensorsModel::Entry& entry,
                      torch::Tensor& target) {
  const SafetensorsFile::Tensor& t = *entry.tensor;
  const std::optional<torch::ScalarType> type = TorchType(t.dtype);
  if (!type.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        entry.file, ": tensor \"", name, "\" has unsupported dtype ", t.dtype));
  }
  const bool source_float = torch::isFloatingType(*type);
  const bool target_float = torch::isFloatingType(target.scalar_type());
  if (source_float != target_float) {
    return absl::InvalidArgumentError(absl::StrCat(
        entry.file, ": tensor \"", name, "\" has dtype ", t.dtype,
        ", the model holds ", target_float ? "floating-point" : "integer",
        " values there"));
  }
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().dtype(*type);
  const size_t element = torch::elementSize(*type);
  if (reinterpret_cast<uintptr_t>(t.data) % element == 0) {
    // Aligned (the usual case): read the mapped bytes in place, one copy.
    // from_blob does not write through the pointer; copy_ only reads it.
    torch::Tensor view =
        torch::from_blob(const_cast<uint8_t*>(t.data), t.shape, options);
    target.copy_(view);
  } else {
    torch::Tensor staged = torch::empty(t.shape, options);
    if (t.nbytes > 0) std::memcpy(staged.data_ptr(), t.data, t.nbytes);
    target.copy_(staged);
  }
  return absl::OkStatus();
}

// HF's legacy LayerNorm names (TF-converted checkpoints).
std::string ModernName(const std::string& name) {
  if (absl::EndsWith(name, ".gamma")) {
    return name.substr(0, name.size() - 6) + ".weight";
  }
  if (absl::EndsWith(name, ".beta")) {
    return name.substr(0, name.size() - 5) + ".bias";
  }
  return name;
}

absl::Status LoadWeights(TaskModelImpl& model, const SafetensorsModel& weights,
                         const std::vector<std::string>& saved_labels,
                         const LogFn& log) {
  const std::string prefix = model.base_prefix();
  const std::string pfx = prefix.empty() ? "" : prefix + ".";
  std::map<std::string, torch::Tensor> targets;
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    targets.emplace(item.key(), item.value());
  }
  for (auto& item : model.named_buffers(/*recurse=*/true)) {
    targets.emplace(item.key(), item.value());
  }
  std::map<std::string, std::string> alias_source;
  for (const auto& [alias, source] : model.tied_parameters()) {
    alias_source[alias] = source;
  }
  const std::vector<std::string> head_list = model.head_parameter_names();
  const std::set<std::string> heads(head_list.begin(), head_list.end());
  auto strip = [&](const std::string& n) {
    return !pfx.empty() && absl::StartsWith(n, pfx) ? n.substr(pfx.size()) : n;
  };
  // The backbone's top-level components ("embeddings", "encoder", ...): a
  // checkpoint tensor under one of them that the model lacks is an
  // architecture mismatch, not another task's head.
  std::set<std::string> backbone_roots;
  for (const auto& [name, t] : targets) {
    if (heads.count(name) || alias_source.count(name)) continue;
    backbone_roots.insert(FirstComponent(strip(name)));
  }
  auto known = [&](const std::string& n) {
    return targets.count(n) > 0 || alias_source.count(n) > 0;
  };
  // Checkpoints name the backbone with or without the prefix, whichever way
  // the model does.
  auto resolve = [&](const std::string& n) -> std::string {
    if (known(n)) return n;
    if (!pfx.empty()) {
      if (known(pfx + n)) return pfx + n;
      if (absl::StartsWith(n, pfx) && known(n.substr(pfx.size()))) {
        return n.substr(pfx.size());
      }
    }
    return "";
  };

  std::map<std::string, std::string> loaded_from;  // model name -> file name
  std::map<std::string, std::pair<std::string, const SafetensorsModel::Entry*>>
      alias_entries;  // source -> checkpoint tensor stored under an alias
  std::vector<std::string> other_heads;
  std::vector<std::string> resized_heads;
  for (const auto& [name, entry] : weights.tensors()) {
    std::string m = resolve(name);
    if (m.empty() && ModernName(name) != name) m = resolve(ModernName(name));
    if (m.empty() && model.CanonicalName(name) != name) {
      m = resolve(model.CanonicalName(name));
    }
    if (m.empty()) {
      const std::string stripped = strip(ModernName(name));
      if (model.IgnoredOnLoad(stripped)) continue;
      if ((!pfx.empty() && absl::StartsWith(name, pfx)) ||
          backbone_roots.count(FirstComponent(stripped))) {
        return absl::InvalidArgumentError(absl::StrCat(
            entry.file, ": unexpected tensor \"", name, "\" (shape ",
            ShapeString(entry.tensor->shape), "): the ",
            model.architecture_class(), " backbone has no such parameter"));
      }
      other_heads.push_back(name);
      continue;
    }
    if (auto a = alias_source.find(m); a != alias_source.end()) {
      alias_entries[a->second] = {name, &entry};
      continue;
    }
    if (auto prev = loaded_from.find(m); prev != loaded_from.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(entry.file, ": tensors \"", prev->second, "\" and \"",
                       name, "\" both hold \"", m, "\""));
    }
    torch::Tensor& target = targets.at(m);
    if (entry.tensor->shape != target.sizes().vec()) {
      if (heads.count(m)) {
        resized_heads.push_back(
            absl::StrCat(name, " ", ShapeString(entry.tensor->shape), " vs ",
                         ShapeString(target.sizes())));
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat(
          entry.file, ": tensor \"", name, "\" has shape ",
          ShapeString(entry.tensor->shape), ", the model expects \"", m,
          "\" with shape ", ShapeString(target.sizes())));
    }
    RETURN_IF_ERROR(CopyInto(name, entry, target));
    loaded_from[m] = name;
  }
  // A source saved only under its alias (e.g. a decoder weight kept, the
  // embedding dropped) still loads.
  for (const auto& [source, found] : alias_entries) {
    auto target = targets.find(source);
    if (loaded_from.count(source) || target == targets.end()) continue;
    const auto& [name, entry] = found;
    if (entry->tensor->shape != target->second.sizes().vec()) {
      return absl::InvalidArgumentError(absl::StrCat(
          entry->file, ": tensor \"", name, "\" has shape ",
          ShapeString(entry->tensor->shape), ", the model expects \"", source,
          "\" with shape ", ShapeString(target->second.sizes())));
    }
    RETURN_IF_ERROR(CopyInto(name, *entry, target->second));
    loaded_from[source] = name;
  }

  std::vector<std::string> fresh;
  for (auto& [name, t] : targets) {
    if (loaded_from.count(name)) continue;
    if (auto a = alias_source.find(name); a != alias_source.end()) {
      // An alias registered as its own tensor: re-tie by value.
      auto source = targets.find(a->second);
      if (source != targets.end() &&
          t.data_ptr() != source->second.data_ptr()) {
        torch::NoGradGuard no_grad;
        t.copy_(source->second);
      }
      continue;
    }
    // Heads, and a pooler that the checkpoint's class did not have, start
    // from their random initialisation, as Hugging Face does.
    if (heads.count(name) || absl::StartsWith(strip(name), "pooler.")) {
      fresh.push_back(name);
      continue;
    }
    return absl::InvalidArgumentError(
        absl::StrCat(weights.source(), ": missing tensor \"", name,
                     "\" needed by ", model.architecture_class()));
  }
  if (log) {
    if (!other_heads.empty()) {
      log(absl::StrCat("skipped ", other_heads.size(),
                       " checkpoint tensors of other task heads: ",
                       absl::StrJoin(other_heads, ", ")));
    }
    if (!fresh.empty()) {
      log(absl::StrCat("initialised fresh (", fresh.size(), " tensors, ",
                       resized_heads.empty()
                           ? std::string("not in the checkpoint")
                           : absl::StrCat("checkpoint sizes differ: ",
                                          absl::StrJoin(resized_heads, "; ")),
                       "): ", absl::StrJoin(fresh, ", ")));
    }
    const std::vector<std::string>& labels = model.config().id2label;
    const bool classifies = model.head() == HeadKind::kSequenceClassification ||
                            model.head() == HeadKind::kTokenClassification;
    if (classifies && fresh.empty() && !saved_labels.empty() &&
        saved_labels != labels) {
      log(absl::StrCat("classifier reused; its labels [",
                       absl::StrJoin(saved_labels, ", "), "] map by index to [",
                       absl::StrJoin(labels, ", "), "]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TaskModel> CreateModel(const ModelConfig& config,
                                      HeadKind head) {
  RETURN_IF_ERROR(config.Validate());
  if (IsEncoder(config.architecture)) {
    return families::CreateEncoderModel(config, head);
  }
  if (config.architecture == Architecture::kVit ||
      config.architecture == Architecture::kCnn) {
    return families::CreateVisionModel(config, head);
  }
  if (config.architecture == Architecture::kWav2Vec2) {
    return families::CreateSpeechModel(config, head);
  }
  return families::CreateDecoderModel(config, head);
}

absl::StatusOr<TaskModel> LoadModel(const std::string& dir, HeadKind head,
                                    const std::vector<std::string>& labels,
                                    const LogFn& log) {
  const std::string config_path = dir + "/config.json";
  if (!PathExists(config_path)) {
    return absl::NotFoundError(
        absl::StrCat("model directory ", dir, " has no config.json"));
  }
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(config_path));
  const std::vector<std::string> saved_labels = config.id2label;
  if (!labels.empty()) config.id2label = labels;
  ASSIGN_OR_RETURN(auto weights, SafetensorsModel::Open(dir));
  try {
    ASSIGN_OR_RETURN(TaskModel model, CreateModel(config, head));
    RETURN_IF_ERROR(LoadWeights(*model, *weights, saved_labels, log));
    // A LoRA checkpoint: the adapter next to the base weights applies on
    // load, so the model is the one that was trained.
    if (PathExists(dir + "/adapter_config.json")) {
      RETURN_IF_ERROR(LoadPeftAdapter(*model, dir, log));
    }
    return model;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("loading ", dir, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading ", dir, ": ", e.what()));
  }
}

absl::Status SaveModel(TaskModelImpl& model, const std::string& dir) {
  std::set<std::string> aliases;
  for (const auto& [alias, source] : model.tied_parameters()) {
    aliases.insert(alias);
  }
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  std::set<std::string> seen;
  try {
    auto add = [&](const std::string& name,
                   const torch::Tensor& value) -> absl::Status {
      // LoRA adapters are saved apart, in PEFT's layout (lora.h).
      if (aliases.count(name) || !seen.insert(name).second ||
          absl::StrContains(name, ".lora_A.") ||
          absl::StrContains(name, ".lora_B.")) {
        return absl::OkStatus();
      }
      torch::Tensor t = value.detach();
      t = torch::isFloatingType(t.scalar_type())
              ? t.to(torch::kCPU, torch::kFloat32).contiguous()
              : t.to(torch::kCPU).contiguous();
      const std::optional<std::string> dtype = SafetensorsType(t.scalar_type());
      if (!dtype.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", name, "\" has a dtype safetensors ",
                         "cannot hold here"));
      }
      keep.push_back(t);
      TensorView v;
      v.name = name;
      v.dtype = *dtype;
      v.shape = t.sizes().vec();
      v.data = t.data_ptr();
      v.nbytes = static_cast<size_t>(t.numel()) * t.element_size();
      views.push_back(std::move(v));
      return absl::OkStatus();
    };
    for (const auto& item : model.named_parameters(/*recurse=*/true)) {
      RETURN_IF_ERROR(add(item.key(), item.value()));
    }
    for (const auto& item : model.named_buffers(/*recurse=*/true)) {
      RETURN_IF_ERROR(add(item.key(), item.value()));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("copying weights: ", e.what_without_backtrace()));
  }
  RETURN_IF_ERROR(
      WriteSafetensors(dir + "/model.safetensors", views, {{"format", "pt"}}));
  nlohmann::json config = model.config().ToJson(model.architecture_class());
  // The weights are written as float32 whatever the base model shipped in.
  config["torch_dtype"] = "float32";
  if (config.contains("dtype")) config["dtype"] = "float32";
  return WriteFileAtomic(dir + "/config.json", config.dump(2) + "\n");
}

}  // namespace lathe
