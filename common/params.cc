#include "common/params.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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
      {"max_seq_length", &TrainParams::max_seq_length, 8, 131072},
      {"eval_steps", &TrainParams::eval_steps, 0, 1000000000},
      {"save_steps", &TrainParams::save_steps, 0, 1000000000},
      {"logging_steps", &TrainParams::logging_steps, 1, 1000000},
      {"seed", &TrainParams::seed, INT64_MIN, INT64_MAX},
      {"max_steps", &TrainParams::max_steps, 0, 1000000000},
      {"num_threads", &TrainParams::num_threads, 0, 1024},
      {"gradient_accumulation_steps", &TrainParams::gradient_accumulation_steps,
       1, 1024},
      {"bf16", &TrainParams::bf16, 0, 1},
      {"group_by_length", &TrainParams::group_by_length, 0, 1},
      {"gradient_checkpointing", &TrainParams::gradient_checkpointing, 0, 1},
      {"zero_stage", &TrainParams::zero_stage, 0, 1},
      {"lora_r", &TrainParams::lora_r, 1, 1024},
      {"use_rslora", &TrainParams::use_rslora, 0, 1},
      {"merge_lora", &TrainParams::merge_lora, 0, 1},
      {"early_stopping_patience", &TrainParams::early_stopping_patience, 0,
       1000},
      {"doc_stride", &TrainParams::doc_stride, 0, 512},
      {"max_answer_length", &TrainParams::max_answer_length, 1, 512},
      {"completion_only_loss", &TrainParams::completion_only_loss, 0, 1},
      {"packing", &TrainParams::packing, 0, 1},
      {"image_size", &TrainParams::image_size, 0, 1024},
      {"max_new_tokens", &TrainParams::max_new_tokens, 1, 4096},
      {"top_k", &TrainParams::top_k, 0, 1000000},
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
      {"lora_alpha", &TrainParams::lora_alpha, 0.0, 1e6, true},
      {"lora_dropout", &TrainParams::lora_dropout, 0.0, 0.999, false},
      {"null_score_diff_threshold", &TrainParams::null_score_diff_threshold,
       -1e6, 1e6, false},
      {"mlm_probability", &TrainParams::mlm_probability, 0.0, 0.999, true},
      {"temperature", &TrainParams::temperature, 0.0, 100.0, false},
      {"top_p", &TrainParams::top_p, 0.0, 1.0, true},
      {"dpo_beta", &TrainParams::dpo_beta, 0.0, 100.0, true},
  };
  return *fields;
}

struct StringField {
  const char* name;
  std::string TrainParams::*field;
  // Accepted values; empty: any text of at most 256 bytes.
  std::vector<std::string> choices;
};

const std::vector<StringField>& StringFields() {
  static const auto* fields = new std::vector<StringField>{
      {"lr_scheduler_type",
       &TrainParams::lr_scheduler_type,
       {"linear", "cosine", "constant"}},
      {"method",
       &TrainParams::method,
       {"full", "lora", "linear-probe", "dpo", "dpo-lora"}},
      {"lora_target_modules", &TrainParams::lora_target_modules, {}},
      {"freeze_feature_encoder",
       &TrainParams::freeze_feature_encoder,
       {"auto", "true", "false"}},
      {"metric_for_best_model", &TrainParams::metric_for_best_model, {}},
      {"text_column", &TrainParams::text_column, {}},
      {"text_pair_column", &TrainParams::text_pair_column, {}},
      {"label_column", &TrainParams::label_column, {}},
      {"prompt_column", &TrainParams::prompt_column, {}},
      {"completion_column", &TrainParams::completion_column, {}},
      {"messages_column", &TrainParams::messages_column, {}},
      {"question_column", &TrainParams::question_column, {}},
      {"context_column", &TrainParams::context_column, {}},
      {"answers_column", &TrainParams::answers_column, {}},
      {"tokens_column", &TrainParams::tokens_column, {}},
      {"tags_column", &TrainParams::tags_column, {}},
      {"image_column", &TrainParams::image_column, {}},
      {"chosen_column", &TrainParams::chosen_column, {}},
      {"rejected_column", &TrainParams::rejected_column, {}},
  };
  return *fields;
}

