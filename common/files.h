// File helpers: whole-file reads, atomic writes, streaming SHA-256.
#ifndef LATHE_COMMON_FILES_H_
#define LATHE_COMMON_FILES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lathe {

// Incremental SHA-256; Hex() finishes and returns the lower-case digest.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  std::string Hex();

 private:
  void* ctx_;  // EVP_MD_CTX*
};

std::string Sha256Hex(std::string_view data);
absl::StatusOr<std::string> Sha256File(const std::string& path);

absl::StatusOr<std::string> ReadFile(const std::string& path);
// Writes to a temporary name in the same directory, fsyncs, renames over
// `path` and fsyncs the directory, so readers see the old or the new file.
absl::Status WriteFileAtomic(const std::string& path, std::string_view data);
absl::Status MakeDirs(const std::string& path);
bool PathExists(const std::string& path);
absl::StatusOr<int64_t> FileSize(const std::string& path);
// fsyncs the directory holding `path`, making a rename in it durable.
absl::Status SyncParentDir(const std::string& path);

// Lexically normalised absolute form of `path` ("." and ".." resolved), with
// symbolic links resolved where the path exists.
std::string CanonicalPath(const std::string& path);
// True when `path` (canonical) lies inside `root` (canonical).
bool PathWithin(const std::string& path, const std::string& root);

// The directory holding the running executable.
std::string ExecutableDir();

}  // namespace lathe

#endif  // LATHE_COMMON_FILES_H_
