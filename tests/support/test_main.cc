// The main of Lathe's C++ tests: each test process gets a temporary folder
// of its own as TEST_TMPDIR (which ::testing::TempDir() returns), so tests
// of one binary that CTest runs side by side never share scratch files. The
// folder is removed when the tests end.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const char* base = ::getenv("TMPDIR");
  const std::string pattern =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
      "/lathe-test-XXXXXX";
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  const char* dir = ::mkdtemp(name.data());
  if (dir != nullptr) ::setenv("TEST_TMPDIR", dir, 1);
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  if (dir != nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return rc;
}