// Task names, as JobSpec.task spells them.
constexpr char kTextClassification[] = "text-classification";
constexpr char kTextRegression[] = "text-regression";
constexpr char kTokenClassification[] = "token-classification";
constexpr char kQuestionAnswering[] = "question-answering";
constexpr char kCausalLm[] = "causal-lm";
constexpr char kMaskedLm[] = "masked-lm";
constexpr char kImageClassification[] = "image-classification";
constexpr char kAudioClassification[] = "audio-classification";
constexpr char kSpeechRecognition[] = "speech-recognition";

const std::vector<std::string>& Tasks() {
  static const auto* tasks = new std::vector<std::string>{kTextClassification,
                                                          kTextRegression,
                                                          kTokenClassification,
                                                          kQuestionAnswering,
                                                          kCausalLm,
                                                          kMaskedLm,
                                                          kImageClassification,
                                                          kAudioClassification,
                                                          kSpeechRecognition};
  return *tasks;
}

// A hyperparameter that only some jobs use. Exactly one of `methods` and
// `tasks` is set.
struct ApplyRule {
  const char* name;
  std::vector<std::string> methods;  // The only methods it applies with.
  std::vector<std::string> tasks;    // The only tasks it applies to.
};

// Causal-lm parameters that preference tuning has no use for: it always
// scores the reply only, one pair per row, from its own columns.
const std::vector<std::string>& NotWithPreference() {
  static const auto* names = new std::vector<std::string>{
      "packing", "completion_only_loss", "completion_column", "messages_column",
      "text_column"};
  return *names;
}

const std::vector<ApplyRule>& ApplyRules() {
  static const auto* rules = [] {
    const std::vector<std::string> text_tasks = {
        kTextClassification, kTextRegression, kTokenClassification,
        kQuestionAnswering,  kCausalLm,       kMaskedLm};
    auto* r = new std::vector<ApplyRule>;
    for (const char* name :
         {"lora_r", "lora_alpha", "lora_dropout", "use_rslora",
          "lora_target_modules", "merge_lora"}) {
      r->push_back({name, {"lora", "dpo-lora"}, {}});
    }
    for (const char* name : {"dpo_beta", "chosen_column", "rejected_column"}) {
      r->push_back({name, {"dpo", "dpo-lora"}, {}});
    }
    for (const char* name :
         {"doc_stride", "max_answer_length", "null_score_diff_threshold",
          "question_column", "context_column", "answers_column"}) {
      r->push_back({name, {}, {kQuestionAnswering}});
    }
    for (const char* name :
         {"completion_only_loss", "packing", "max_new_tokens", "temperature",
          "top_k", "top_p", "prompt_column", "completion_column",
          "messages_column"}) {
      r->push_back({name, {}, {kCausalLm}});
    }
    r->push_back({"mlm_probability", {}, {kMaskedLm}});
    r->push_back({"freeze_feature_encoder",
                  {},
                  {kAudioClassification, kSpeechRecognition}});
    for (const char* name : {"tokens_column", "tags_column"}) {
      r->push_back({name, {}, {kTokenClassification}});
    }
    for (const char* name : {"image_size", "image_column"}) {
      r->push_back({name, {}, {kImageClassification}});
    }
    r->push_back(
        {"text_pair_column", {}, {kTextClassification, kTextRegression}});
    r->push_back({"label_column",
                  {},
                  {kTextClassification, kTextRegression, kImageClassification,
                   kAudioClassification}});
    r->push_back({"text_column",
                  {},
                  {kTextClassification, kTextRegression, kTokenClassification,
                   kCausalLm, kMaskedLm, kSpeechRecognition}});
    // Pictures and clips have no tokens.
    for (const char* name :
         {"max_seq_length", "group_by_length", "gradient_checkpointing"}) {
      r->push_back({name, {}, text_tasks});
    }
    return r;
  }();
  return *rules;
}

