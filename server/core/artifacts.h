// Content-addressed blob store on disk: ROOT/blobs/ab/abcdef... (SHA-256).
// Writes go to ROOT/tmp, are fsynced, verified and renamed into place, so a
// blob path either does not exist or holds exactly the bytes of its digest.
//
// Thread safety: all methods may be called concurrently.
#ifndef LATHE_SERVER_CORE_ARTIFACTS_H_
#define LATHE_SERVER_CORE_ARTIFACTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/files.h"

namespace lathe::server {

class ArtifactStore;

// An upload in progress. Append bytes, then Commit(); destroying an
// uncommitted writer removes its temporary file.
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;
  // RESOURCE_EXHAUSTED once more than the writer's limit has been appended.
  absl::Status Append(std::string_view data);
  int64_t size() const { return size_; }
  // Finishes the blob. When `expected_sha256` is not empty the content must
  // match it (DATA_LOSS otherwise). Returns the digest.
  absl::StatusOr<std::string> Commit(const std::string& expected_sha256 = "");

 private:
  friend class ArtifactStore;
  BlobWriter(const ArtifactStore* store, std::string tmp_path, int fd,
             int64_t limit)
      : store_(store), tmp_path_(std::move(tmp_path)), fd_(fd), limit_(limit) {}
  const ArtifactStore* store_;
  std::string tmp_path_;
  int fd_;
  int64_t limit_;
  int64_t size_ = 0;
  Sha256 hash_;
  bool done_ = false;
};

class ArtifactStore {
 public:
  static absl::StatusOr<std::unique_ptr<ArtifactStore>> Open(
      const std::string& root);
  // A writer for at most `limit_bytes` bytes.
  absl::StatusOr<std::unique_ptr<BlobWriter>> NewWriter(
      int64_t limit_bytes) const;
  // Path of the blob with this digest (it may not exist).
  std::string PathFor(const std::string& sha256) const;
  // Deletes the blob (no error when it is already gone).
  void Remove(const std::string& sha256) const;
  // True when the blob exists with exactly `size` bytes.
  bool Has(const std::string& sha256, int64_t size) const;

 private:
  explicit ArtifactStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

// True for 64 lower-case hex digits.
bool IsSha256Hex(std::string_view s);

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_ARTIFACTS_H_
