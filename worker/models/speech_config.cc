// config.json keys of Wav2Vec2, with the defaults of Hugging Face's
// Wav2Vec2Config, so a config that omits a key means what it means there.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/json_file.h"
#include "common/status.h"
#include "worker/models/config_reader.h"
#include "worker/models/families.h"

namespace lathe {
namespace families {
namespace {

// Bounds far above any published model; they keep a hostile config from
// making the model allocate without limit.
constexpr int64_t kMaxConvLayers = 16;
constexpr int64_t kMaxConvChannels = 8192;
constexpr int64_t kMaxConvKernel = 1024;

using config_json::Bad;
using config_json::Present;
using config_json::Read;

absl::Status ReadSizes(const nlohmann::json& j, const std::string& key,
                       int64_t hi, std::vector<int64_t>* out) {
  if (!Present(j, key)) return absl::OkStatus();
  const nlohmann::json& v = j[key];
  if (!v.is_array() || v.empty() ||
      static_cast<int64_t>(v.size()) > kMaxConvLayers) {
    return Bad(key, absl::StrCat("must be a list of 1 to ", kMaxConvLayers,
                                 " integers"));
  }
  out->clear();
  for (const nlohmann::json& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < 1 ||
        x.get<int64_t>() > hi) {
      return Bad(key, absl::StrCat("holds an entry that is not an integer in "
                                   "[1, ",
                                   hi, "]"));
    }
    out->push_back(x.get<int64_t>());
  }
  return absl::OkStatus();
}

absl::Status Probability(const std::string& key, double p) {
  if (!(p >= 0 && p <= 1)) return Bad(key, "must be in [0, 1]");
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseSpeechConfig(const nlohmann::json& j, ModelConfig* c) {
  c->vocab_size = 32;
  c->hidden_size = 768;
  c->num_hidden_layers = 12;
  c->num_attention_heads = 12;
  c->num_key_value_heads = 12;
  c->intermediate_size = 3072;
  c->hidden_act = "gelu";
  c->hidden_dropout = 0.1;
  c->attention_dropout = 0.1;
  c->classifier_dropout = 0.0;
  c->initializer_range = 0.02;
  c->layer_norm_eps = 1e-5;
  c->pad_token_id = 0;
  c->bos_token_id = 1;
  c->eos_token_id = 2;
  SpeechConfig& s = c->speech;
  s = SpeechConfig{};
  RETURN_IF_ERROR(Read(j, "vocab_size", 1, 1 << 20, &c->vocab_size));
  RETURN_IF_ERROR(Read(j, "hidden_size", 1, 1 << 16, &c->hidden_size));
  RETURN_IF_ERROR(Read(j, "num_hidden_layers", 1, 1024, &c->num_hidden_layers));
  RETURN_IF_ERROR(
      Read(j, "num_attention_heads", 1, 1024, &c->num_attention_heads));
  c->num_key_value_heads = c->num_attention_heads;
  RETURN_IF_ERROR(
      Read(j, "intermediate_size", 1, 1 << 18, &c->intermediate_size));
  RETURN_IF_ERROR(Read(j, "hidden_act", &c->hidden_act));
  RETURN_IF_ERROR(Read(j, "hidden_dropout", &c->hidden_dropout));
  RETURN_IF_ERROR(Read(j, "attention_dropout", &c->attention_dropout));
  RETURN_IF_ERROR(Read(j, "initializer_range", &c->initializer_range));
  RETURN_IF_ERROR(Read(j, "layer_norm_eps", &c->layer_norm_eps));
  RETURN_IF_ERROR(
      config_json::ReadOptional(j, "pad_token_id", &c->pad_token_id));
  RETURN_IF_ERROR(
      config_json::ReadOptional(j, "bos_token_id", &c->bos_token_id));
  RETURN_IF_ERROR(
      config_json::ReadOptional(j, "eos_token_id", &c->eos_token_id));

  RETURN_IF_ERROR(ReadSizes(j, "conv_dim", kMaxConvChannels, &s.conv_dim));
  RETURN_IF_ERROR(ReadSizes(j, "conv_kernel", kMaxConvKernel, &s.conv_kernel));
  RETURN_IF_ERROR(ReadSizes(j, "conv_stride", kMaxConvKernel, &s.conv_stride));
  if (s.conv_dim.size() != s.conv_kernel.size() ||
      s.conv_dim.size() != s.conv_stride.size()) {
    return Bad("conv_dim",
               "conv_dim, conv_kernel and conv_stride must have "
               "one entry per layer each");
  }
  RETURN_IF_ERROR(Read(j, "conv_bias", &s.conv_bias));
  RETURN_IF_ERROR(Read(j, "feat_extract_norm", &s.feat_extract_norm));
  if (s.feat_extract_norm != "group" && s.feat_extract_norm != "layer") {
    return Bad("feat_extract_norm", "must be \"group\" or \"layer\"");
  }
  RETURN_IF_ERROR(
      Read(j, "feat_extract_activation", &s.feat_extract_activation));
  RETURN_IF_ERROR(Read(j, "feat_proj_dropout", &s.feat_proj_dropout));
  RETURN_IF_ERROR(Read(j, "num_conv_pos_embeddings", 1, kMaxConvKernel,
                       &s.num_conv_pos_embeddings));
  RETURN_IF_ERROR(Read(j, "num_conv_pos_embedding_groups", 1, 1 << 16,
                       &s.num_conv_pos_embedding_groups));
  if (c->hidden_size % s.num_conv_pos_embedding_groups != 0) {
    return Bad("num_conv_pos_embedding_groups",
               absl::StrCat("must divide hidden_size ", c->hidden_size));
  }
  RETURN_IF_ERROR(Read(j, "do_stable_layer_norm", &s.do_stable_layer_norm));
  RETURN_IF_ERROR(Read(j, "activation_dropout", &s.activation_dropout));
  RETURN_IF_ERROR(Read(j, "final_dropout", &s.final_dropout));
  RETURN_IF_ERROR(Read(j, "layerdrop", &s.layerdrop));
  RETURN_IF_ERROR(Read(j, "apply_spec_augment", &s.apply_spec_augment));
  RETURN_IF_ERROR(Read(j, "mask_time_prob", &s.mask_time_prob));
  RETURN_IF_ERROR(Read(j, "mask_time_length", 1, 1 << 20, &s.mask_time_length));
  RETURN_IF_ERROR(
      Read(j, "mask_time_min_masks", 0, 1 << 20, &s.mask_time_min_masks));
  RETURN_IF_ERROR(Read(j, "mask_feature_prob", &s.mask_feature_prob));
  RETURN_IF_ERROR(
      Read(j, "mask_feature_length", 1, 1 << 20, &s.mask_feature_length));
  RETURN_IF_ERROR(
      Read(j, "mask_feature_min_masks", 0, 1 << 20, &s.mask_feature_min_masks));
  RETURN_IF_ERROR(Read(j, "ctc_loss_reduction", &s.ctc_loss_reduction));
  if (s.ctc_loss_reduction != "sum" && s.ctc_loss_reduction != "mean") {
    return Bad("ctc_loss_reduction", "must be \"sum\" or \"mean\"");
  }
  RETURN_IF_ERROR(Read(j, "ctc_zero_infinity", &s.ctc_zero_infinity));
  RETURN_IF_ERROR(
      Read(j, "classifier_proj_size", 1, 1 << 16, &s.classifier_proj_size));
  for (const auto& [key, p] :
       std::initializer_list<std::pair<const char*, double>>{
           {"feat_proj_dropout", s.feat_proj_dropout},
           {"activation_dropout", s.activation_dropout},
           {"final_dropout", s.final_dropout},
           {"layerdrop", s.layerdrop},
           {"mask_time_prob", s.mask_time_prob},
           {"mask_feature_prob", s.mask_feature_prob}}) {
    RETURN_IF_ERROR(Probability(key, p));
  }
  bool weighted = false;
  RETURN_IF_ERROR(Read(j, "use_weighted_layer_sum", &weighted));
  if (weighted) {
    return Bad("use_weighted_layer_sum", "true is not supported");
  }
  bool adapter = false;
  RETURN_IF_ERROR(Read(j, "add_adapter", &adapter));
  if (adapter) return Bad("add_adapter", "true is not supported");
  return absl::OkStatus();
}

void WriteSpeechConfig(const ModelConfig& c, nlohmann::json* j) {
  const SpeechConfig& s = c.speech;
  nlohmann::json& out = *j;
  out["vocab_size"] = c.vocab_size;
  out["hidden_size"] = c.hidden_size;
  out["num_hidden_layers"] = c.num_hidden_layers;
  out["num_attention_heads"] = c.num_attention_heads;
  out["intermediate_size"] = c.intermediate_size;
  out["hidden_act"] = c.hidden_act;
  out["hidden_dropout"] = c.hidden_dropout;
  out["attention_dropout"] = c.attention_dropout;
  out["activation_dropout"] = s.activation_dropout;
  out["feat_proj_dropout"] = s.feat_proj_dropout;
  out["final_dropout"] = s.final_dropout;
  out["layerdrop"] = s.layerdrop;
  out["initializer_range"] = c.initializer_range;
  out["layer_norm_eps"] = c.layer_norm_eps;
  out["conv_dim"] = s.conv_dim;
  out["conv_kernel"] = s.conv_kernel;
  out["conv_stride"] = s.conv_stride;
  out["num_feat_extract_layers"] = s.conv_dim.size();
  out["conv_bias"] = s.conv_bias;
  out["feat_extract_norm"] = s.feat_extract_norm;
  out["feat_extract_activation"] = s.feat_extract_activation;
  out["num_conv_pos_embeddings"] = s.num_conv_pos_embeddings;
  out["num_conv_pos_embedding_groups"] = s.num_conv_pos_embedding_groups;
  out["do_stable_layer_norm"] = s.do_stable_layer_norm;
  out["apply_spec_augment"] = s.apply_spec_augment;
  out["mask_time_prob"] = s.mask_time_prob;
  out["mask_time_length"] = s.mask_time_length;
  out["mask_time_min_masks"] = s.mask_time_min_masks;
  out["mask_feature_prob"] = s.mask_feature_prob;
  out["mask_feature_length"] = s.mask_feature_length;
  out["mask_feature_min_masks"] = s.mask_feature_min_masks;
  out["ctc_loss_reduction"] = s.ctc_loss_reduction;
  out["ctc_zero_infinity"] = s.ctc_zero_infinity;
  out["classifier_proj_size"] = s.classifier_proj_size;
  out["use_weighted_layer_sum"] = false;
  out["add_adapter"] = false;
  if (c.pad_token_id.has_value()) out["pad_token_id"] = *c.pad_token_id;
  if (c.bos_token_id.has_value()) out["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id.has_value()) out["eos_token_id"] = *c.eos_token_id;
}

}  // namespace families

namespace {
constexpr int64_t kMaxVocabBytes = 1 << 20;
constexpr size_t kMaxVocabTokens = 4096;
}  // namespace

absl::StatusOr<std::vector<std::string>> ReadCtcVocab(const std::string& path) {
  ASSIGN_OR_RETURN(const nlohmann::json j,
                   ReadJsonFile(path, kMaxVocabBytes, "vocabulary"));
  if (!j.is_object() || j.empty() || j.size() > kMaxVocabTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not an object of 1 to ", kMaxVocabTokens, " tokens"));
  }
  std::vector<std::string> vocab(j.size());
  std::vector<bool> seen(j.size(), false);
  for (const auto& [token, id] : j.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= static_cast<int64_t>(j.size()) ||
        seen[id.get<size_t>()]) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": \"", token, "\" needs an id of its own between 0 and ",
          j.size() - 1));
    }
    seen[id.get<size_t>()] = true;
    vocab[id.get<size_t>()] = token;
  }
  return vocab;
}

absl::Status WriteCtcTokenizerFiles(const std::string& dir,
                                    const std::vector<std::string>& vocab) {
  nlohmann::json v = nlohmann::json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
  const nlohmann::json special = {{"bos_token", "<s>"},
                                  {"eos_token", "</s>"},
                                  {"unk_token", "<unk>"},
                                  {"pad_token", "<pad>"}};
  nlohmann::json config = special;
  config["tokenizer_class"] = "Wav2Vec2CTCTokenizer";
  config["word_delimiter_token"] = "|";
  config["do_lower_case"] = false;
  RETURN_IF_ERROR(WriteFileAtomic(dir + "/vocab.json", v.dump(2) + "\n"));
  RETURN_IF_ERROR(
      WriteFileAtomic(dir + "/tokenizer_config.json", config.dump(2) + "\n"));
  return WriteFileAtomic(dir + "/special_tokens_map.json",
                         special.dump(2) + "\n");
}

}  // namespace lathe
