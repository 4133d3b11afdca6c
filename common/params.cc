#include "common/params.h"

#include <cmath>
#include <functional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lathe {
namespace {

struct IntField {
  const char* name;
  int64_t TrainParams::*field;
  int64_t min;
  int64_t max;
};

struct DoubleField {
  const char* name;
  double TrainParams::*field;
  double min;
  double max;
  bool min_exclusive;
};

const std::vector<IntField>& IntFields() {
  static const auto* fields = new std::vector<IntField>{
      {"epochs", &TrainParams::epochs, 1, 1000},
      {"batch_size", &TrainParams::batch_size, 1, 4096},
      {"max_seq_length", &TrainParams::max_seq_length, 8, 512},
      {"eval_steps", &TrainParams::eval_steps, 0, 1000000000},
      {"save_steps", &TrainParams::save_steps, 0, 1000000000},
      {"logging_steps", &TrainParams::logging_steps, 1, 1000000},
      {"seed", &TrainParams::seed, INT64_MIN, INT64_MAX},
      {"max_steps", &TrainParams::max_steps, 0, 1000000000},
      {"num_threads", &TrainParams::num_threads, 0, 1024},
  };
  return *fields;
}

const std::vector<DoubleField>& DoubleFields() {
  static const auto* fields = new std::vector<DoubleField>{
      {"learning_rate", &TrainParams::learning_rate, 0.0, 1.0, true},
      {"warmup_ratio", &TrainParams::warmup_ratio, 0.0, 1.0, false},
      {"weight_decay", &TrainParams::weight_decay, 0.0, 1.0, false},
      {"max_grad_norm", &TrainParams::max_grad_norm, 0.0, 1e6, false},
      {"validation_split", &TrainParams::validation_split, 0.0, 0.5, false},
  };
  return *fields;
}

}  // namespace

absl::StatusOr<TrainParams> ParseTrainParams(
    const std::map<std::string, std::string>& params) {
  TrainParams out;
  for (const auto& [name, value] : params) {
    const std::string where = absl::StrCat("params[", name, "]");
    bool known = false;
    for (const IntField& f : IntFields()) {
      if (name != f.name) continue;
      known = true;
      int64_t v = 0;
      if (!absl::SimpleAtoi(value, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": \"", value, "\" is not an integer"));
      }
      if (v < f.min || v > f.max) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": ", v, " is out of range [", f.min, ", ", f.max, "]"));
      }
      out.*f.field = v;
    }
    for (const DoubleField& f : DoubleFields()) {
      if (name != f.name) continue;
      known = true;
      double v = 0;
      if (!absl::SimpleAtod(value, &v) || !std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": \"", value, "\" is not a finite number"));
      }
      if (v < f.min || v > f.max || (f.min_exclusive && v == f.min)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", value, " is out of range ",
                         f.min_exclusive ? "(" : "[", f.min, ", ", f.max, "]"));
      }
      out.*f.field = v;
    }
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": unknown hyperparameter; accepted: ", TrainParamsHelp()));
    }
  }
  return out;
}

const char* TrainParamsHelp() {
  return "epochs, batch_size, learning_rate, warmup_ratio, weight_decay, "
         "max_seq_length, eval_steps, save_steps, logging_steps, seed, "
         "max_grad_norm, validation_split, max_steps, num_threads";
}

}  // namespace lathe
