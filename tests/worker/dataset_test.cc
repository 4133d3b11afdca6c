#include "worker/data/dataset.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace lathe {
namespace {

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "lathe_dataset";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / name).string();
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

void ExpectError(const std::string& name, const std::string& contents,
                 const std::string& expected_prefix) {
  auto rows = ReadExamples(WriteTemp(name, contents), name);
  ASSERT_FALSE(rows.ok()) << "expected: " << expected_prefix;
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(rows.status().message()).rfind(expected_prefix, 0), 0u)
      << rows.status();
}

TEST(DatasetTest, ReadsJsonl) {
  auto rows = ReadExamples(
      WriteTemp("a.jsonl",
                "{\"text\": \"good film\", \"label\": \"pos\"}\n"
                "\n"
                "{\"text\": \"q\", \"text_pair\": \"a\", \"label\": 3}\n"
                "{\"text\": \"r\", \"text_pair\": null, \"label\": \"neg\"}"),
      "train.jsonl");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].text, "good film");
  EXPECT_EQ((*rows)[0].label, "pos");
  EXPECT_FALSE((*rows)[0].text_pair.has_value());
  EXPECT_EQ((*rows)[1].text_pair.value(), "a");
  EXPECT_EQ((*rows)[1].label, "3");
  EXPECT_EQ((*rows)[1].line, 3);
  EXPECT_FALSE((*rows)[2].text_pair.has_value());
}

TEST(DatasetTest, ReadsCsvWithQuoting) {
  auto rows = ReadExamples(WriteTemp("b.csv",
                                     "id,text,label\r\n"
                                     "1,\"hello, \"\"world\"\"\",pos\r\n"
                                     "\r\n"
                                     "2,\"two\nlines\",neg\n"
                                     "3,plain,neg\n"),
                           "train.csv");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].text, "hello, \"world\"");
  EXPECT_EQ((*rows)[1].text, "two\nlines");
  EXPECT_EQ((*rows)[1].line, 4);
  EXPECT_EQ((*rows)[2].line, 6);
  EXPECT_EQ((*rows)[2].label, "neg");
}

TEST(DatasetTest, ReadsTsvWithPair) {
  auto rows = ReadExamples(
      WriteTemp("c.tsv", "text\ttext_pair\tlabel\nq\ta\t1\n"), "train.tsv");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].text_pair.value(), "a");
  EXPECT_EQ((*rows)[0].label, "1");
}

TEST(DatasetTest, ErrorsNameFileAndLine) {
  ExpectError("train.jsonl",
              "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\"}\n",
              "train.jsonl:2: missing field \"label\"");
  ExpectError("train.jsonl", "\n\n{\"text\": \"a\", \n",
              "train.jsonl:3: invalid JSON: ");
  ExpectError("train.jsonl", "{\"label\": \"x\"}\n",
              "train.jsonl:1: missing field \"text\"");
  ExpectError("train.jsonl", "{\"text\": 5, \"label\": \"x\"}\n",
              "train.jsonl:1: field \"text\" is not a string");
  ExpectError("train.jsonl", "{\"text\": \"a\", \"label\": 1.5}\n",
              "train.jsonl:1: field \"label\" must be a string or an integer");
  ExpectError("train.jsonl", "[1, 2]\n",
              "train.jsonl:1: expected a JSON object");
  ExpectError("train.csv", "text,label\na,b,c\n",
              "train.csv:2: expected 2 fields");
  ExpectError("train.csv", "text,label\n\"a,b\n", "train.csv:2: unterminated");
  ExpectError("train.csv", "body,label\na,b\n",
              "train.csv:1: header has no \"text\"");
  ExpectError("train.jsonl", "\n  \n", "train.jsonl: no rows");
}

TEST(DatasetTest, LabelSetSortsNumericallyWhenIntegers) {
  std::vector<Example> rows(4);
  rows[0].label = "10";
  rows[1].label = "2";
  rows[2].label = "-1";
  rows[3].label = "2";
  auto labels = LabelSet(rows, "t.jsonl");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(*labels, (std::vector<std::string>{"-1", "2", "10"}));
  rows[0].label = "b";
  rows[1].label = "a";
  labels = LabelSet(rows, "t.jsonl");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(*labels, (std::vector<std::string>{"-1", "2", "a", "b"}));
  EXPECT_FALSE(LabelSet({}, "t.jsonl").ok());
  EXPECT_EQ(LabelIndices(rows, *labels), (std::vector<int64_t>{3, 2, 0, 1}));
}

TEST(DatasetTest, UnknownValidationLabelsAreNamed) {
  std::vector<Example> val(3);
  val[0].label = "pos";
  val[1].label = "maybe";
  val[1].line = 2;
  val[2].label = "other";
  val[2].line = 3;
  const absl::Status s = CheckLabels(val, {"neg", "pos"}, "val.jsonl");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      std::string(s.message()),
      "val.jsonl:2: labels not in the training data: \"maybe\", \"other\"");
  EXPECT_TRUE(CheckLabels(val, {"maybe", "other", "pos"}, "val.jsonl").ok());
}

}  // namespace
}  // namespace lathe
