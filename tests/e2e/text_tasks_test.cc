// Whole-system tests for the text tasks beyond single-label classification:
// text-regression on a synthetic word count, multi-label classification on
// synthetic topics, the full single-label metric set (with renamed CSV
// columns), and bad label forms that fail the job naming file and line. The
// real server, worker and training child run each job on preset:bert-tiny.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "common/files.h"
#include "nlohmann/json.hpp"
#include "tests/support/system_fixture.h"

namespace lathe {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

const char* const kPositive[] = {"great", "happy", "love", "superb"};
const char* const kNeutral[] = {"table", "window", "paper", "river",
                                "chair", "stone",  "cloud", "door"};

// Rows "w1 w2 w3 w4" whose target is how many of the words are positive
// (0..4); a fixed pattern, so the data is the same on every run. Returns
// the targets written.
std::vector<double> WriteCountData(const std::string& path, int rows,
                                   int offset) {
  std::ofstream out(path);
  std::vector<double> targets;
  for (int i = 0; i < rows; ++i) {
    const int r = i + offset;
    std::string text;
    int count = 0;
    for (int w = 0; w < 4; ++w) {
      // Word w is positive for bit w of a row-dependent mask.
      const bool positive = ((r * 7 + r / 16) >> w & 1) != 0;
      if (!text.empty()) text += " ";
      text += positive ? kPositive[(r + w) % 4] : kNeutral[(r * 3 + w) % 8];
      count += positive;
    }
    out << json{{"text", text}, {"label", count}}.dump() << "\n";
    targets.push_back(count);
  }
  return targets;
}

// Rows mentioning one or two of three topics, each by one of its words;
// the label lists the topics mentioned.
void WriteTopicData(const std::string& path, int rows, int offset) {
  static const char* const kTopics[] = {"food", "music", "sport"};
  static const char* const kWords[3][4] = {
      {"pizza", "bread", "soup", "cheese"},
      {"guitar", "piano", "song", "drums"},
      {"football", "tennis", "hockey", "golf"}};
  // Every non-empty subset of at most two topics, in turn.
  static const int kSubsets[][2] = {{0, -1}, {1, -1}, {2, -1},
                                    {0, 1},  {0, 2},  {1, 2}};
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    const int r = i + offset;
    const int* subset = kSubsets[r % 6];
    std::string text = "today we talked about";
    json labels = json::array();
    for (int k = 0; k < 2; ++k) {
      if (subset[k] < 0) continue;
      text += std::string(" ") + kWords[subset[k]][(r / 6 + k) % 4];
      labels.push_back(kTopics[subset[k]]);
    }
    text += " with friends";
    out << json{{"text", text}, {"label", labels}}.dump() << "\n";
  }
}

class TextTasksTest : public testing::SharedServerTest {
 protected:
  // Submits a short job on preset:bert-tiny; returns its id.
  std::string Submit(const std::string& task, const std::string& train,
                     const std::string& validation, int max_steps,
                     const std::vector<std::string>& params = {}) {
    testing::SubmitArgs args{
        task,
        "preset:bert-tiny",
        Path(train),
        validation.empty() ? "" : Path(validation),
        {"learning_rate=2e-3", "batch_size=16", "max_seq_length=32",
         "warmup_ratio=0", "seed=7", "max_steps=" + std::to_string(max_steps),
         "epochs=100"}};
    return testing::SubmitJob(*server_, args.AddParams(params));
  }

  // Waits for `id` to end and returns `lathe get` as JSON.
  json WaitAndGet(const std::string& id) {
    return testing::WaitAndGet(*server_, id, 600, testing::JobEnd::kAny);
  }

  // `lathe predict MODEL --input FILE --output json`: one object per row.
  std::vector<json> Predict(const std::string& model, const std::string& input,
                            const std::vector<std::string>& params = {}) {
    std::vector<std::string> args = {"predict",   model,      "--input",
                                     Path(input), "--output", "json"};
    for (const std::string& p : params) {
      args.push_back("--param");
      args.push_back(p);
    }
    testing::CommandResult r = server_->Cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return testing::ParseJsonLines(r.out);
  }

  // The fine-tuned model's config.json.
  json DownloadedConfig(const std::string& id) {
    const std::string dest =
        testing::DownloadJob(*server_, id, Path(id + "-model"));
    auto text = ReadFile(dest + "/config.json");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? json::parse(*text, nullptr, false) : json();
  }
};

