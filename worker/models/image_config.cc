// config.json keys of the image families. ViT's defaults are those of
// Hugging Face's ViTConfig, so a config that omits a key means what it means
// there. lathe-cnn is Lathe's own family; its keys are documented in
// vision.h.
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/models/families.h"

namespace lathe {
namespace families {
namespace {

// Bounds on what a config may ask for, far above any real image model; they
// keep a hostile config from making the model allocate without limit.
constexpr int64_t kMaxImageSize = 4096;
constexpr int64_t kMaxChannels = 64;
constexpr int64_t kMaxConvBlocks = 16;
constexpr int64_t kMaxConvChannels = 8192;

absl::Status Bad(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: \"", key, "\" ", what));
}

// A present, non-null key overwrites *out; absent or null keeps the default.
template <typename T>
absl::Status Read(const nlohmann::json& j, const std::string& key, T* out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  const nlohmann::json& v = j[key];
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return Bad(key, "is not a boolean");
    *out = v.get<bool>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return Bad(key, "is not a string");
    *out = v.get<std::string>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) return Bad(key, "is not an integer");
    *out = v.get<T>();
  } else {
    if (!v.is_number()) return Bad(key, "is not a number");
    *out = v.get<T>();
  }
  return absl::OkStatus();
}

absl::Status CheckRange(const std::string& key, int64_t value, int64_t lo,
                        int64_t hi) {
  if (value < lo || value > hi) {
    return Bad(key,
               absl::StrCat("must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

absl::Status ParseVit(const nlohmann::json& j, ModelConfig* c) {
  c->hidden_size = 768;
  c->num_hidden_layers = 12;
  c->num_attention_heads = 12;
  c->intermediate_size = 3072;
  c->hidden_act = "gelu";
  c->hidden_dropout = 0.0;
  c->attention_dropout = 0.0;
  c->initializer_range = 0.02;
  c->layer_norm_eps = 1e-12;
  c->image_size = 224;
  c->patch_size = 16;
  c->num_channels = 3;
  c->qkv_bias = true;
  RETURN_IF_ERROR(Read(j, "hidden_size", &c->hidden_size));
  RETURN_IF_ERROR(Read(j, "num_hidden_layers", &c->num_hidden_layers));
  RETURN_IF_ERROR(Read(j, "num_attention_heads", &c->num_attention_heads));
  RETURN_IF_ERROR(Read(j, "intermediate_size", &c->intermediate_size));
  RETURN_IF_ERROR(Read(j, "hidden_act", &c->hidden_act));
  RETURN_IF_ERROR(Read(j, "hidden_dropout_prob", &c->hidden_dropout));
  RETURN_IF_ERROR(
      Read(j, "attention_probs_dropout_prob", &c->attention_dropout));
  RETURN_IF_ERROR(Read(j, "initializer_range", &c->initializer_range));
  RETURN_IF_ERROR(Read(j, "layer_norm_eps", &c->layer_norm_eps));
  RETURN_IF_ERROR(Read(j, "image_size", &c->image_size));
  RETURN_IF_ERROR(Read(j, "patch_size", &c->patch_size));
  RETURN_IF_ERROR(Read(j, "num_channels", &c->num_channels));
  RETURN_IF_ERROR(Read(j, "qkv_bias", &c->qkv_bias));
  // ViTForImageClassification's classifier has no dropout of its own.
  c->classifier_dropout = 0.0;
  c->num_key_value_heads = c->num_attention_heads;
  RETURN_IF_ERROR(CheckRange("image_size", c->image_size, 1, kMaxImageSize));
  RETURN_IF_ERROR(CheckRange("patch_size", c->patch_size, 1, c->image_size));
  RETURN_IF_ERROR(CheckRange("num_channels", c->num_channels, 1, kMaxChannels));
  return absl::OkStatus();
}

absl::Status ParseCnn(const nlohmann::json& j, ModelConfig* c) {
  c->image_size = 32;
  c->num_channels = 3;
  c->hidden_sizes = {16, 32, 64};
  c->hidden_act = "relu";
  c->initializer_range = 0.02;
  c->hidden_dropout = 0.0;
  c->attention_dropout = 0.0;
  c->classifier_dropout = 0.0;
  RETURN_IF_ERROR(Read(j, "image_size", &c->image_size));
  RETURN_IF_ERROR(Read(j, "num_channels", &c->num_channels));
  RETURN_IF_ERROR(Read(j, "hidden_act", &c->hidden_act));
  RETURN_IF_ERROR(Read(j, "initializer_range", &c->initializer_range));
  RETURN_IF_ERROR(Read(j, "classifier_dropout", &c->classifier_dropout));
  if (j.contains("hidden_sizes") && !j["hidden_sizes"].is_null()) {
    const nlohmann::json& sizes = j["hidden_sizes"];
    if (!sizes.is_array() || sizes.empty() ||
        static_cast<int64_t>(sizes.size()) > kMaxConvBlocks) {
      return Bad("hidden_sizes",
                 absl::StrCat("must be a list of 1 to ", kMaxConvBlocks,
                              " channel counts"));
    }
    c->hidden_sizes.clear();
    for (const nlohmann::json& s : sizes) {
      if (!s.is_number_integer() || s.get<int64_t>() < 1 ||
          s.get<int64_t>() > kMaxConvChannels) {
        return Bad("hidden_sizes",
                   absl::StrCat("holds an entry that is not an integer in [1, ",
                                kMaxConvChannels, "]"));
      }
      c->hidden_sizes.push_back(s.get<int64_t>());
    }
  }
  RETURN_IF_ERROR(CheckRange("image_size", c->image_size, 1, kMaxImageSize));
  RETURN_IF_ERROR(CheckRange("num_channels", c->num_channels, 1, kMaxChannels));
  // The shared fields that describe the network's width and depth, so
  // generic code (logging, Validate) sees consistent values.
  c->hidden_size = c->hidden_sizes.back();
  c->num_hidden_layers = static_cast<int64_t>(c->hidden_sizes.size());
  c->num_attention_heads = 1;
  c->num_key_value_heads = 1;
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseImageConfig(const nlohmann::json& j, ModelConfig* config) {
  if (config->architecture == Architecture::kCnn) return ParseCnn(j, config);
  return ParseVit(j, config);
}

void WriteImageConfig(const ModelConfig& c, nlohmann::json* j) {
  nlohmann::json& out = *j;
  out["image_size"] = c.image_size;
  out["num_channels"] = c.num_channels;
  out["hidden_act"] = c.hidden_act;
  out["initializer_range"] = c.initializer_range;
  if (c.architecture == Architecture::kCnn) {
    out["hidden_sizes"] = c.hidden_sizes;
    out["classifier_dropout"] = c.classifier_dropout;
    return;
  }
  out["hidden_size"] = c.hidden_size;
  out["num_hidden_layers"] = c.num_hidden_layers;
  out["num_attention_heads"] = c.num_attention_heads;
  out["intermediate_size"] = c.intermediate_size;
  out["hidden_dropout_prob"] = c.hidden_dropout;
  out["attention_probs_dropout_prob"] = c.attention_dropout;
  out["layer_norm_eps"] = c.layer_norm_eps;
  out["patch_size"] = c.patch_size;
  out["qkv_bias"] = c.qkv_bias;
}

}  // namespace families
}  // namespace lathe
