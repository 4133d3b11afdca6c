#include "common/tar.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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

// A ustar header for `name` with a valid checksum.
std::string Header(const std::string& name, char type, size_t size = 0,
                   const std::string& link = "") {
  std::string header(512, '\0');
  header.replace(0, name.size(), name);
  header.replace(100, 7, "0000644");
  char field[13];
  std::snprintf(field, sizeof(field), "%011zo", size);
  header.replace(124, 11, field);
  header[156] = type;
  header.replace(157, link.size(), link);
  header.replace(257, 5, "ustar");
  header.replace(263, 2, "00");
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(header[i]);
  }
  std::snprintf(field, sizeof(field), "%06o", sum);
  header.replace(148, 6, field);
  header[154] = '\0';
  header[155] = ' ';
  return header;
}

// One entry: its header, then `data` padded to whole blocks.
std::string Entry(const std::string& name, char type,
                  const std::string& data = "", const std::string& link = "") {
  return Header(name, type, data.size(), link) + data +
         std::string((512 - data.size() % 512) % 512, '\0');
}

// A pax extended header ('x') carrying `records` ("key=value" each) for the
// entry that follows.
std::string Pax(const std::vector<std::string>& records) {
  std::string body;
  for (const std::string& kv : records) {
    // "LEN key=value\n", where LEN counts itself.
    size_t len = kv.size() + 3;
    while (std::to_string(len).size() + kv.size() + 2 != len) ++len;
    body += std::to_string(len) + " " + kv + "\n";
  }
  return Entry("PaxHeaders/entry", 'x', body);
}

const std::string kEnd(1024, '\0');

// A one-entry archive named `name` with a valid checksum.
std::string ArchiveWithEntry(const std::string& name, char type) {
  return Entry(name, type) + kEnd;
}

// Writes `bytes` to DIR/NAME.tar and extracts it to DIR/NAME.out.
absl::Status Extract(const std::string& dir, const std::string& name,
                     const std::string& bytes, int64_t max_files = 1000,
                     int64_t max_bytes = 1 << 20) {
  const std::string tar = dir + "/" + name + ".tar";
  std::ofstream(tar, std::ios::binary) << bytes;
  return ExtractTar(tar, dir + "/" + name + ".out", max_files, max_bytes);
}

// Expects INVALID_ARGUMENT with `want` in the message.
void ExpectRefused(const absl::Status& s, const std::string& want) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find(want), std::string::npos)
      << s.message();
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

TEST(TarTest, PaxAndGnuStyleArchivesAreRead) {
  const std::string dir = Fresh("pax");
  // A pax name past the 255 bytes of ustar, and a UTF-8 one.
  const std::string long_name =
      std::string(150, 'd') + "/" + std::string(150, 'e') + "/f.txt";
  const std::string utf8 = "caf\xc3\xa9/\xe2\x82\xac.txt";
  ASSERT_TRUE(Extract(dir, "a",
                      Pax({"path=" + long_name}) + Entry("short", '0', "pax") +
                          Pax({"path=" + utf8}) + Entry("x", '0', "euro") +
                          kEnd)
                  .ok());
  EXPECT_EQ(*ReadFile(dir + "/a.out/" + long_name), "pax");
  EXPECT_EQ(*ReadFile(dir + "/a.out/" + utf8), "euro");
  EXPECT_FALSE(fs::exists(dir + "/a.out/short"));
  // As `tar -C DIR .` writes it: "./", folders ending in "/", no end marker.
  ASSERT_TRUE(Extract(dir, "b",
                      Entry("./", '5') + Entry("./cat/", '5') +
                          Entry("./cat/a.png", '0', "meow") +
                          Entry("./dog/", '5'))
                  .ok());
  EXPECT_EQ(*ReadFile(dir + "/b.out/cat/a.png"), "meow");
  EXPECT_TRUE(fs::is_directory(dir + "/b.out/dog"));
}

