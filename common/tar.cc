#include "common/tar.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

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

bool ParseOctal(const char* field, size_t width, uint64_t* out) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  bool any = false;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i) {
    if (v > (UINT64_MAX >> 3)) return false;
    v = (v << 3) | static_cast<uint64_t>(field[i] - '0');
    any = true;
  }
  for (; i < width; ++i) {
    if (field[i] != ' ' && field[i] != '\0') return false;
  }
  *out = v;
  return any;
}

uint64_t Checksum(const char* header) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    // The checksum field itself counts as spaces.
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(header[i]);
  }
  return sum;
}

std::string Field(const char* field, size_t width) {
  return std::string(field, strnlen(field, width));
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
  std::ifstream in(tar_path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", tar_path));
  }
  std::error_code ec;
  fs::create_directories(dest, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", dest));
  }
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(tar_path, ": ", what));
  };
  int64_t files = 0, bytes = 0;
  std::vector<char> buf(1 << 20);
  while (true) {
    char header[kBlock];
    if (!in.read(header, kBlock)) return bad("truncated archive");
    if (std::all_of(header, header + kBlock, [](char c) { return c == 0; })) {
      return absl::OkStatus();  // End of archive.
    }
    uint64_t sum = 0, size = 0;
    if (!ParseOctal(header + 148, 8, &sum) || sum != Checksum(header)) {
      return bad("bad header checksum");
    }
    if (!ParseOctal(header + 124, 12, &size)) return bad("bad entry size");
    std::string name = Field(header, 100);
    const std::string prefix = Field(header + 345, 155);
    if (!prefix.empty()) name = prefix + "/" + name;
    const char type = header[156];
    if (name.empty() || name[0] == '/') {
      return bad(absl::StrCat("entry \"", name, "\" is not a relative path"));
    }
    for (absl::string_view part : absl::StrSplit(name, '/')) {
      if (part == "..") {
        return bad(absl::StrCat("entry \"", name, "\" leaves the folder"));
      }
    }
    if (type == '5') {
      fs::create_directories(fs::path(dest) / name, ec);
      continue;
    }
    if (type != '0' && type != '\0') {
      return bad(
          absl::StrCat("entry \"", name, "\" is not a regular file or folder"));
    }
    if (++files > max_files) return bad("too many files");
    bytes += static_cast<int64_t>(size);
    if (size > static_cast<uint64_t>(max_bytes) || bytes > max_bytes) {
      return bad("the archive is too large");
    }
    const fs::path path = fs::path(dest) / name;
    fs::create_directories(path.parent_path(), ec);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out)
      return absl::InternalError(absl::StrCat("cannot write ", path.string()));
    uint64_t left = size;
    while (left > 0) {
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(buf.size(), left));
      if (!in.read(buf.data(), static_cast<std::streamsize>(n))) {
        return bad(absl::StrCat("entry \"", name, "\" runs past the end"));
      }
      out.write(buf.data(), static_cast<std::streamsize>(n));
      left -= n;
    }
    const size_t pad = (kBlock - size % kBlock) % kBlock;
    if (pad > 0 && !in.read(buf.data(), static_cast<std::streamsize>(pad))) {
      return bad("truncated archive");
    }
  }
}

}  // namespace lathe
