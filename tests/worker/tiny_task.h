// Test support: a tiny vocabulary, a separable sentiment dataset and a tiny
// BERT config, all written by the tests themselves (no assets needed).
#ifndef LATHE_TESTS_WORKER_TINY_TASK_H_
#define LATHE_TESTS_WORKER_TINY_TASK_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/models/model_config.h"
#include "worker/train/trainer.h"

namespace lathe::testing {

inline const std::vector<std::string>& TinyVocab() {
  static const auto* vocab = new std::vector<std::string>{
      "[PAD]",  "[UNK]",  "[CLS]", "[SEP]", "[MASK]", "the",   "a",
      "movie",  "film",   "was",   "is",    "very",   "quite", "plot",
      "acting", "really", "good",  "great", "fine",   "bad",   "awful",
      "poor",   ".",      "!",     "##s"};
  return *vocab;
}

inline std::string FreshDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("lathe_worker_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Writes vocab.txt and data.jsonl (`rows` rows: filler words plus one
// positive or negative word) into `dir`.
inline void WriteTinyTask(const std::string& dir, int rows) {
  std::ofstream vocab(dir + "/vocab.txt");
  for (const std::string& t : TinyVocab()) vocab << t << "\n";
  const std::vector<std::string> filler = {"the",  "a",      "movie",  "film",
                                           "was",  "is",     "very",   "quite",
                                           "plot", "acting", "really", "."};
  const std::vector<std::string> pos = {"good", "great", "fine"};
  const std::vector<std::string> neg = {"bad", "awful", "poor"};
  std::mt19937 rng(7);
  std::ofstream data(dir + "/data.jsonl");
  for (int i = 0; i < rows; ++i) {
    const bool positive = i % 2 == 0;
    std::vector<std::string> words;
    const int n = 3 + static_cast<int>(rng() % 6);
    for (int w = 0; w < n; ++w) words.push_back(filler[rng() % filler.size()]);
    const auto& sentiment = positive ? pos : neg;
    words.insert(words.begin() + rng() % (words.size() + 1),
                 sentiment[rng() % sentiment.size()]);
    std::string text;
    for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
    data << nlohmann::json{{"text", text}, {"label", positive ? "pos" : "neg"}}
                .dump()
         << "\n";
  }
}

inline ModelConfig TinyConfig() {
  ModelConfig c;  // BERT
  c.pad_token_id = 0;
  c.vocab_size = static_cast<int64_t>(TinyVocab().size());
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = 64;
  return c;
}

inline TrainSpec TinySpec(const std::string& dir) {
  TrainSpec spec;
  spec.job_id = "test";
  spec.model = "test:tiny";
  spec.train_data = dir + "/data.jsonl";
  spec.train_name = "data.jsonl";
  spec.model_config = TinyConfig();
  spec.tokenizer_dir = dir;
  spec.params = {{"num_threads", "1"}, {"seed", "3"}, {"logging_steps", "5"}};
  return spec;
}

// The outcome of one in-process training run and the events it emitted.
struct RunResult {
  absl::Status status;
  std::vector<nlohmann::json> events;
  std::vector<nlohmann::json> OfType(const std::string& type) const {
    std::vector<nlohmann::json> out;
    for (const auto& e : events) {
      if (e["type"] == type) out.push_back(e);
    }
    return out;
  }
  bool Logged(const std::string& message) const {
    for (const auto& e : OfType("log")) {
      if (e["message"] == message) return true;
    }
    return false;
  }
};

// Runs RunTraining, collecting every event; `also` sees each one as well.
inline RunResult TrainRun(
    const TrainSpec& spec, const std::string& out,
    const std::function<void(const nlohmann::json&)>& also = {}) {
  RunResult run;
  run.status = RunTraining(spec, out, [&](const nlohmann::json& e) {
    run.events.push_back(e);
    if (also) also(e);
  });
  return run;
}

}  // namespace lathe::testing

#endif  // LATHE_TESTS_WORKER_TINY_TASK_H_