TEST(TarTest, LinksSpecialFilesAndBadNamesWriteNothing) {
  const std::string dir = Fresh("kinds");
  struct Case {
    std::string name;
    std::string bytes;
    std::string want;
  };
  const std::string ok = Entry("ok.txt", '0', "fine");
  for (const Case& c : {
           Case{"hard", ok + Entry("hard", '1', "", "ok.txt") + kEnd,
                "\"hard\" is not a regular file"},
           Case{"hard_out", ok + Entry("h", '1', "", "../../etc/passwd") + kEnd,
                "\"h\" is not a regular file"},
           Case{"sym", ok + Entry("sym", '2', "", "/etc") + kEnd,
                "\"sym\" is not a regular file"},
           Case{"chr", ok + Entry("tty", '3') + kEnd, "not a regular file"},
           Case{"fifo", ok + Entry("fifo", '6') + kEnd, "not a regular file"},
           Case{"empty_part", ok + Entry("a//b.txt", '0', "x") + kEnd,
                "empty component"},
           Case{"dotdot_dir", ok + Entry("a/../../b/", '5') + kEnd,
                "leaves the folder"},
           Case{"pax_dotdot",
                ok + Pax({"path=../evil.txt"}) + Entry("safe.txt", '0', "x") +
                    kEnd,
                "\"../evil.txt\" leaves the folder"},
           Case{"pax_abs",
                ok + Pax({"path=/tmp/evil.txt"}) + Entry("safe.txt", '0', "x") +
                    kEnd,
                "not a relative path"},
           Case{"twice", ok + Entry("ok.txt", '0', "again") + kEnd,
                "appears twice"},
           Case{"under_file", ok + Entry("ok.txt/x", '0', "x") + kEnd,
                "earlier entry that is a file"},
       }) {
    const absl::Status s = Extract(dir, c.name, c.bytes);
    ExpectRefused(s, c.want);
    // The entry before was written; the refused one left nothing behind.
    EXPECT_EQ(*ReadFile(dir + "/" + c.name + ".out/ok.txt"), "fine") << c.name;
    size_t count = 0;
    for (auto it =
             fs::recursive_directory_iterator(dir + "/" + c.name + ".out");
         it != fs::recursive_directory_iterator(); ++it) {
      EXPECT_FALSE(it->is_symlink()) << it->path();
      ++count;
    }
    EXPECT_EQ(count, 1u) << c.name;
  }
  EXPECT_FALSE(fs::exists(dir + "/evil.txt"));
}

TEST(TarTest, ALinkAlreadyInTheDestinationIsNotFollowed) {
  const std::string dir = Fresh("prelink");
  fs::create_directories(dir + "/outside");
  fs::create_directories(dir + "/x.out");
  fs::create_directory_symlink(dir + "/outside", dir + "/x.out/sub");
  ExpectRefused(Extract(dir, "x", Entry("sub/f.txt", '0', "x") + kEnd),
                "earlier entry that is a file");
  EXPECT_TRUE(fs::is_empty(dir + "/outside"));
}

TEST(TarTest, LimitsAndDamageAreRefused) {
  const std::string dir = Fresh("limits");
  const std::string three =
      Entry("a", '0', "1") + Entry("b", '0', "2") + Entry("c/", '5') + kEnd;
  EXPECT_TRUE(Extract(dir, "fits", three, 3).ok());
  ExpectRefused(Extract(dir, "files", three, 2), "too many files");
  ExpectRefused(
      Extract(dir, "bytes", Entry("big", '0', std::string(2000, 'x')) + kEnd,
              10, 1000),
      "too large");
  // A header that claims more than the archive holds.
  ExpectRefused(Extract(dir, "short_data",
                        Header("cut", '0', 5000) + std::string(512, 'x')),
                "\"cut\" runs past the end");
  // A damaged second header.
  std::string second = Entry("b", '0', "2");
  second[0] = 'X';
  ExpectRefused(Extract(dir, "sum2", Entry("a", '0', "1") + second + kEnd),
                "checksum");
  ExpectRefused(
      Extract(dir, "cut_header", Entry("a", '0', "1") + std::string(300, 'x')),
      "after entry \"a\"");
  // Compressed archives are not read.
  std::string gz = "\x1f\x8b\x08";
  gz += std::string(1021, '\0');
  ExpectRefused(Extract(dir, "gz", gz), "not a tar archive");
  EXPECT_EQ(ExtractTar(dir + "/missing.tar", dir + "/m.out").code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lathe
