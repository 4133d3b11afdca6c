#include "common/json_file.h"

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status.h"

namespace lathe {

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path,
                                            int64_t max_bytes,
                                            const std::string& what) {
  ASSIGN_OR_RETURN(int64_t size, FileSize(path));
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", size, " bytes is too large for a ", what,
                     " (limit ", max_bytes, " bytes)"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
}

}  // namespace lathe
