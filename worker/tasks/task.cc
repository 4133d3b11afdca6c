#include "worker/tasks/task.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/tasks/task_factories.h"

namespace lathe {
namespace {

struct TaskEntry {
  const char* name;
  std::function<std::unique_ptr<Task>()> make;
};

// Each task adds its line here when it lands.
const std::vector<TaskEntry>& Entries() {
  static const auto* entries = new std::vector<TaskEntry>{
      {"text-classification", tasks::NewTextClassificationTask},
      {"text-regression", tasks::NewTextRegressionTask},
      {"token-classification", tasks::NewTokenClassificationTask},
      {"question-answering", tasks::NewQuestionAnsweringTask},
      {"causal-lm", tasks::NewCausalLmTask},
      {"masked-lm", tasks::NewMaskedLmTask},
      {"image-classification", tasks::NewImageClassificationTask},
      {"audio-classification", tasks::NewAudioClassificationTask},
      {"speech-recognition", tasks::NewSpeechRecognitionTask},
  };
  return *entries;
}

}  // namespace

const std::vector<std::string>& TaskNames() {
  static const auto* names = [] {
    auto* v = new std::vector<std::string>();
    for (const TaskEntry& e : Entries()) v->push_back(e.name);
    return v;
  }();
  return *names;
}

absl::StatusOr<std::unique_ptr<Task>> CreateTask(const std::string& name) {
  for (const TaskEntry& e : Entries()) {
    if (name == e.name) return e.make();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("task \"", name, "\" is not supported (",
                   absl::StrJoin(TaskNames(), ", "), ")"));
}

absl::StatusOr<std::unique_ptr<Task>> CreateTrainingTask(
    const std::string& name, const TrainParams& params) {
  if (!IsPreferenceMethod(params.method)) return CreateTask(name);
  if (name != "causal-lm") {
    return absl::InvalidArgumentError(
        absl::StrCat("params[method]: ", params.method,
                     " applies only to causal-lm (this job: ", name, ")"));
  }
  return tasks::NewDpoTask();
}

ModelInputs PadTokenBatch(const std::vector<const TokenizedText*>& rows,
                          int64_t pad_id, const torch::Device& device,
                          int64_t* tokens) {
  const int64_t n = static_cast<int64_t>(rows.size());
  int64_t longest = 1;
  int64_t real = 0;
  for (const TokenizedText* r : rows) {
    longest = std::max<int64_t>(longest, r->ids.size());
    real += static_cast<int64_t>(r->ids.size());
  }
  std::vector<int64_t> ids(n * longest, pad_id), types(n * longest, 0),
      mask(n * longest, 0);
  for (int64_t r = 0; r < n; ++r) {
    const TokenizedText& e = *rows[r];
    for (size_t c = 0; c < e.ids.size(); ++c) {
      ids[r * longest + c] = e.ids[c];
      types[r * longest + c] = c < e.type_ids.size() ? e.type_ids[c] : 0;
      mask[r * longest + c] = 1;
    }
  }
  auto make = [&](std::vector<int64_t>& v) {
    return torch::from_blob(v.data(), {n, longest}, torch::kLong)
        .clone()
        .to(device);
  };
  ModelInputs in;
  in.input_ids = make(ids);
  in.token_type_ids = make(types);
  in.attention_mask = make(mask);
  if (tokens != nullptr) *tokens = real;
  return in;
}

std::pair<std::vector<size_t>, std::vector<size_t>> HoldOut(size_t n,
                                                            double fraction,
                                                            int64_t seed) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(static_cast<uint64_t>(seed) ^ 0x9E3779B97F4A7C15ull);
  // Fisher-Yates with a fixed reduction, identical on every standard library.
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  const size_t held =
      n == 0 ? 0
             : std::min(n - 1, static_cast<size_t>(std::llround(fraction * n)));
  std::vector<bool> is_held(n, false);
  for (size_t i = 0; i < held; ++i) is_held[order[i]] = true;
  std::pair<std::vector<size_t>, std::vector<size_t>> out;
  for (size_t i = 0; i < n; ++i) {
    (is_held[i] ? out.second : out.first).push_back(i);
  }
  return out;
}

int64_t PadId(const Tokenizer& tokenizer) {
  return tokenizer.pad_id().value_or(tokenizer.eos_id().value_or(0));
}

}  // namespace lathe
