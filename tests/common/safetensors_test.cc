#include "common/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/files.h"

namespace lathe {
namespace {

std::string TempPath(const std::string& name) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / "lathe_safetensors")
          .string();
  std::filesystem::create_directories(dir);
  return dir + "/" + name;
}

// A raw file: 8-byte little-endian length, header text, data bytes.
std::string RawFile(const std::string& header, const std::string& data) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

absl::Status ParseStatus(const std::string& contents) {
  return SafetensorsFile::Parse(contents, "t.safetensors").status();
}

void ExpectInvalid(const std::string& contents, const std::string& fragment) {
  const absl::Status s = ParseStatus(contents);
  ASSERT_FALSE(s.ok()) << "expected failure mentioning " << fragment;
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find(fragment), std::string::npos) << s;
  EXPECT_NE(std::string(s.message()).find("t.safetensors"), std::string::npos)
      << s;
}

TEST(SafetensorsTest, RoundTrip) {
  const std::vector<float> w = {1.5f, -2.0f, 3.25f, 4.0f, 5.0f, 6.0f};
  const std::vector<int64_t> ids = {7, -8, 9};
  const std::vector<uint8_t> flags = {1, 0, 1};
  std::vector<TensorView> views = {
      {"weight", "F32", {2, 3}, w.data(), w.size() * 4},
      {"ids", "I64", {3}, ids.data(), ids.size() * 8},
      {"flags", "BOOL", {3}, flags.data(), flags.size()},
      {"empty", "F16", {0, 4}, nullptr, 0},
  };
  const std::string path = TempPath("round_trip.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, views, {{"format", "pt"}}).ok());

  auto raw = ReadFile(path);
  ASSERT_TRUE(raw.ok());
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw->data(), 8);  // Little-endian host.
  EXPECT_EQ(header_len % 8, 0u);
  // Names are sorted in the header, so "empty" comes before "flags".
  const std::string header = raw->substr(8, header_len);
  EXPECT_LT(header.find("\"empty\""), header.find("\"flags\""));

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->tensors().size(), 4u);
  const auto* t = (*file)->Find("weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, "F32");
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(t->nbytes, 24u);
  std::vector<float> back(6);
  std::memcpy(back.data(), t->data, 24);
  EXPECT_EQ(back, w);
  const auto* i = (*file)->Find("ids");
  ASSERT_NE(i, nullptr);
  std::vector<int64_t> ids_back(3);
  std::memcpy(ids_back.data(), i->data, 24);
  EXPECT_EQ(ids_back, ids);
  EXPECT_EQ((*file)->Find("empty")->nbytes, 0u);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
  const float x[2] = {1, 2};
  const std::string path = TempPath("bad_write.safetensors");
  EXPECT_EQ(WriteSafetensors(path, {{"a", "F32", {3}, x, 8}}, {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(path, {{"a", "Q4", {2}, x, 8}}, {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(
                path, {{"a", "F32", {2}, x, 8}, {"a", "F32", {2}, x, 8}}, {})
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, TooShort) { ExpectInvalid("abc", "shorter"); }

TEST(SafetensorsTest, HeaderLengthPastEnd) {
  std::string f = RawFile("{}", "");
  f[0] = 100;
  ExpectInvalid(f, "past the end");
}

TEST(SafetensorsTest, HeaderTooLarge) {
  std::string f(16, '\0');
  const uint64_t n = 200ull * 1000 * 1000;
  std::memcpy(f.data(), &n, 8);
  ExpectInvalid(f, "100 MB");
}

TEST(SafetensorsTest, InvalidJson) {
  ExpectInvalid(RawFile("{\"a\": ", ""), "not valid JSON");
}

TEST(SafetensorsTest, HeaderNotObject) {
  ExpectInvalid(RawFile("[1]", ""), "not a JSON object");
}

TEST(SafetensorsTest, DuplicateNames) {
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
              R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
              "xy"),
      "duplicate tensor name \"a\"");
}

TEST(SafetensorsTest, UnsupportedDtype) {
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", "x"),
      "unsupported dtype F8");
}

TEST(SafetensorsTest, ShapeDoesNotMatchBytes) {
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
              "xxxx"),
      "does not match");
}

