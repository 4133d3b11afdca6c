#include "server/core/artifacts.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lathe::server {

bool IsSha256Hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<ArtifactStore>> ArtifactStore::Open(
    const std::string& root) {
  RETURN_IF_ERROR(MakeDirs(root + "/blobs"));
  RETURN_IF_ERROR(MakeDirs(root + "/tmp"));
  return std::unique_ptr<ArtifactStore>(new ArtifactStore(root));
}

std::string ArtifactStore::PathFor(const std::string& sha256) const {
  return absl::StrCat(root_, "/blobs/", sha256.substr(0, 2), "/", sha256);
}

bool ArtifactStore::Has(const std::string& sha256, int64_t size) const {
  if (!IsSha256Hex(sha256)) return false;
  auto s = FileSize(PathFor(sha256));
  return s.ok() && *s == size;
}

void ArtifactStore::Remove(const std::string& sha256) const {
  if (IsSha256Hex(sha256)) ::unlink(PathFor(sha256).c_str());
}

absl::StatusOr<std::unique_ptr<BlobWriter>> ArtifactStore::NewWriter(
    int64_t limit_bytes) const {
  static std::atomic<uint64_t> counter{0};
  std::string tmp = absl::StrCat(root_, "/tmp/upload-", ::getpid(), "-",
                                 counter.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<BlobWriter>(
      new BlobWriter(this, std::move(tmp), fd, limit_bytes));
}

BlobWriter::~BlobWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!done_) ::unlink(tmp_path_.c_str());
}

absl::Status BlobWriter::Append(std::string_view data) {
  if (size_ + static_cast<int64_t>(data.size()) > limit_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("upload exceeds the limit of ", limit_, " bytes"));
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSPC) {
        return absl::ResourceExhaustedError("artifact disk is full");
      }
      return absl::InternalError(
          absl::StrCat("cannot write upload: ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  hash_.Update(data);
  size_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> BlobWriter::Commit(
    const std::string& expected_sha256) {
  if (::fsync(fd_) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot sync upload: ", std::strerror(errno)));
  }
  ::close(fd_);
  fd_ = -1;
  std::string digest = hash_.Hex();
  if (!expected_sha256.empty() && digest != expected_sha256) {
    return absl::DataLossError(absl::StrCat("content has SHA-256 ", digest,
                                            ", expected ", expected_sha256));
  }
  const std::string dest = store_->PathFor(digest);
  RETURN_IF_ERROR(MakeDirs(dest.substr(0, dest.rfind('/'))));
  if (::rename(tmp_path_.c_str(), dest.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot store blob: ", std::strerror(errno)));
  }
  done_ = true;
  RETURN_IF_ERROR(SyncParentDir(dest));
  return digest;
}

}  // namespace lathe::server
