// The directories the server may read local files from (model directories
// and file:// datasets). Every local path a client names passes through
// Resolve; nothing else in the core opens a client-named path.
//
// Thread safety: immutable after Create; every method may be called
// concurrently.
#ifndef LATHE_SERVER_CORE_ALLOWED_ROOTS_H_
#define LATHE_SERVER_CORE_ALLOWED_ROOTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lathe::server {

class AllowedRoots {
 public:
  // Each root must be absolute; they are made canonical. Empty: no local
  // paths at all.
  static absl::StatusOr<AllowedRoots> Create(std::vector<std::string> roots);
  AllowedRoots() = default;

  // The canonical path of `value` (an absolute path or a file:// URI) when
  // it lies inside a root; INVALID_ARGUMENT naming `field` otherwise.
  absl::StatusOr<std::string> Resolve(const std::string& field,
                                      const std::string& value) const;

  const std::vector<std::string>& roots() const { return roots_; }

 private:
  std::vector<std::string> roots_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_ALLOWED_ROOTS_H_
