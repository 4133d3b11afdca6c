#include "worker/models/config_reader.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lathe::config_json {

using nlohmann::json;

absl::Status Bad(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: \"", key, "\" ", what));
}

bool Present(const json& j, const std::string& key) {
  return j.contains(key) && !j[key].is_null();
}

absl::Status Read(const json& j, const std::string& key, bool* out) {
  if (!Present(j, key)) return absl::OkStatus();
  if (!j[key].is_boolean()) return Bad(key, "is not a boolean");
  *out = j[key].get<bool>();
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, std::string* out) {
  if (!Present(j, key)) return absl::OkStatus();
  if (!j[key].is_string()) return Bad(key, "is not a string");
  *out = j[key].get<std::string>();
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, double* out) {
  if (!Present(j, key)) return absl::OkStatus();
  if (!j[key].is_number()) return Bad(key, "is not a number");
  *out = j[key].get<double>();
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, int64_t lo, int64_t hi,
                  int64_t* out) {
  if (!Present(j, key)) return absl::OkStatus();
  const json& v = j[key];
  if (!v.is_number_integer()) return Bad(key, "is not an integer");
  // Above int64's range: reading it as int64 would wrap.
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(hi)) {
    return Bad(key, absl::StrCat("must be in [", lo, ", ", hi, "]"));
  }
  const int64_t x = v.get<int64_t>();
  RETURN_IF_ERROR(CheckRange(key, x, lo, hi));
  *out = x;
  return absl::OkStatus();
}

absl::Status Read(const json& j, const std::string& key, int64_t* out) {
  return Read(j, key, std::numeric_limits<int64_t>::min(),
              std::numeric_limits<int64_t>::max(), out);
}

absl::Status ReadOptional(const json& j, const std::string& key,
                          std::optional<int64_t>* out) {
  if (!j.contains(key)) return absl::OkStatus();
  if (j[key].is_null()) {
    out->reset();
    return absl::OkStatus();
  }
  int64_t v = 0;
  RETURN_IF_ERROR(Read(j, key, &v));
  *out = v;
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

absl::Status ReadBertBody(const json& j, ModelConfig* c) {
  RETURN_IF_ERROR(Read(j, "hidden_size", &c->hidden_size));
  RETURN_IF_ERROR(Read(j, "num_hidden_layers", &c->num_hidden_layers));
  RETURN_IF_ERROR(Read(j, "num_attention_heads", &c->num_attention_heads));
  RETURN_IF_ERROR(Read(j, "intermediate_size", &c->intermediate_size));
  RETURN_IF_ERROR(Read(j, "hidden_act", &c->hidden_act));
  RETURN_IF_ERROR(Read(j, "hidden_dropout_prob", &c->hidden_dropout));
  RETURN_IF_ERROR(
      Read(j, "attention_probs_dropout_prob", &c->attention_dropout));
  RETURN_IF_ERROR(Read(j, "initializer_range", &c->initializer_range));
  return Read(j, "layer_norm_eps", &c->layer_norm_eps);
}

}  // namespace lathe::config_json
