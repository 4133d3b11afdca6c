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
  if (value.size() > 4096) {
    return Invalid(field, "is longer than 4096 bytes");
  }
  for (char c : value) {
    // A NUL would end the path where the operating system reads it, after
    // the check saw the whole string.
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Invalid(field, "has a NUL or another control character");
    }
  }
  if (path.empty() || path[0] != '/') {
    return Invalid(field, absl::StrCat("\"", value.substr(0, 256),
                                       "\" is not an absolute path or "
                                       "file:// URI"));
  }
  const std::string canonical = CanonicalPath(path);
  for (const std::string& root : roots_) {
    if (PathWithin(canonical, root)) return canonical;
  }
  return Invalid(
      field, absl::StrCat("\"", value.substr(0, 256),
                          "\" is outside the server's allowed roots (",
                          roots_.empty() ? std::string("none configured; see "
                                                       "--allow-root")
                                         : absl::StrJoin(roots_, ", "),
                          ")"));
}

}  // namespace lathe::server
