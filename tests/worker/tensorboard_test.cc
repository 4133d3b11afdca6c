// The TensorBoard event file's framing and its continuation after a resume.
// tests/python/test_tensorboard.py reads a real job's file back with an
// independent reader (python3-crc32c and protobuf).
#include "worker/train/tensorboard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace lathe {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The records' data, checking both CRCs of each.
std::vector<std::string> Records(const std::string& bytes) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < bytes.size()) {
    EXPECT_LE(pos + 12, bytes.size());
    uint64_t len;
    uint32_t len_crc, data_crc;
    std::memcpy(&len, bytes.data() + pos, 8);
    std::memcpy(&len_crc, bytes.data() + pos + 8, 4);
    EXPECT_EQ(len_crc, MaskedCrc32c(bytes.data() + pos, 8));
    EXPECT_LE(pos + 16 + len, bytes.size());
    std::string data = bytes.substr(pos + 12, len);
    std::memcpy(&data_crc, bytes.data() + pos + 12 + len, 4);
    EXPECT_EQ(data_crc, MaskedCrc32c(data.data(), data.size()));
    out.push_back(data);
    pos += 16 + len;
  }
  return out;
}

TEST(TensorBoardTest, Crc32cMatchesTheCastagnoliCheckValue) {
  // The standard check input and value of CRC-32C (RFC 3720, iSCSI).
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  const uint32_t c = Crc32c("abc", 3);
  EXPECT_EQ(MaskedCrc32c("abc", 3), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(TensorBoardTest, ARecordIsLengthCrcDataCrc) {
  const std::string r = FrameRecord("hello");
  ASSERT_EQ(r.size(), 8u + 4 + 5 + 4);
  EXPECT_EQ(r[0], 5);
  EXPECT_EQ(r.substr(12, 5), "hello");
  EXPECT_EQ(Records(r), std::vector<std::string>{"hello"});
}

TEST(TensorBoardTest, AResumedRunContinuesTheCheckpointsCopy) {
  TempDir dir;
  const std::string root = dir.path();
  std::string name, first;
  {
    auto log = EventLog::Open(root + "/a", "");
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE(log->AddScalar("train/loss", 1, 0.5).ok());
    ASSERT_TRUE(log->AddEvent({{"type", "eval"},
                               {"step", 2},
                               {"metrics", {{"accuracy", 0.75}}}})
                    .ok());
    ASSERT_TRUE(log->CopyInto(root + "/a/checkpoint-2").ok());
    // Recorded after the checkpoint: not part of a run resumed from it.
    ASSERT_TRUE(log->AddScalar("train/loss", 3, 0.25).ok());
    name = std::filesystem::path(log->path()).filename().string();
    first = Slurp(root + "/a/checkpoint-2/runs/" + name);
  }
  EXPECT_NE(name.find("tfevents"), std::string::npos);
  EXPECT_EQ(Records(first).size(), 3u);  // version, loss, accuracy
  auto resumed = EventLog::Open(root + "/b", root + "/a/checkpoint-2");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(std::filesystem::path(resumed->path()).filename().string(), name);
  ASSERT_TRUE(resumed->AddScalar("train/loss", 3, 0.3).ok());
  const std::string after = Slurp(resumed->path());
  ASSERT_GT(after.size(), first.size());
  EXPECT_EQ(after.substr(0, first.size()), first);
  const auto records = Records(after);
  ASSERT_EQ(records.size(), 4u);
  EXPECT_NE(records[0].find("brain.Event:2"), std::string::npos);
  EXPECT_NE(records[2].find("eval/accuracy"), std::string::npos);
  EXPECT_NE(records[3].find("train/loss"), std::string::npos);
}

}  // namespace
}  // namespace lathe
