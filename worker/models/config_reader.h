// Reading single keys of a config.json, shared by every family's parser
// (encoder_config.cc, decoder_config.cc, image_config.cc, model_config.cc),
// so that a malformed key is reported the same way whichever family reads
// it: INVALID_ARGUMENT "config.json: "KEY" WHAT". No LibTorch.
//
// The Read functions leave *out unchanged when the key is absent or null,
// so the caller sets the family's default first and a config that omits a
// key (or writes null, as Hugging Face does for unset options) keeps it.
#ifndef LATHE_WORKER_MODELS_CONFIG_READER_H_
#define LATHE_WORKER_MODELS_CONFIG_READER_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/models/model_config.h"

namespace lathe::config_json {

// INVALID_ARGUMENT "config.json: "KEY" WHAT" (WHAT e.g. "is not a string").
absl::Status Bad(const std::string& key, const std::string& what);

// Whether `j` holds `key` with a value other than null.
bool Present(const nlohmann::json& j, const std::string& key);

absl::Status Read(const nlohmann::json& j, const std::string& key, bool* out);
absl::Status Read(const nlohmann::json& j, const std::string& key,
                  std::string* out);
// Any number; an integer is converted.
absl::Status Read(const nlohmann::json& j, const std::string& key, double* out);
// An integer in [lo, hi] (the bounds keep a hostile config from asking for
// absurd allocations); the message names the bounds and the value.
absl::Status Read(const nlohmann::json& j, const std::string& key, int64_t lo,
                  int64_t hi, int64_t* out);
// An integer of any int64 value.
absl::Status Read(const nlohmann::json& j, const std::string& key,
                  int64_t* out);
// An optional integer: absent keeps *out, null resets it.
absl::Status ReadOptional(const nlohmann::json& j, const std::string& key,
                          std::optional<int64_t>* out);

// INVALID_ARGUMENT naming `key` unless lo <= value <= hi, for a value read
// before its bounds were known (they may depend on other keys).
absl::Status CheckRange(const std::string& key, int64_t value, int64_t lo,
                        int64_t hi);

// The transformer body's keys in BERT's names, which ViT's config uses too:
// hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
// hidden_act, hidden_dropout_prob, attention_probs_dropout_prob,
// initializer_range and layer_norm_eps, over the defaults in `c`.
absl::Status ReadBertBody(const nlohmann::json& j, ModelConfig* c);

}  // namespace lathe::config_json

#endif  // LATHE_WORKER_MODELS_CONFIG_READER_H_
