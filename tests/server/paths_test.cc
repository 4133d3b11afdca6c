// No client-named path leaves its directory: local paths resolve only
// inside the allowed roots (symlinks followed before the check), and the
// relative paths of pushed model files and reported checkpoint files are
// clean. Each hostile form is tried: "..", absolute paths, symlinks out of a
// root, NUL and other control characters, and overlong names. Real files in
// a temporary directory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "server/core/allowed_roots.h"
#include "server/core/models.h"
#include "tests/support/temp_dir.h"

namespace lathe::server {
namespace {

class PathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/root";
    outside_ = dir_.path() + "/outside";
    std::filesystem::create_directories(root_ + "/data");
    std::filesystem::create_directories(outside_);
    std::ofstream(root_ + "/data/train.jsonl") << "{}\n";
    std::ofstream(outside_ + "/secret.jsonl") << "{}\n";
    // A link inside the root to a directory outside it, and to a file.
    std::filesystem::create_directory_symlink(outside_, root_ + "/escape");
    std::filesystem::create_symlink(outside_ + "/secret.jsonl",
                                    root_ + "/data/link.jsonl");
    roots_ = *AllowedRoots::Create({root_});
  }

  absl::StatusCode Resolve(const std::string& value) {
    return roots_.Resolve("spec.train_data", value).status().code();
  }

  TempDir dir_;
  std::string root_, outside_;
  AllowedRoots roots_;
};

TEST_F(PathsTest, APathInsideARootResolves) {
  auto p = roots_.Resolve("spec.train_data", root_ + "/data/train.jsonl");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, std::filesystem::canonical(root_ + "/data/train.jsonl"));
  EXPECT_TRUE(
      roots_.Resolve("f", "file://" + root_ + "/data/../data/train.jsonl")
          .ok());
}

TEST_F(PathsTest, EveryWayOutOfTheRootIsRefused) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(Resolve(root_ + "/../outside/secret.jsonl"), kInvalid);
  EXPECT_EQ(Resolve("file://" + root_ + "/data/../../outside/secret.jsonl"),
            kInvalid);
  EXPECT_EQ(Resolve(outside_ + "/secret.jsonl"), kInvalid);
  EXPECT_EQ(Resolve("/etc/passwd"), kInvalid);
  EXPECT_EQ(Resolve("data/train.jsonl"), kInvalid);  // relative
  EXPECT_EQ(Resolve(""), kInvalid);
  // Symlinks inside the root that lead out of it.
  EXPECT_EQ(Resolve(root_ + "/escape/secret.jsonl"), kInvalid);
  EXPECT_EQ(Resolve(root_ + "/data/link.jsonl"), kInvalid);
  // A NUL would cut the path where the system reads it.
  EXPECT_EQ(Resolve(root_ + "/data/train.jsonl" + std::string(1, '\0') +
                    "/../../../outside/secret.jsonl"),
            kInvalid);
  EXPECT_EQ(Resolve(root_ + "/data/\ntrain.jsonl"), kInvalid);
  // Overlong, and a long chain of "..".
  EXPECT_EQ(Resolve(root_ + "/" + std::string(5000, 'a')), kInvalid);
  std::string up = root_ + "/data";
  for (int i = 0; i < 100; ++i) up += "/..";
  EXPECT_EQ(Resolve(up + outside_ + "/secret.jsonl"), kInvalid);
}

TEST_F(PathsTest, NoRootsMeansNoLocalPaths) {
  AllowedRoots none;
  EXPECT_EQ(
      none.Resolve("spec.model", root_ + "/data/train.jsonl").status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ModelPathTest, OnlyCleanRelativePathsAreStored) {
  for (const std::string bad :
       {std::string("../config.json"), std::string("/etc/passwd"),
        std::string("a/../../b"), std::string("./config.json"),
        std::string("a//b"), std::string("a/"), std::string(""),
        std::string("a\\..\\b"), std::string("con\0fig.json", 11),
        std::string("a\nb"), std::string(600, 'x')}) {
    EXPECT_EQ(CheckModelPath(bad, "file.path").code(),
              absl::StatusCode::kInvalidArgument)
        << "accepted: " << bad;
  }
  for (const std::string good :
       {"config.json", "tokenizer/vocab.txt", "a.b-c_d/e", "..hidden"}) {
    EXPECT_TRUE(CheckModelPath(good, "file.path").ok()) << good;
  }
}

}  // namespace
}  // namespace lathe::server
