#include "worker/train/model_source.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status.h"

namespace lathe {

std::string ResolveAssetsDir(const TrainSpec& spec) {
  if (!spec.assets_dir.empty()) return spec.assets_dir;
  if (const char* env = std::getenv("LATHE_ASSETS_DIR"); env && *env)
    return env;
  return ExecutableDir() + "/../assets";
}

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

int64_t MaxLength(const ModelConfig& config, const TrainParams& params) {
  const int64_t positions =
      config.architecture == Architecture::kRoberta
          ? config.max_position_embeddings - config.pad_token_id.value_or(1) - 1
          : config.max_position_embeddings;
  return std::min(params.max_seq_length, positions);
}

}  // namespace lathe