// "a", "a and b", "a, b and c".
std::string JoinAnd(const std::vector<std::string>& items) {
  if (items.size() <= 1) return absl::StrJoin(items, "");
  return absl::StrCat(absl::StrJoin(items.begin(), items.end() - 1, ", "),
                      " and ", items.back());
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
    for (const StringField& f : StringFields()) {
      if (name != f.name) continue;
      known = true;
      if (value.size() > 256) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": longer than 256 bytes"));
      }
      if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(),
                                          value) == f.choices.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": \"", value, "\" is not one of ",
                         absl::StrJoin(f.choices, ", ")));
      }
      out.*f.field = value;
    }
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": unknown hyperparameter; accepted: ", TrainParamsHelp()));
    }
  }
  return out;
}

const char* TrainParamsHelp() {
  static const std::string* help =
      new std::string(absl::StrJoin(TrainParamNames(), ", "));
  return help->c_str();
}

const std::vector<std::string>& TrainParamNames() {
  static const auto* names = [] {
    auto* out = new std::vector<std::string>;
    for (const IntField& f : IntFields()) out->push_back(f.name);
    for (const DoubleField& f : DoubleFields()) out->push_back(f.name);
    for (const StringField& f : StringFields()) out->push_back(f.name);
    return out;
  }();
  return *names;
}

bool MethodUsesLora(const std::string& method) {
  return method == "lora" || method == "dpo-lora";
}

bool IsPreferenceMethod(const std::string& method) {
  return method == "dpo" || method == "dpo-lora";
}

absl::Status CheckParamsApply(
    const std::string& task, const std::map<std::string, std::string>& params) {
  const auto m = params.find("method");
  const std::string method = m == params.end() ? "full" : m->second;
  const bool known_task =
      std::find(Tasks().begin(), Tasks().end(), task) != Tasks().end();
  if (IsPreferenceMethod(method) && known_task && task != kCausalLm) {
    return absl::InvalidArgumentError(
        absl::StrCat("params[method]: ", method, " applies only to ", kCausalLm,
                     " (this job: ", task, ")"));
  }
  for (const auto& entry : params) {
    const std::string& name = entry.first;
    const std::string where = absl::StrCat("params[", name, "]");
    if (IsPreferenceMethod(method) &&
        std::find(NotWithPreference().begin(), NotWithPreference().end(),
                  name) != NotWithPreference().end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": does not apply with method=", method,
          " (preference rows score the reply only, from the prompt, chosen "
          "and rejected columns)"));
    }
    for (const ApplyRule& rule : ApplyRules()) {
      if (name != rule.name) continue;
      const bool by_method = !rule.methods.empty();
      if (by_method && std::find(rule.methods.begin(), rule.methods.end(),
                                 method) == rule.methods.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": applies only with method=",
                         absl::StrJoin(rule.methods, " or method="),
                         " (this job: method=", method, ")"));
      }
      if (by_method || !known_task ||
          std::find(rule.tasks.begin(), rule.tasks.end(), task) !=
              rule.tasks.end()) {
        continue;
      }
      // Name the shorter side: the tasks it applies to, or those it skips.
      std::vector<std::string> others;
      for (const std::string& t : Tasks()) {
        if (std::find(rule.tasks.begin(), rule.tasks.end(), t) ==
            rule.tasks.end()) {
          others.push_back(t);
        }
      }
      if (others.size() < rule.tasks.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": does not apply to ", JoinAnd(others)));
      }
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": applies only to ", JoinAnd(rule.tasks),
                       " (this job: ", task, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace lathe
