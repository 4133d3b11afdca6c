// config.json keys of the image families. ViT's defaults are those of
// Hugging Face's ViTConfig, so a config that omits a key means what it means
// there. lathe-cnn is Lathe's own family; its keys are documented in
// vision.h.
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/models/config_reader.h"
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

using config_json::Bad;
using config_json::CheckRange;
using config_json::Read;

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
  RETURN_IF_ERROR(config_json::ReadBertBody(j, c));
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
  c->cnn_pooling = "mean";
  RETURN_IF_ERROR(Read(j, "pooling", &c->cnn_pooling));
  if (c->cnn_pooling != "mean" && c->cnn_pooling != "flatten") {
    return Bad("pooling", "must be \"mean\" or \"flatten\"");
  }
  if (config_json::Present(j, "hidden_sizes")) {
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
    out["pooling"] = c.cnn_pooling;
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
