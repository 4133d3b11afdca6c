#include "worker/train/trainer_state.h"

#include <algorithm>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lathe {
namespace {

nlohmann::json ParamsToJson(const TrainParams& p) {
  return {{"epochs", p.epochs},
          {"batch_size", p.batch_size},
          {"learning_rate", p.learning_rate},
          {"warmup_ratio", p.warmup_ratio},
          {"weight_decay", p.weight_decay},
          {"max_seq_length", p.max_seq_length},
          {"eval_steps", p.eval_steps},
          {"save_steps", p.save_steps},
          {"logging_steps", p.logging_steps},
          {"seed", p.seed},
          {"max_grad_norm", p.max_grad_norm},
          {"validation_split", p.validation_split},
          {"max_steps", p.max_steps},
          {"num_threads", p.num_threads},
          {"gradient_accumulation_steps", p.gradient_accumulation_steps},
          {"lr_scheduler_type", p.lr_scheduler_type},
          {"method", p.method},
          {"lora_r", p.lora_r},
          {"lora_alpha", p.lora_alpha},
          {"lora_dropout", p.lora_dropout},
          {"use_rslora", p.use_rslora},
          {"lora_target_modules", p.lora_target_modules},
          {"packing", p.packing},
          {"dpo_beta", p.dpo_beta},
          {"gradient_checkpointing", p.gradient_checkpointing}};
}

// Reads j[key] into *out when it has the right JSON type; `required` fields
// must be present.
template <typename T>
absl::Status Get(const nlohmann::json& j, const char* key, T* out,
                 bool required, const std::string& where) {
  if (!j.contains(key)) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing field \"", key, "\""));
  }
  const nlohmann::json& v = j[key];
  bool ok = false;
  if constexpr (std::is_same_v<T, std::string>) {
    ok = v.is_string();
  } else if constexpr (std::is_same_v<T, double>) {
    ok = v.is_number();
  } else if constexpr (std::is_integral_v<T>) {
    ok = v.is_number_integer();
  } else {
    ok = v.is_array();
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": field \"", key, "\" has the wrong type"));
  }
  try {
    *out = v.get<T>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": field \"", key, "\": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

std::map<std::string, nlohmann::json> TrajectoryParams(const TrainParams& p) {
  return {{"epochs", p.epochs},
          {"batch_size", p.batch_size},
          {"learning_rate", p.learning_rate},
          {"warmup_ratio", p.warmup_ratio},
          {"weight_decay", p.weight_decay},
          {"max_seq_length", p.max_seq_length},
          {"seed", p.seed},
          {"max_grad_norm", p.max_grad_norm},
          {"validation_split", p.validation_split},
          {"max_steps", p.max_steps},
          {"gradient_accumulation_steps", p.gradient_accumulation_steps},
          {"lr_scheduler_type", p.lr_scheduler_type},
          {"method", p.method},
          {"lora_r", p.lora_r},
          {"lora_alpha", p.lora_alpha},
          {"lora_dropout", p.lora_dropout},
          {"use_rslora", p.use_rslora},
          {"lora_target_modules", p.lora_target_modules},
          {"packing", p.packing},
          {"dpo_beta", p.dpo_beta}};
}

nlohmann::json TrainerState::ToJson() const {
  nlohmann::json j = {{"format", "lathe-trainer-state"},
                      {"format_version", kTrainerStateVersion},
                      {"global_step", global_step},
                      {"total_steps", total_steps},
                      {"steps_per_epoch", steps_per_epoch},
                      {"warmup_steps", warmup_steps},
                      {"epoch", epoch},
                      {"position", position},
                      {"train_rows", train_rows},
                      {"validation_rows", validation_rows},
                      {"train_data_sha256", train_data_sha256},
                      {"max_length", max_length},
                      {"labels", labels},
                      {"device", device},
                      {"world_size", world_size},
                      {"seed", params.seed},
                      {"adam_step", adam_step},
                      {"hyperparameters", ParamsToJson(params)},
                      {"loss_since_report", loss_since_report},
                      {"steps_since_report", steps_since_report}};
  if (!adam_steps.empty()) j["adam_steps"] = adam_steps;
  return j;
}

absl::StatusOr<TrainerState> TrainerState::Parse(
    const std::string& text, const std::string& display_name) {
  const std::string& where = display_name;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": invalid JSON: ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": not a JSON object"));
  }
  std::string format;
  RETURN_IF_ERROR(Get(j, "format", &format, true, where));
  if (format != "lathe-trainer-state") {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": format \"", format, "\" is not \"lathe-trainer-state\""));
  }
  int64_t version = 0;
  RETURN_IF_ERROR(Get(j, "format_version", &version, true, where));
  if (version != kTrainerStateVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": format_version ", version,
        " is not supported (this build reads ", kTrainerStateVersion, ")"));
  }
  TrainerState s;
  RETURN_IF_ERROR(Get(j, "global_step", &s.global_step, true, where));
  RETURN_IF_ERROR(Get(j, "total_steps", &s.total_steps, true, where));
  RETURN_IF_ERROR(Get(j, "steps_per_epoch", &s.steps_per_epoch, true, where));
  RETURN_IF_ERROR(Get(j, "warmup_steps", &s.warmup_steps, true, where));
  RETURN_IF_ERROR(Get(j, "epoch", &s.epoch, true, where));
  RETURN_IF_ERROR(Get(j, "position", &s.position, true, where));
  RETURN_IF_ERROR(Get(j, "train_rows", &s.train_rows, true, where));
  RETURN_IF_ERROR(Get(j, "validation_rows", &s.validation_rows, false, where));
  RETURN_IF_ERROR(
      Get(j, "train_data_sha256", &s.train_data_sha256, false, where));
  RETURN_IF_ERROR(Get(j, "max_length", &s.max_length, true, where));
  RETURN_IF_ERROR(Get(j, "labels", &s.labels, true, where));
  RETURN_IF_ERROR(Get(j, "device", &s.device, false, where));
  RETURN_IF_ERROR(Get(j, "world_size", &s.world_size, false, where));
  if (s.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": world_size must be at least 1"));
  }
  RETURN_IF_ERROR(Get(j, "adam_step", &s.adam_step, true, where));
  RETURN_IF_ERROR(
      Get(j, "loss_since_report", &s.loss_since_report, false, where));
  RETURN_IF_ERROR(
      Get(j, "steps_since_report", &s.steps_since_report, false, where));
  if (j.contains("adam_steps")) {
    const nlohmann::json& m = j["adam_steps"];
    if (!m.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": field \"adam_steps\" is not an object"));
    }
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": adam_steps[", it.key(), "] is not a step count"));
      }
      s.adam_steps[it.key()] = it.value().get<int64_t>();
    }
  }
  if (!j.contains("hyperparameters") || !j["hyperparameters"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing object field \"hyperparameters\""));
  }
  const nlohmann::json& h = j["hyperparameters"];
  const std::string hw = absl::StrCat(where, ": hyperparameters");
  TrainParams& p = s.params;
  RETURN_IF_ERROR(Get(h, "epochs", &p.epochs, true, hw));
  RETURN_IF_ERROR(Get(h, "batch_size", &p.batch_size, true, hw));
  RETURN_IF_ERROR(Get(h, "learning_rate", &p.learning_rate, true, hw));
  RETURN_IF_ERROR(Get(h, "warmup_ratio", &p.warmup_ratio, true, hw));
  RETURN_IF_ERROR(Get(h, "weight_decay", &p.weight_decay, true, hw));
  RETURN_IF_ERROR(Get(h, "max_seq_length", &p.max_seq_length, true, hw));
  RETURN_IF_ERROR(Get(h, "eval_steps", &p.eval_steps, false, hw));
  RETURN_IF_ERROR(Get(h, "save_steps", &p.save_steps, false, hw));
  RETURN_IF_ERROR(Get(h, "logging_steps", &p.logging_steps, false, hw));
  RETURN_IF_ERROR(Get(h, "seed", &p.seed, true, hw));
  RETURN_IF_ERROR(Get(h, "max_grad_norm", &p.max_grad_norm, true, hw));
  RETURN_IF_ERROR(Get(h, "validation_split", &p.validation_split, true, hw));
  RETURN_IF_ERROR(Get(h, "max_steps", &p.max_steps, true, hw));
  RETURN_IF_ERROR(Get(h, "num_threads", &p.num_threads, false, hw));
  // Absent in states written before these existed: the defaults applied.
  RETURN_IF_ERROR(Get(h, "gradient_accumulation_steps",
                      &p.gradient_accumulation_steps, false, hw));
  RETURN_IF_ERROR(Get(h, "lr_scheduler_type", &p.lr_scheduler_type, false, hw));
  RETURN_IF_ERROR(Get(h, "method", &p.method, false, hw));
  RETURN_IF_ERROR(Get(h, "lora_r", &p.lora_r, false, hw));
  RETURN_IF_ERROR(Get(h, "lora_alpha", &p.lora_alpha, false, hw));
  RETURN_IF_ERROR(Get(h, "lora_dropout", &p.lora_dropout, false, hw));
  RETURN_IF_ERROR(Get(h, "use_rslora", &p.use_rslora, false, hw));
  RETURN_IF_ERROR(
      Get(h, "lora_target_modules", &p.lora_target_modules, false, hw));
  RETURN_IF_ERROR(Get(h, "packing", &p.packing, false, hw));
  RETURN_IF_ERROR(Get(h, "dpo_beta", &p.dpo_beta, false, hw));
  RETURN_IF_ERROR(
      Get(h, "gradient_checkpointing", &p.gradient_checkpointing, false, hw));

  // Consistency: a state the trainer could have written.
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
  };
  if (s.steps_per_epoch < 1 || s.train_rows < 1 || p.batch_size < 1) {
    return bad("steps_per_epoch, train_rows and batch_size must be positive");
  }
  if (s.total_steps < 1 || s.global_step < 1 || s.global_step > s.total_steps) {
    return bad(absl::StrCat("global_step ", s.global_step,
                            " is not within [1, total_steps ", s.total_steps,
                            "]"));
  }
  if (s.epoch < 0 || s.position < 0 || s.position >= s.train_rows) {
    return bad(absl::StrCat("epoch ", s.epoch, " / position ", s.position,
                            " is not a position in ", s.train_rows, " rows"));
  }
  // A step takes batch_size rows for each of its accumulated micro-batches.
  const int64_t rows_per_step =
      p.batch_size * std::max<int64_t>(1, p.gradient_accumulation_steps);
  if (s.epoch * s.steps_per_epoch +
          (s.position + rows_per_step - 1) / rows_per_step !=
      s.global_step) {
    return bad(absl::StrCat("epoch ", s.epoch, " and position ", s.position,
                            " do not match global_step ", s.global_step));
  }
  // Labels may be empty: the language-modelling tasks have none.
  if (s.adam_step < 0 || s.steps_since_report < 0) {
    return bad("negative step counts");
  }
  return s;
}

}  // namespace lathe
