// Folder datasets (an image folder with one sub-folder per class) travel
// through the service as one file: a POSIX ustar archive of the folder's
// regular files. Only regular files and directories with relative, clean
// names are read back. No LibTorch.
#ifndef LATHE_COMMON_TAR_H_
#define LATHE_COMMON_TAR_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace lathe {

// Writes every regular file under `dir` (recursively, sorted by path;
// symbolic links and other special files are skipped) to the archive
// `tar_path`. Names longer than 255 bytes (the ustar limit) are
// INVALID_ARGUMENT naming the file.
absl::Status WriteTar(const std::string& dir, const std::string& tar_path);

// Extracts `tar_path` into `dest` (created). The archive is parsed by
// libarchive (tar formats only: ustar, pax, GNU, v7; no compression); the
// files are written by Lathe, never by libarchive, after each entry is
// checked. Refuses, with INVALID_ARGUMENT naming the archive and entry:
// absolute or empty names, ".." or empty components ("." ones are
// dropped), symbolic and hard links, devices and FIFOs, a name given twice
// or under a file, a bad header checksum, data past the end, more than
// `max_files` entries (folders included) or more than `max_bytes` of file
// data in total. Creates files with O_EXCL|O_NOFOLLOW and follows no link
// on the way to them, so an existing `dest` with links in it is not a way
// out. An error may leave part of the archive in `dest`.
absl::Status ExtractTar(const std::string& tar_path, const std::string& dest,
                        int64_t max_files = 1000000,
                        int64_t max_bytes = int64_t{64} << 30);

}  // namespace lathe

#endif  // LATHE_COMMON_TAR_H_
