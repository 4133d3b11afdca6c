// TempDir: a fresh directory under $TMPDIR (or /tmp), removed with its
// contents when the object goes away. Not a fake: tests use real files.
#ifndef LATHE_TESTS_SUPPORT_TEMP_DIR_H_
#define LATHE_TESTS_SUPPORT_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <string>

namespace lathe {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ =
        std::string(base ? base : "/tmp") + "/lathe-test-XXXXXX";
    char* made = ::mkdtemp(templ.data());
    path_ = made ? made : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace lathe

#endif  // LATHE_TESTS_SUPPORT_TEMP_DIR_H_