TEST_F(TextTasksTest, RegressionLearnsAWordCount) {
  WriteCountData(Path("count_train.jsonl"), 192, 0);
  const std::vector<double> val =
      WriteCountData(Path("count_val.jsonl"), 48, 1000);
  // The error of always predicting the validation mean: a model that
  // learned anything beats it.
  double mean = 0, variance = 0;
  for (double v : val) mean += v / val.size();
  for (double v : val) variance += (v - mean) * (v - mean) / val.size();

  const std::string id =
      Submit("text-regression", "count_train.jsonl", "count_val.jsonl", 80);
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  const json& m = job["eval_metrics"];
  for (const char* k : {"mse", "mae", "pearson", "spearman", "loss"}) {
    EXPECT_TRUE(m.contains(k)) << k << " missing: " << m.dump();
  }
  EXPECT_LT(m.value("mse", 1e9), 0.5 * variance) << m.dump();
  EXPECT_GT(m.value("pearson", 0.0), 0.7) << m.dump();
  EXPECT_GT(m.value("spearman", 0.0), 0.7) << m.dump();
  EXPECT_NEAR(m.value("loss", -1.0), m.value("mse", 1.0), 1e-6);

  const json config = DownloadedConfig(id);
  EXPECT_EQ(config["problem_type"], "regression") << config.dump();
  EXPECT_EQ(config["id2label"]["0"], "LABEL_0") << config.dump();

  // Predictions on the validation rows (their targets are ignored) come
  // close to the counts.
  const std::vector<json> rows = Predict("job:" + id, "count_val.jsonl");
  ASSERT_EQ(rows.size(), val.size());
  double se = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_TRUE(rows[i]["value"].is_number()) << rows[i].dump();
    const double d = rows[i]["value"].get<double>() - val[i];
    se += d * d / rows.size();
  }
  EXPECT_NEAR(se, m.value("mse", -1.0), 1e-3);
}

TEST_F(TextTasksTest, MultiLabelLearnsTopics) {
  WriteTopicData(Path("topics_train.jsonl"), 192, 0);
  WriteTopicData(Path("topics_val.jsonl"), 48, 3);
  const std::string id = Submit("text-classification", "topics_train.jsonl",
                                "topics_val.jsonl", 80);
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  const json& m = job["eval_metrics"];
  ASSERT_TRUE(m.contains("exact_match")) << m.dump();
  ASSERT_TRUE(m.contains("f1_micro")) << m.dump();
  EXPECT_TRUE(m.contains("loss")) << m.dump();
  EXPECT_FALSE(m.contains("accuracy")) << m.dump();
  EXPECT_GE(m["f1_micro"].get<double>(), 0.8) << m.dump();
  EXPECT_GE(m["exact_match"].get<double>(), 0.5) << m.dump();

  const json config = DownloadedConfig(id);
  EXPECT_EQ(config["problem_type"], "multi_label_classification")
      << config.dump();
  EXPECT_EQ(config["id2label"],
            (json{{"0", "food"}, {"1", "music"}, {"2", "sport"}}))
      << config.dump();

  // Predictions list the labels whose probability passes 0.5.
  const std::vector<json> rows = Predict("job:" + id, "topics_val.jsonl");
  ASSERT_EQ(rows.size(), 48u);
  int right = 0;
  std::ifstream gold_rows(Path("topics_val.jsonl"));
  for (const json& row : rows) {
    std::string line;
    std::getline(gold_rows, line);
    ASSERT_TRUE(row["labels"].is_array()) << row.dump();
    ASSERT_EQ(row["probabilities"].size(), 3u) << row.dump();
    json above = json::array();
    for (const char* label : {"food", "music", "sport"}) {
      if (row["probabilities"][label].get<double>() > 0.5) {
        above.push_back(label);
      }
    }
    EXPECT_EQ(row["labels"], above) << row.dump();
    right += row["labels"] == json::parse(line)["label"];
  }
  // Row by row, as exact_match counted.
  EXPECT_NEAR(right / 48.0, m["exact_match"].get<double>(), 1e-9);
}

