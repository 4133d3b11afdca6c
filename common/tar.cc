#include "common/tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace lathe {
namespace {

namespace fs = std::filesystem;
constexpr size_t kBlock = 512;

void PutOctal(char* field, size_t width, uint64_t value) {
  // width - 1 digits and a terminating NUL, as ustar readers expect.
  std::string digits(width - 1, '0');
  for (size_t i = width - 1; i-- > 0 && value > 0; value >>= 3) {
    digits[i] = static_cast<char>('0' + (value & 7));
  }
  std::memcpy(field, digits.data(), width - 1);
  field[width - 1] = '\0';
}

uint64_t Checksum(const char* header) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    // The checksum field itself counts as spaces.
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(header[i]);
  }
  return sum;
}

constexpr size_t kReadBlock = 64 << 10;
// Longest entry name accepted, and longest component (Linux PATH_MAX and
// NAME_MAX); longer names could not be written anyway.
constexpr size_t kMaxName = 4096;
constexpr size_t kMaxComponent = 255;

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

struct ArchiveFree {
  void operator()(archive* a) const { archive_read_free(a); }
};

std::string ArchiveError(archive* a) {
  const char* e = archive_error_string(a);
  return e != nullptr ? e : "unknown error";
}

// An entry name for an error message: quoted, escaped, at most 200 bytes.
std::string Quote(const std::string& name) {
  constexpr size_t kShown = 200;
  if (name.size() <= kShown)
    return absl::StrCat("\"", absl::CHexEscape(name), "\"");
  return absl::StrCat("\"", absl::CHexEscape(name.substr(0, kShown)), "...\"");
}

// Splits an entry name into its components, refusing, by INVALID_ARGUMENT
// from `bad`, names that are absolute, empty, have ".." or empty components
// or are too long. "." components are dropped (archives made with
// `tar -C DIR .` start every name with "./"); a folder's name may end with
// one "/".
template <typename Bad>
absl::Status SplitName(const std::string& name, bool is_dir,
                       std::vector<std::string>* parts, const Bad& bad) {
  const std::string quoted = Quote(name);
  if (name.empty() || name[0] == '/') {
    return bad(absl::StrCat("entry ", quoted, " is not a relative path"));
  }
  if (name.size() > kMaxName) {
    return bad(absl::StrCat("entry ", quoted, " has too long a name"));
  }
  std::vector<std::string> split = absl::StrSplit(name, '/');
  if (is_dir && split.size() > 1 && split.back().empty()) split.pop_back();
  for (std::string& part : split) {
    if (part == "..") {
      return bad(absl::StrCat("entry ", quoted, " leaves the folder"));
    }
    if (part.empty()) {
      return bad(absl::StrCat("entry ", quoted,
                              " is not a relative path: empty component"));
    }
    if (part.size() > kMaxComponent) {
      return bad(absl::StrCat("entry ", quoted, " has too long a name"));
    }
    if (part != ".") parts->push_back(std::move(part));
  }
  return absl::OkStatus();
}

