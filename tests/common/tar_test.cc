#include "common/tar.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/files.h"

namespace lathe {
namespace {

namespace fs = std::filesystem;

std::string Fresh(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("tar_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

TEST(TarTest, FolderRoundTripsThroughAnArchive) {
  const std::string dir = Fresh("src");
  fs::create_directories(dir + "/cat");
  fs::create_directories(dir + "/dog/deeper");
  std::ofstream(dir + "/cat/a.png") << "cat bytes";
  std::ofstream(dir + "/dog/deeper/b.jpg") << std::string(1500, 'x');
  std::ofstream(dir + "/empty.txt");
  const std::string long_dir = dir + "/" + std::string(120, 'd');
  fs::create_directories(long_dir);
  std::ofstream(long_dir + "/" + std::string(90, 'f')) << "long name";
  const std::string tar = Fresh("out") + "/data.tar";
  ASSERT_TRUE(WriteTar(dir, tar).ok());
  EXPECT_EQ(fs::file_size(tar) % 512, 0u);
  const std::string dest = Fresh("dest");
  ASSERT_TRUE(ExtractTar(tar, dest).ok());
  EXPECT_EQ(*ReadFile(dest + "/cat/a.png"), "cat bytes");
  EXPECT_EQ(*ReadFile(dest + "/dog/deeper/b.jpg"), std::string(1500, 'x'));
  EXPECT_EQ(*ReadFile(dest + "/empty.txt"), "");
  EXPECT_EQ(*ReadFile(dest + "/" + std::string(120, 'd') + "/" +
                      std::string(90, 'f')),
            "long name");
}

// A one-entry archive named `name` with a valid checksum.
std::string ArchiveWithEntry(const std::string& name, char type) {
  std::string header(512, '\0');
  header.replace(0, name.size(), name);
  header.replace(100, 7, "0000644");
  header.replace(124, 11, "00000000000");
  header[156] = type;
  header.replace(257, 5, "ustar");
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(header[i]);
  }
  char field[8];
  std::snprintf(field, sizeof(field), "%06o", sum);
  header.replace(148, 6, field);
  header[154] = '\0';
  header[155] = ' ';
  return header + std::string(1024, '\0');
}

TEST(TarTest, HostileArchivesAreRefusedNamingTheEntry) {
  const std::string dir = Fresh("hostile");
  struct Case {
    std::string name;
    char type;
    std::string want;
  };
  for (const Case& c : {Case{"../escape.txt", '0', "leaves the folder"},
                        Case{"/etc/passwd", '0', "not a relative path"},
                        Case{"link", '2', "not a regular file"}}) {
    const std::string tar = dir + "/bad.tar";
    std::ofstream(tar, std::ios::binary) << ArchiveWithEntry(c.name, c.type);
    const absl::Status s = ExtractTar(tar, dir + "/out");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(std::string(s.message()).find(c.want), std::string::npos)
        << s.message();
  }
  // A damaged header and an archive cut short.
  std::string good = ArchiveWithEntry("ok.txt", '0');
  good[0] = 'X';
  std::ofstream(dir + "/sum.tar", std::ios::binary) << good;
  EXPECT_NE(std::string(ExtractTar(dir + "/sum.tar", dir + "/o2").message())
                .find("checksum"),
            std::string::npos);
  std::ofstream(dir + "/short.tar", std::ios::binary) << std::string(100, 'a');
  EXPECT_EQ(ExtractTar(dir + "/short.tar", dir + "/o3").code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lathe