TEST(SafetensorsTest, NegativeShape) {
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "x"),
      "non-negative");
}

TEST(SafetensorsTest, OffsetsOutOfBounds) {
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", "xx"),
      "out of bounds");
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[2,1]}})", "xx"),
      "out of bounds");
}

TEST(SafetensorsTest, OverlappingTensors) {
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
              R"("b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
              "xyz"),
      "overlaps");
}

TEST(SafetensorsTest, GapBetweenTensors) {
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
              R"("b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
              "xyz"),
      "gap");
}

TEST(SafetensorsTest, TrailingBytes) {
  ExpectInvalid(
      RawFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "xy"),
      "trailing");
}

TEST(SafetensorsTest, MissingFields) {
  ExpectInvalid(RawFile(R"({"a":{"shape":[1],"data_offsets":[0,1]}})", "x"),
                "dtype");
  ExpectInvalid(RawFile(R"({"a":{"dtype":"U8","data_offsets":[0,1]}})", "x"),
                "shape");
  ExpectInvalid(RawFile(R"({"a":{"dtype":"U8","shape":[1]}})", "x"),
                "data_offsets");
}

TEST(SafetensorsTest, BadMetadata) {
  ExpectInvalid(RawFile(R"({"__metadata__":{"k":1}})", ""), "__metadata__");
}