// Opens the folder made of the first `n` of `parts` under `root`, creating
// what is missing (0755) and following no symbolic link on the way.
template <typename Bad>
absl::StatusOr<Fd> OpenDirs(int root, const std::vector<std::string>& parts,
                            size_t n, const std::string& quoted,
                            const Bad& bad) {
  Fd dir(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (dir.get() < 0) return absl::InternalError("cannot duplicate a folder");
  for (size_t i = 0; i < n; ++i) {
    const char* part = parts[i].c_str();
    if (::mkdirat(dir.get(), part, 0755) != 0 && errno != EEXIST) {
      return absl::InternalError(absl::StrCat(
          "cannot create a folder for ", quoted, ": ", std::strerror(errno)));
    }
    Fd next(::openat(dir.get(), part,
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.get() < 0) {
      if (errno == ENOTDIR || errno == ELOOP) {
        return bad(absl::StrCat("entry ", quoted,
                                " lies under an earlier entry that is a file"));
      }
      return absl::InternalError(absl::StrCat(
          "cannot open a folder for ", quoted, ": ", std::strerror(errno)));
    }
    dir = std::move(next);
  }
  return dir;
}

absl::Status WriteAll(int fd, const char* data, size_t size,
                      const fs::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(absl::StrCat("cannot write ", path.string(),
                                              ": ", std::strerror(errno)));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteTar(const std::string& dir, const std::string& tar_path) {
  std::error_code ec;
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) {
      files.push_back(it->path());
    }
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": cannot list: ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  std::ofstream out(tar_path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", tar_path));
  std::vector<char> buf(1 << 20);
  for (const fs::path& file : files) {
    const std::string name = fs::relative(file, dir, ec).generic_string();
    if (ec || name.empty()) {
      return absl::InternalError(absl::StrCat("cannot name ", file.string()));
    }
    char header[kBlock] = {0};
    std::string prefix, rest = name;
    if (rest.size() > 100) {
      // Split at a slash: prefix (<= 155 bytes) / name (<= 100 bytes).
      const size_t cut = rest.rfind('/', 155);
      if (cut == std::string::npos || rest.size() - cut - 1 > 100 ||
          name.size() > 255) {
        return absl::InvalidArgumentError(
            absl::StrCat(file.string(), ": path too long for an archive"));
      }
      prefix = rest.substr(0, cut);
      rest = rest.substr(cut + 1);
    }
    const uint64_t size = fs::file_size(file, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot stat ", name));
    std::memcpy(header, rest.data(), rest.size());
    PutOctal(header + 100, 8, 0644);
    PutOctal(header + 108, 8, 0);
    PutOctal(header + 116, 8, 0);
    PutOctal(header + 124, 12, size);
    PutOctal(header + 136, 12, 0);
    header[156] = '0';
    std::memcpy(header + 257, "ustar", 6);
    std::memcpy(header + 263, "00", 2);
    std::memcpy(header + 345, prefix.data(), prefix.size());
    PutOctal(header + 148, 7, Checksum(header));
    header[155] = ' ';
    out.write(header, kBlock);
    std::ifstream in(file, std::ios::binary);
    uint64_t copied = 0;
    while (in && copied < size) {
      in.read(buf.data(), static_cast<std::streamsize>(
                              std::min<uint64_t>(buf.size(), size - copied)));
      out.write(buf.data(), in.gcount());
      copied += static_cast<uint64_t>(in.gcount());
    }
    if (copied != size) {
      return absl::InternalError(absl::StrCat("cannot read ", name));
    }
    const size_t pad = (kBlock - size % kBlock) % kBlock;
    std::fill(buf.begin(), buf.begin() + pad, 0);
    out.write(buf.data(), static_cast<std::streamsize>(pad));
  }
  std::fill(buf.begin(), buf.begin() + 2 * kBlock, 0);
  out.write(buf.data(), 2 * kBlock);
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", tar_path));
  return absl::OkStatus();
}

absl::Status ExtractTar(const std::string& tar_path, const std::string& dest,
                        int64_t max_files, int64_t max_bytes) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(tar_path, ": ", what));
  };
  const Fd in(::open(tar_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", tar_path));
  }
  std::error_code ec;
  fs::create_directories(dest, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", dest));
  }
  const Fd root(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (root.get() < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", dest));
  }
  // Tar formats only (ustar, pax, GNU, v7): no compression filters, no
  // other archive formats. Declared after `in`, so freed before it closes.
  const std::unique_ptr<archive, ArchiveFree> a(archive_read_new());
  if (a == nullptr || archive_read_support_format_tar(a.get()) != ARCHIVE_OK) {
    return absl::InternalError("cannot start the archive reader");
  }
  if (archive_read_open_fd(a.get(), in.get(), kReadBlock) != ARCHIVE_OK) {
    return bad(absl::StrCat(
        "not a tar archive, or its first header is damaged (bad header "
        "checksum or cut short): ",
        ArchiveError(a.get())));
  }
  int64_t entries = 0, bytes = 0;
  std::string last = "the start";  // For errors between entries.
  std::vector<char> buf(kReadBlock);
  while (true) {
    archive_entry* entry = nullptr;
    const int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) return absl::OkStatus();
    // ARCHIVE_WARN still gives a whole entry (for instance a UTF-8 name
    // that the C locale cannot convert; its bytes are kept). ARCHIVE_RETRY
    // is a header that fails its checksum: refused, never skipped.
    if (r == ARCHIVE_RETRY) {
      return bad(absl::StrCat("bad header checksum after ", last, " (",
                              ArchiveError(a.get()), ")"));
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      return bad(absl::StrCat("damaged or truncated archive after ", last, " (",
                              ArchiveError(a.get()), ")"));
    }
    const char* raw = archive_entry_pathname(entry);
    if (raw == nullptr) raw = archive_entry_pathname_utf8(entry);
    if (raw == nullptr) {
      return bad(absl::StrCat("the entry after ", last, " has no name"));
    }
    const std::string name = raw;
    const std::string quoted = Quote(name);
    last = absl::StrCat("entry ", quoted);
    if (++entries > max_files) return bad("too many files");
    // Every check is made on the name and type before anything is written.
    const mode_t type = archive_entry_filetype(entry);
    const bool is_dir = archive_entry_hardlink(entry) == nullptr &&
                        archive_entry_symlink(entry) == nullptr &&
                        type == AE_IFDIR;
    std::vector<std::string> parts;
    RETURN_IF_ERROR(SplitName(name, is_dir, &parts, bad));
    if (archive_entry_hardlink(entry) != nullptr ||
        archive_entry_symlink(entry) != nullptr ||
        (type != AE_IFREG && type != AE_IFDIR)) {
      return bad(
          absl::StrCat("entry ", quoted, " is not a regular file or folder"));
    }
    if (is_dir) {
      if (parts.empty()) continue;  // "./": the destination itself.
      ASSIGN_OR_RETURN(Fd dir,
                       OpenDirs(root.get(), parts, parts.size(), quoted, bad));
      continue;
    }
    if (parts.empty()) {
      return bad(absl::StrCat("entry ", quoted, " is not a relative path"));
    }
    const int64_t size = archive_entry_size(entry);
    if (size < 0) return bad(absl::StrCat("entry ", quoted, " has a bad size"));
    if (size > max_bytes || bytes > max_bytes - size) {
      return bad("the archive is too large");
    }
    bytes += size;
    ASSIGN_OR_RETURN(
        Fd dir, OpenDirs(root.get(), parts, parts.size() - 1, quoted, bad));
    const Fd out(::openat(dir.get(), parts.back().c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          0644));
    if (out.get() < 0) {
      if (errno == EEXIST) {
        return bad(absl::StrCat("entry ", quoted,
                                " appears twice or names an earlier folder"));
      }
      return absl::InternalError(absl::StrCat("cannot write ",
                                              (fs::path(dest) / name).string(),
                                              ": ", std::strerror(errno)));
    }
    int64_t written = 0;
    while (true) {
      const la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
      if (n == 0) break;
      if (n < 0) {
        return bad(absl::StrCat("entry ", quoted, " runs past the end (",
                                ArchiveError(a.get()), ")"));
      }
      written += n;
      if (written > size) {
        // More data than the header declared (a sparse map, say): the
        // declared size is what the limits were checked against.
        return bad(absl::StrCat("entry ", quoted, " holds more than its size"));
      }
      RETURN_IF_ERROR(WriteAll(out.get(), buf.data(), static_cast<size_t>(n),
                               fs::path(dest) / name));
    }
    if (written != size) {
      return bad(absl::StrCat("entry ", quoted, " runs past the end"));
    }
  }
}

}  // namespace lathe
