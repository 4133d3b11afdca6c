#include "common/files.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace lathe {
namespace {

std::string TempDir(const std::string& name) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / ("lathe_files_" + name))
          .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(Sha256Test, KnownDigest) {
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 incremental;
  incremental.Update("a");
  incremental.Update("bc");
  EXPECT_EQ(incremental.Hex(), Sha256Hex("abc"));
}

TEST(Sha256Test, FileMatchesString) {
  const std::string dir = TempDir("sha");
  ASSERT_TRUE(WriteFileAtomic(dir + "/f", "abc").ok());
  auto digest = Sha256File(dir + "/f");
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, Sha256Hex("abc"));
}

TEST(FilesTest, ReadFileReturnsTheBytesAndErrorsForADirectory) {
  const std::string dir = TempDir("read");
  const std::string bytes("a\0b\n", 4);
  ASSERT_TRUE(WriteFileAtomic(dir + "/f", bytes).ok());
  auto read = ReadFile(dir + "/f");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, bytes);
  EXPECT_TRUE(absl::IsNotFound(ReadFile(dir + "/missing").status()));
  // A directory opens, then fails to read: an error, not an exception.
  auto directory = ReadFile(dir);
  ASSERT_FALSE(directory.ok());
  EXPECT_NE(directory.status().message().find("Is a directory"),
            std::string::npos)
      << directory.status();
}

TEST(FilesTest, AtomicWriteReplacesAndLeavesNoTemporaries) {
  const std::string dir = TempDir("atomic");
  const std::string path = dir + "/out.txt";
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "second").ok());
  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "second");
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  auto size = FileSize(path);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 6);
}

TEST(FilesTest, ReadMissingFileFails) {
  auto text = ReadFile(TempDir("missing") + "/nope");
  EXPECT_FALSE(text.ok());
  EXPECT_FALSE(PathExists(TempDir("missing") + "/nope"));
}

TEST(FilesTest, MakeDirsCreatesNestedDirectories) {
  const std::string dir = TempDir("mkdirs") + "/a/b/c";
  ASSERT_TRUE(MakeDirs(dir).ok());
  EXPECT_TRUE(std::filesystem::is_directory(dir));
  EXPECT_TRUE(MakeDirs(dir).ok());  // Idempotent.
}

TEST(FilesTest, PathWithin) {
  EXPECT_TRUE(PathWithin("/data/root/a/b", "/data/root"));
  EXPECT_TRUE(PathWithin("/data/root", "/data/root/"));
  EXPECT_TRUE(PathWithin("/data/root/x/../y", "/data/root"));
  EXPECT_FALSE(PathWithin("/data/root/../other", "/data/root"));
  EXPECT_FALSE(PathWithin("/data/rootless/a", "/data/root"));
  EXPECT_FALSE(PathWithin("/etc/passwd", "/data/root"));
}

TEST(FilesTest, CanonicalPathResolvesDots) {
  EXPECT_EQ(CanonicalPath("/nonexistent-lathe/a/./b/../c"),
            "/nonexistent-lathe/a/c");
}

}  // namespace
}  // namespace lathe