TEST(SafetensorsTest, MissingFileIsAnError) {
  const auto file = SafetensorsFile::Open(TempPath("does_not_exist"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

// Open() maps the file; a malformed file on disk fails the same checks as
// Parse() and names the path.
TEST(SafetensorsTest, OpenValidatesMappedFile) {
  const std::string path = TempPath("mapped_bad.safetensors");
  ASSERT_TRUE(
      WriteFileAtomic(path, RawFile(R"({"a":{"dtype":"F32","shape":[2],)"
                                    R"("data_offsets":[0,8]}})",
                                    "1234"))
          .ok());
  const auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(file.status().message().find(path), std::string::npos)
      << file.status();
  EXPECT_NE(file.status().message().find("out of bounds"), std::string::npos)
      << file.status();

  const std::string empty = TempPath("mapped_empty.safetensors");
  ASSERT_TRUE(WriteFileAtomic(empty, "").ok());
  const auto e = SafetensorsFile::Open(empty);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("shorter"), std::string::npos);
}

// A fresh, empty directory for one test.
std::string TempDir(const std::string& name) {
  const std::string dir = TempPath(name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteF32(const std::string& path, const std::vector<std::string>& names) {
  static const std::vector<float> data = {1, 2, 3, 4};
  std::vector<TensorView> views;
  for (const std::string& n : names) {
    views.push_back({n, "F32", {2, 2}, data.data(), 16});
  }
  ASSERT_TRUE(WriteSafetensors(path, views, {{"format", "pt"}}).ok());
}

void WriteIndex(const std::string& dir, const std::string& weight_map) {
  ASSERT_TRUE(WriteFileAtomic(dir + "/model.safetensors.index.json",
                              R"({"metadata":{"total_size":48},)"
                              R"("weight_map":)" +
                                  weight_map + "}")
                  .ok());
}

void ExpectIndexError(const std::string& dir, const std::string& fragment) {
  const auto model = OpenSafetensorsModel(dir);
  ASSERT_FALSE(model.ok()) << "expected failure mentioning " << fragment;
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(model.status().message());
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
}

TEST(SafetensorsModelTest, SingleFile) {
  const std::string dir = TempDir("model_single");
  WriteF32(dir + "/model.safetensors", {"a", "b"});
  const auto model = OpenSafetensorsModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->tensors().size(), 2u);
  ASSERT_NE((*model)->Find("b"), nullptr);
  EXPECT_EQ((*model)->Find("b")->tensor->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ((*model)->Find("zzz"), nullptr);
}

TEST(SafetensorsModelTest, Sharded) {
  const std::string dir = TempDir("model_sharded");
  WriteF32(dir + "/model-00001-of-00002.safetensors", {"a", "b"});
  WriteF32(dir + "/model-00002-of-00002.safetensors", {"c"});
  WriteIndex(dir, R"({"a":"model-00001-of-00002.safetensors",)"
                  R"("b":"model-00001-of-00002.safetensors",)"
                  R"("c":"model-00002-of-00002.safetensors"})");
  const auto model = OpenSafetensorsModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->tensors().size(), 3u);
  const auto* c = (*model)->Find("c");
  ASSERT_NE(c, nullptr);
  EXPECT_NE(c->file.find("model-00002-of-00002"), std::string::npos);
  std::vector<float> back(4);
  std::memcpy(back.data(), c->tensor->data, 16);
  EXPECT_EQ(back, (std::vector<float>{1, 2, 3, 4}));
}

TEST(SafetensorsModelTest, IndexNamesMissingShard) {
  const std::string dir = TempDir("model_missing_shard");
  WriteF32(dir + "/s1.safetensors", {"a"});
  WriteIndex(dir, R"({"a":"s1.safetensors","b":"s2.safetensors"})");
  ExpectIndexError(dir, "s2.safetensors");
}

TEST(SafetensorsModelTest, IndexListsTensorAbsentFromShard) {
  const std::string dir = TempDir("model_absent_tensor");
  WriteF32(dir + "/s1.safetensors", {"a"});
  WriteIndex(dir, R"({"a":"s1.safetensors","ghost":"s1.safetensors"})");
  ExpectIndexError(dir, "\"ghost\"");
}

TEST(SafetensorsModelTest, TensorInTwoShards) {
  const std::string dir = TempDir("model_two_shards");
  WriteF32(dir + "/s1.safetensors", {"a", "b"});
  WriteF32(dir + "/s2.safetensors", {"b"});
  WriteIndex(dir, R"({"a":"s1.safetensors","b":"s2.safetensors"})");
  ExpectIndexError(dir, "two shards");
}

TEST(SafetensorsModelTest, ShardOutsideDirectory) {
  const std::string dir = TempDir("model_escape");
  WriteIndex(dir, R"({"a":"../elsewhere.safetensors"})");
  ExpectIndexError(dir, "plain file name");
}

TEST(SafetensorsModelTest, IndexNotJson) {
  const std::string dir = TempDir("model_bad_index");
  ASSERT_TRUE(
      WriteFileAtomic(dir + "/model.safetensors.index.json", "{nope").ok());
  ExpectIndexError(dir, "not valid JSON");
  WriteIndex(dir, "[]");
  ExpectIndexError(dir, "weight_map");
}

TEST(SafetensorsModelTest, MalformedShardNamesIndexAndShard) {
  const std::string dir = TempDir("model_bad_shard");
  ASSERT_TRUE(WriteFileAtomic(dir + "/s1.safetensors", "abc").ok());
  WriteIndex(dir, R"({"a":"s1.safetensors"})");
  ExpectIndexError(dir, "s1.safetensors");
}

TEST(SafetensorsModelTest, PickleRefusedWithConvertMessage) {
  for (const std::string name : {"pytorch_model.bin", "weights.pt", "model.pth",
                                 "last.ckpt", "state.pkl"}) {
    const std::string dir = TempDir("model_pickle");
    ASSERT_TRUE(WriteFileAtomic(dir + "/" + name, "\x80\x02}q\x00.").ok());
    EXPECT_EQ(CheckNoPickleWeights(dir).code(),
              absl::StatusCode::kInvalidArgument);
    const auto model = OpenSafetensorsModel(dir);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string msg(model.status().message());
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find("convert"), std::string::npos) << msg;
    EXPECT_NE(msg.find("safetensors"), std::string::npos) << msg;
  }
}

TEST(SafetensorsModelTest, SafetensorsPreferredOverPickle) {
  const std::string dir = TempDir("model_both");
  WriteF32(dir + "/model.safetensors", {"a"});
  ASSERT_TRUE(WriteFileAtomic(dir + "/pytorch_model.bin", "x").ok());
  EXPECT_TRUE(OpenSafetensorsModel(dir).ok());
}

TEST(SafetensorsModelTest, NoWeightsIsNotFound) {
  const std::string dir = TempDir("model_empty");
  EXPECT_TRUE(CheckNoPickleWeights(dir).ok());
  EXPECT_EQ(OpenSafetensorsModel(dir).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace lathe
