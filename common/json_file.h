// Reading a whole JSON document from a file, bounded in size: config.json,
// vocab.json, tokenizer.json and the tokenizer's other files. No LibTorch.
#ifndef LATHE_COMMON_JSON_FILE_H_
#define LATHE_COMMON_JSON_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lathe {

// The JSON document in the file at `path`. INVALID_ARGUMENT starting with
// `path` when the file is over `max_bytes` ("N bytes is too large for a
// WHAT (limit MAX bytes)") or is not JSON ("not valid JSON: ...").
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path,
                                            int64_t max_bytes,
                                            const std::string& what);

}  // namespace lathe

#endif  // LATHE_COMMON_JSON_FILE_H_
