#include "worker/train/distributed_spec.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lathe {
namespace {

absl::Status Field(const nlohmann::json& j, const char* key, int min, int max,
                   int* out) {
  if (!j.contains(key)) return absl::OkStatus();
  if (!j[key].is_number_integer() || j[key].get<int64_t>() < min ||
      j[key].get<int64_t>() > max) {
    return absl::InvalidArgumentError(absl::StrCat("spec: distributed.", key,
                                                   " must be an integer in [",
                                                   min, ", ", max, "]"));
  }
  *out = j[key].get<int>();
  return absl::OkStatus();
}

absl::Status Field(const nlohmann::json& j, const char* key, std::string* out) {
  if (!j.contains(key)) return absl::OkStatus();
  if (!j[key].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: distributed.", key, " must be a string"));
  }
  *out = j[key].get<std::string>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DistributedSpec> DistributedSpec::FromJson(
    const nlohmann::json& j) {
  DistributedSpec s;
  if (j.is_null()) return s;
  if (!j.is_object()) {
    return absl::InvalidArgumentError("spec: distributed is not an object");
  }
  RETURN_IF_ERROR(Field(j, "world_size", 1, 1024, &s.world_size));
  RETURN_IF_ERROR(Field(j, "rank", 0, 1023, &s.rank));
  RETURN_IF_ERROR(Field(j, "store_host", &s.store_host));
  RETURN_IF_ERROR(Field(j, "store_port", 0, 65535, &s.store_port));
  RETURN_IF_ERROR(Field(j, "store_prefix", &s.store_prefix));
  RETURN_IF_ERROR(Field(j, "timeout_seconds", 1, 86400, &s.timeout_seconds));
  RETURN_IF_ERROR(Field(j, "local_ranks", 0, 1024, &s.local_ranks));
  if (s.rank >= s.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: distributed.rank ", s.rank,
                     " is not below world_size ", s.world_size));
  }
  if (s.world_size > 1 && (s.store_port == 0 || s.store_host.empty())) {
    return absl::InvalidArgumentError(
        "spec: distributed.store_host and store_port are required when "
        "world_size > 1");
  }
  return s;
}

nlohmann::json DistributedSpec::ToJson() const {
  return {{"world_size", world_size},     {"rank", rank},
          {"store_host", store_host},     {"store_port", store_port},
          {"store_prefix", store_prefix}, {"timeout_seconds", timeout_seconds},
          {"local_ranks", local_ranks}};
}

}  // namespace lathe
