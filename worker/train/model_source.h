// Where a training or prediction run's model comes from (a preset, a model
// directory, a checkpoint to resume, a test configuration), with its
// tokenizer, and the token budget of one example. No LibTorch.
#ifndef LATHE_WORKER_TRAIN_MODEL_SOURCE_H_
#define LATHE_WORKER_TRAIN_MODEL_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/params.h"
#include "worker/models/model_config.h"
#include "worker/tokenizers/tokenizer.h"
#include "worker/train/trainer.h"

namespace lathe {

// Where a model comes from: its config, its tokenizer (null when it has
// none, as image models) and how to build it once the task has configured
// the head.
struct ModelSource {
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string load_dir;  // Empty: random initialisation from `config`.
  std::string description;
};

// The model of `spec`: resume_from's checkpoint, the test hook's
// configuration, a preset (random initialisation; FAILED_PRECONDITION when
// its tokenizer's assets are missing) or a model directory.
// INVALID_ARGUMENT for an unknown model or an unreadable directory.
absl::StatusOr<ModelSource> ResolveModel(const TrainSpec& spec,
                                         const TrainParams& params);

// Reads the tokenizer in `dir` when there is one (null when there is
// none); INVALID_ARGUMENT when it is malformed.
absl::StatusOr<std::unique_ptr<Tokenizer>> OptionalTokenizer(
    const std::string& dir);

// The directory of the presets' tokenizers: spec.assets_dir, else
// $LATHE_ASSETS_DIR, else <executable dir>/../assets.
std::string ResolveAssetsDir(const TrainSpec& spec);

// The token budget of one example: the job's max_seq_length within the
// model's positions (RoBERTa's start after the padding index).
int64_t MaxLength(const ModelConfig& config, const TrainParams& params);

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_MODEL_SOURCE_H_
