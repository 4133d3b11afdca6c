#include "server/core/allowed_roots.h"

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "server/core/job_states.h"

namespace lathe::server {

namespace {
constexpr char kFilePrefix[] = "file://";
}  // namespace

absl::StatusOr<AllowedRoots> AllowedRoots::Create(
    std::vector<std::string> roots) {
  for (std::string& root : roots) {
    if (root.empty() || root[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("allowed root \"", root, "\" is not an absolute path"));
    }
    root = CanonicalPath(root);
  }
  AllowedRoots out;
  out.roots_ = std::move(roots);
  return out;
}

absl::StatusOr<std::string> AllowedRoots::Resolve(
    const std::string& field, const std::string& value) const {
  std::string path = value;
  if (absl::StartsWith(path, kFilePrefix)) {
    path = path.substr(strlen(kFilePrefix));
  }
  if (path.empty() || path[0] != '/') {
    return Invalid(field, absl::StrCat("\"", value,
                                       "\" is not an absolute path or "
                                       "file:// URI"));
  }
  const std::string canonical = CanonicalPath(path);
  for (const std::string& root : roots_) {
    if (PathWithin(canonical, root)) return canonical;
  }
  return Invalid(
      field,
      absl::StrCat("\"", value, "\" is outside the server's allowed roots (",
                   roots_.empty() ? std::string("none configured; see "
                                                "--allow-root")
                                  : absl::StrJoin(roots_, ", "),
                   ")"));
}

}  // namespace lathe::server