TEST_F(TextTasksTest, SingleLabelReportsTheFullMetricSetFromRenamedColumns) {
  // The sentiment set as CSV under other column names.
  for (const auto& [name, rows, offset] :
       {std::tuple<std::string, int, int>{"sentiment_train", 96, 0},
        std::tuple<std::string, int, int>{"sentiment_val", 32, 1}}) {
    testing::WriteSentimentData(Path(name + ".jsonl"), rows, offset);
    std::ifstream in(Path(name + ".jsonl"));
    std::ofstream out(Path(name + ".csv"));
    out << "id,review,sentiment\n";
    std::string line;
    for (int i = 0; std::getline(in, line); ++i) {
      const json row = json::parse(line);
      out << i << ",\"" << row["text"].get<std::string>() << "\","
          << row["label"].get<std::string>() << "\n";
    }
  }
  const std::string id =
      Submit("text-classification", "sentiment_train.csv", "sentiment_val.csv",
             24, {"text_column=review", "label_column=sentiment"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  const json& m = job["eval_metrics"];
  for (const char* k :
       {"accuracy", "f1", "f1_micro", "precision", "recall", "mcc", "loss"}) {
    ASSERT_TRUE(m.contains(k)) << k << " missing: " << m.dump();
  }
  EXPECT_GE(m["accuracy"].get<double>(), 0.8) << m.dump();
  EXPECT_GT(m["mcc"].get<double>(), 0.5) << m.dump();
  EXPECT_LE(m["mcc"].get<double>(), 1.0) << m.dump();
  // Single-label micro F1 is the accuracy.
  EXPECT_NEAR(m["f1_micro"].get<double>(), m["accuracy"].get<double>(), 1e-9);
  // The confusion matrix, cell by cell: it covers the 32 validation rows,
  // 16 of each label, and its diagonal is the accuracy.
  double total = 0, diagonal = 0;
  for (const char* gold : {"negative", "positive"}) {
    double row = 0;
    for (const char* pred : {"negative", "positive"}) {
      const std::string key =
          std::string("confusion_matrix/") + gold + "/" + pred;
      ASSERT_TRUE(m.contains(key)) << key << " missing: " << m.dump();
      row += m[key].get<double>();
      if (std::string(gold) == pred) diagonal += m[key].get<double>();
    }
    EXPECT_EQ(row, 16) << gold;
    total += row;
  }
  EXPECT_EQ(total, 32);
  EXPECT_NEAR(diagonal / total, m["accuracy"].get<double>(), 1e-9);

  // Predictions read the same renamed text column.
  const std::vector<json> rows =
      Predict("job:" + id, "sentiment_val.csv", {"text_column=review"});
  ASSERT_EQ(rows.size(), 32u);
  int right = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_TRUE(rows[i]["label"].is_string()) << rows[i].dump();
    ASSERT_EQ(rows[i]["probabilities"].size(), 2u) << rows[i].dump();
    // Validation row i is positive when i + 1 is even.
    right += rows[i]["label"] == ((i + 1) % 2 == 0 ? "positive" : "negative");
  }
  EXPECT_NEAR(right / 32.0, m["accuracy"].get<double>(), 1e-9);
}

TEST_F(TextTasksTest, BadLabelFormsFailNamingFileAndLine) {
  {
    std::ofstream out(Path("mixed.jsonl"));
    out << R"({"text": "a", "label": ["x"]})"
        << "\n"
        << R"({"text": "b", "label": ["x", "y"]})"
        << "\n"
        << R"({"text": "c", "label": "y"})"
        << "\n";
  }
  {
    std::ofstream out(Path("bad_target.jsonl"));
    out << R"({"text": "a", "label": 1.5})"
        << "\n"
        << R"({"text": "b", "label": "high"})"
        << "\n";
  }
  struct Case {
    std::string task, file, where, what;
  };
  for (const Case& c :
       {Case{"text-classification", "mixed.jsonl", "mixed.jsonl:3", "list"},
        Case{"text-regression", "bad_target.jsonl", "bad_target.jsonl:2",
             "not a number"}}) {
    const std::string id = Submit(c.task, c.file, "", 2);
    ASSERT_FALSE(id.empty());
    json job = WaitAndGet(id);
    EXPECT_EQ(job["state"], "FAILED") << job.dump(2);
    const std::string error = job.value("error", "");
    EXPECT_THAT(error, HasSubstr(c.where)) << job.dump(2);
    EXPECT_THAT(error, HasSubstr(c.what)) << job.dump(2);
  }
}

}  // namespace
}  // namespace lathe
