// Feeds: a job's task and hyperparameters as a client submits them (the
// first line is the task, each further line NAME=VALUE) to ParseTrainParams
// and CheckParamsApply (common/params.h). Checks: no crash or sanitizer
// report; every error is INVALID_ARGUMENT naming "params[NAME]"; an accepted
// map names only known parameters and yields values inside the ranges
// params.h documents; both calls give the same answer twice.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/params.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void CheckError(const absl::Status& status) {
  FUZZ_CHECK(absl::IsInvalidArgument(status));
  FUZZ_CHECK(absl::StartsWith(status.message(), "params["));
}

bool In(double v, double lo, double hi) { return v >= lo && v <= hi; }

void CheckRanges(const lathe::TrainParams& p) {
  FUZZ_CHECK(In(p.epochs, 1, 1000));
  FUZZ_CHECK(In(p.batch_size, 1, 4096));
  FUZZ_CHECK(p.learning_rate > 0 && p.learning_rate <= 1);
  FUZZ_CHECK(In(p.warmup_ratio, 0, 1));
  FUZZ_CHECK(In(p.weight_decay, 0, 1));
  FUZZ_CHECK(In(p.max_seq_length, 8, 131072));
  FUZZ_CHECK(In(p.logging_steps, 1, 1000000));
  FUZZ_CHECK(In(p.max_grad_norm, 0, 1e6));
  FUZZ_CHECK(In(p.validation_split, 0, 0.5));
  FUZZ_CHECK(In(p.gradient_accumulation_steps, 1, 1024));
  FUZZ_CHECK(p.lr_scheduler_type == "linear" ||
             p.lr_scheduler_type == "cosine" ||
             p.lr_scheduler_type == "constant");
  FUZZ_CHECK(p.method == "full" || p.method == "lora" ||
             p.method == "linear-probe");
  FUZZ_CHECK(In(p.lora_r, 1, 1024));
  FUZZ_CHECK(p.lora_alpha > 0 && p.lora_alpha <= 1e6);
  FUZZ_CHECK(p.lora_dropout >= 0 && p.lora_dropout < 1);
  FUZZ_CHECK(In(p.early_stopping_patience, 0, 1000));
  FUZZ_CHECK(In(p.doc_stride, 0, 512));
  FUZZ_CHECK(In(p.max_answer_length, 1, 512));
  FUZZ_CHECK(p.mlm_probability > 0 && p.mlm_probability < 1);
  FUZZ_CHECK(In(p.image_size, 0, 1024));
  FUZZ_CHECK(In(p.max_new_tokens, 1, 4096));
  FUZZ_CHECK(In(p.temperature, 0, 100));
  FUZZ_CHECK(In(p.top_k, 0, 1000000));
  FUZZ_CHECK(p.top_p > 0 && p.top_p <= 1);
  for (double v : {p.learning_rate, p.warmup_ratio, p.weight_decay,
                   p.max_grad_norm, p.validation_split, p.lora_alpha,
                   p.lora_dropout, p.null_score_diff_threshold,
                   p.mlm_probability, p.temperature, p.top_p}) {
    FUZZ_CHECK(std::isfinite(v));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<absl::string_view> lines = absl::StrSplit(input, '\n');
  const std::string task(lines[0]);
  std::map<std::string, std::string> params;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(lines[i], absl::MaxSplits('=', 1));
    params[std::string(kv.first)] = std::string(kv.second);
  }

  const absl::StatusOr<lathe::TrainParams> parsed =
      lathe::ParseTrainParams(params);
  FUZZ_CHECK(lathe::ParseTrainParams(params).status() == parsed.status());
  if (!parsed.ok()) {
    CheckError(parsed.status());
    return 0;
  }
  const std::vector<std::string>& names = lathe::TrainParamNames();
  for (const auto& [name, value] : params) {
    FUZZ_CHECK(std::find(names.begin(), names.end(), name) != names.end());
  }
  CheckRanges(*parsed);

  const absl::Status applies = lathe::CheckParamsApply(task, params);
  FUZZ_CHECK(lathe::CheckParamsApply(task, params) == applies);
  if (!applies.ok()) CheckError(applies);
  return 0;
}
