// Feeds: the bytes of a folder-dataset archive (common/tar.h ExtractTar:
// libarchive's tar reader, then Lathe's checks and writes), as a client
// uploads it. Checks: no crash or sanitizer report; whatever the
// outcome, nothing is written outside the destination folder, nothing in it
// is a link or special file, and the file count and byte limits hold; when
// extraction succeeds, WriteTar of the extracted folder extracts again to
// the same files (or is refused for a name too long to write).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "common/tar.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxFiles = 64;
constexpr int64_t kMaxBytes = 1 << 20;

// Regular files under `dir` by relative path, with their contents; checks
// that everything there is a regular file or a directory.
std::map<std::string, std::string> Tree(const fs::path& dir) {
  std::map<std::string, std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::file_status st = it->symlink_status();
    FUZZ_CHECK(fs::is_regular_file(st) || fs::is_directory(st));
    if (!fs::is_regular_file(st)) continue;
    std::ifstream in(it->path(), std::ios::binary);
    files[fs::relative(it->path(), dir).generic_string()] = std::string(
        (std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return files;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path root = fs::path(lathe::fuzz::ScratchDir()) / "tar";
  lathe::fuzz::RemoveAll(root);
  fs::create_directories(root);
  const fs::path archive = root / "in.tar";
  const fs::path dest = root / "out";
  lathe::fuzz::WriteFileOrDie(
      archive, std::string_view(reinterpret_cast<const char*>(data), size));

  const absl::Status status =
      lathe::ExtractTar(archive, dest, kMaxFiles, kMaxBytes);
  if (!status.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(status) || absl::IsInternal(status));
  }

  // Only the archive and the destination may exist next to each other.
  for (const auto& entry : fs::directory_iterator(root)) {
    FUZZ_CHECK(entry.path() == archive || entry.path() == dest);
  }
  const std::map<std::string, std::string> files = Tree(dest);
  int64_t bytes = 0;
  for (const auto& [name, contents] : files) {
    bytes += static_cast<int64_t>(contents.size());
  }
  FUZZ_CHECK(static_cast<int64_t>(files.size()) <= kMaxFiles);
  FUZZ_CHECK(bytes <= kMaxBytes);

  if (status.ok()) {
    const fs::path again = root / "again.tar";
    const absl::Status written = lathe::WriteTar(dest, again);
    if (written.ok()) {
      const fs::path dest2 = root / "out2";
      FUZZ_CHECK(lathe::ExtractTar(again, dest2, kMaxFiles, kMaxBytes).ok());
      FUZZ_CHECK(Tree(dest2) == files);
    } else {
      FUZZ_CHECK(absl::IsInvalidArgument(written) &&
                 absl::StrContains(written.message(), "too long"));
    }
  }
  lathe::fuzz::RemoveAll(root);
  return 0;
}
