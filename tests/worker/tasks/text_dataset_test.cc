// The text tasks' row reader: renamed columns, list labels (multi-label)
// and numeric targets (regression).
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/data/dataset.h"

namespace lathe {
namespace {

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const auto dir =
      std::filesystem::temp_directory_path() / "lathe_text_dataset_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / name).string();
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

std::string ErrorOf(const std::string& name, const std::string& contents,
                    const ReadOptions& options) {
  auto rows = ReadExamples(WriteTemp(name, contents), name, options);
  if (rows.ok()) return "ok";
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(rows.status().message());
}

TEST(TextDatasetTest, RenamedColumnsInJsonlAndCsv) {
  ReadOptions o;
  o.columns.text = "sentence1";
  o.columns.text_pair = "sentence2";
  o.columns.label = "gold";
  auto rows = ReadExamples(
      WriteTemp("cols.jsonl",
                "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"gold\": 1, "
                "\"text\": \"ignored\"}\n"),
      "cols.jsonl", o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ((*rows)[0].text, "a");
  EXPECT_EQ((*rows)[0].text_pair.value(), "b");
  EXPECT_EQ((*rows)[0].label, "1");
  auto csv = ReadExamples(WriteTemp("cols.csv", "gold,sentence1\nx,hello\n"),
                          "cols.csv", o);
  ASSERT_TRUE(csv.ok()) << csv.status();
  EXPECT_EQ((*csv)[0].text, "hello");
  EXPECT_EQ((*csv)[0].label, "x");
  EXPECT_FALSE((*csv)[0].text_pair.has_value());
  // Errors name the column as the user called it.
  EXPECT_EQ(ErrorOf("cols.jsonl", "{\"sentence1\": \"a\"}\n", o),
            "cols.jsonl:1: missing field \"gold\"");
  EXPECT_EQ(ErrorOf("cols.csv", "text,label\na,b\n", o),
            "cols.csv:1: header has no \"sentence1\" column");
}

TEST(TextDatasetTest, ListLabels) {
  ReadOptions o;
  o.label_kind = LabelKind::kClassOrList;
  auto rows = ReadExamples(
      WriteTemp("ml.jsonl",
                "{\"text\": \"a\", \"label\": [\"x\", \"y\", \"x\"]}\n"
                "{\"text\": \"b\", \"label\": []}\n"
                "{\"text\": \"c\", \"label\": [3]}\n"
                "{\"text\": \"d\", \"label\": \"z\"}\n"),
      "ml.jsonl", o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_TRUE((*rows)[0].label_is_list);
  EXPECT_EQ((*rows)[0].labels, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE((*rows)[1].label_is_list);
  EXPECT_TRUE((*rows)[1].labels.empty());
  EXPECT_EQ((*rows)[2].labels, (std::vector<std::string>{"3"}));
  EXPECT_FALSE((*rows)[3].label_is_list);
  EXPECT_EQ((*rows)[3].label, "z");
  auto labels = LabelSet(*rows, "ml.jsonl");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(*labels, (std::vector<std::string>{"3", "x", "y", "z"}));
  const std::vector<std::vector<uint8_t>> indicators =
      LabelIndicators(*rows, *labels);
  EXPECT_EQ(indicators[0], (std::vector<uint8_t>{0, 1, 1, 0}));
  EXPECT_EQ(indicators[1], (std::vector<uint8_t>{0, 0, 0, 0}));
  // Unknown labels inside lists are named.
  EXPECT_EQ(CheckLabels(*rows, {"x", "y", "z"}, "val.jsonl").message(),
            "val.jsonl:3: labels not in the training data: \"3\"");

  auto csv = ReadExamples(
      WriteTemp("ml.csv", "text,label\na,\"[\"\"x\"\", \"\"y\"\"]\"\nb,z\n"),
      "ml.csv", o);
  ASSERT_TRUE(csv.ok()) << csv.status();
  EXPECT_EQ((*csv)[0].labels, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ((*csv)[1].label, "z");

  EXPECT_EQ(ErrorOf("ml.jsonl", "{\"text\": \"a\", \"label\": [1.5]}\n", o),
            "ml.jsonl:1: field \"label\" must list strings or integers");
  EXPECT_EQ(ErrorOf("ml.jsonl", "{\"text\": \"a\", \"label\": [\"\"]}\n", o),
            "ml.jsonl:1: field \"label\" lists an empty label");
  EXPECT_EQ(ErrorOf("ml.csv", "text,label\na,[x\n", o)
                .rfind("ml.csv:2: field \"label\" is not a JSON list", 0),
            0u);
  // Lists stay an error where the task takes one label.
  EXPECT_EQ(ErrorOf("one.jsonl", "{\"text\": \"a\", \"label\": [\"x\"]}\n",
                    ReadOptions()),
            "one.jsonl:1: field \"label\" must be a string or an integer");
}

TEST(TextDatasetTest, NumericTargets) {
  ReadOptions o;
  o.label_kind = LabelKind::kNumber;
  auto rows = ReadExamples(WriteTemp("r.jsonl",
                                     "{\"text\": \"a\", \"label\": 2.5}\n"
                                     "{\"text\": \"b\", \"label\": -3}\n"),
                           "r.jsonl", o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ((*rows)[0].value, 2.5);
  EXPECT_EQ((*rows)[1].value, -3.0);
  auto tsv =
      ReadExamples(WriteTemp("r.tsv", "text\tlabel\na\t 1e-1 \n"), "r.tsv", o);
  ASSERT_TRUE(tsv.ok()) << tsv.status();
  EXPECT_DOUBLE_EQ((*tsv)[0].value, 0.1);
  EXPECT_EQ(ErrorOf("r.jsonl",
                    "{\"text\": \"a\", \"label\": 1}\n"
                    "{\"text\": \"b\", \"label\": \"high\"}\n",
                    o),
            "r.jsonl:2: field \"label\" is not a number");
  EXPECT_EQ(ErrorOf("r.csv", "text,label\na,1\nb,high\n", o),
            "r.csv:3: field \"label\" is not a number");
  EXPECT_EQ(ErrorOf("r.csv", "text,label\na,nan\n", o),
            "r.csv:2: field \"label\" is not a number");
  // Rows to predict may lack the target.
  o.labels_optional = true;
  auto unlabeled =
      ReadExamples(WriteTemp("p.jsonl", "{\"text\": \"a\"}\n"), "p.jsonl", o);
  ASSERT_TRUE(unlabeled.ok()) << unlabeled.status();
  EXPECT_EQ((*unlabeled)[0].text, "a");
}

TEST(TextDatasetTest, ColumnsFromParams) {
  TrainParams p;
  TextColumns c = TextColumnsFromParams(p);
  EXPECT_EQ(c.text, "text");
  EXPECT_EQ(c.text_pair, "text_pair");
  EXPECT_EQ(c.label, "label");
  p.text_column = "review";
  p.label_column = "stars";
  c = TextColumnsFromParams(p);
  EXPECT_EQ(c.text, "review");
  EXPECT_EQ(c.text_pair, "text_pair");
  EXPECT_EQ(c.label, "stars");
}

}  // namespace
}  // namespace lathe
