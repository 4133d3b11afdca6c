// Whole-system tests for the span tasks on synthetic data: named entities
// (people's names from a list are PER, cities LOC; training rows as tokens
// with BIO tags, validation rows as text with character spans) and
// extractive question answering in SQuAD v1.1 JSON and in v2.0 JSONL with
// unanswerable questions and contexts longer than one window. Each job is
// submitted to the real server, trained by the real worker on
// preset:bert-tiny, and must reach SUCCEEDED with its metrics in `lathe get
// --output json`; the fine-tuned checkpoints then predict with
// `lathe-train predict`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/system_fixture.h"

namespace lathe {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

const std::vector<std::string>& Names() {
  static const auto* v = new std::vector<std::string>{
      "John", "Mary", "David", "Sarah", "Peter", "Anna", "James", "Laura"};
  return *v;
}
const std::vector<std::string>& Cities() {
  static const auto* v =
      new std::vector<std::string>{"Paris", "London", "Berlin", "Madrid",
                                   "Rome",  "Vienna", "Dublin", "Prague"};
  return *v;
}
const std::vector<std::string>& Filler() {
  static const auto* v = new std::vector<std::string>{
      "the",  "weather", "was",  "nice", "and",   "we",   "had",
      "tea",  "with",    "some", "old",  "books", "near", "a",
      "park", "today",   "very", "long", "quiet", "walk"};
  return *v;
}

// One NER sentence as words and tags.
void NerSentence(std::mt19937* rng, std::vector<std::string>* words,
                 std::vector<std::string>* tags) {
  auto pick = [&](const std::vector<std::string>& v) {
    return v[(*rng)() % v.size()];
  };
  auto add = [&](const std::string& w, const std::string& t) {
    words->push_back(w);
    tags->push_back(t);
  };
  const int n = 2 + static_cast<int>((*rng)() % 4);
  for (int i = 0; i < n; ++i) add(pick(Filler()), "O");
  add(pick(Names()), "B-PER");
  if ((*rng)() % 3 == 0) add(pick(Names()), "I-PER");  // Two-word names.
  add(pick({"visited", "left", "loves"}), "O");
  add(pick(Cities()), "B-LOC");
  for (int i = 0; i < 2; ++i) add(pick(Filler()), "O");
  add(".", "O");
}

// Training rows: {"tokens", "tags"}.
void WriteNerTokens(const std::string& path, int rows, int seed) {
  std::mt19937 rng(seed);
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    std::vector<std::string> words, tags;
    NerSentence(&rng, &words, &tags);
    out << json{{"tokens", words}, {"tags", tags}}.dump() << "\n";
  }
}

// Validation rows: {"text", "spans"} with character offsets.
void WriteNerSpans(const std::string& path, int rows, int seed) {
  std::mt19937 rng(seed);
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    std::vector<std::string> words, tags;
    NerSentence(&rng, &words, &tags);
    std::string text;
    json spans = json::array();
    for (size_t w = 0; w < words.size(); ++w) {
      if (!text.empty()) text += ' ';
      const int64_t start = static_cast<int64_t>(text.size());
      text += words[w];
      const int64_t end = static_cast<int64_t>(text.size());
      if (tags[w][0] == 'B') {
        spans.push_back(
            {{"start", start}, {"end", end}, {"label", tags[w].substr(2)}});
      } else if (tags[w][0] == 'I') {
        spans.back()["end"] = end;
      }
    }
    out << json{{"text", text}, {"spans", spans}}.dump() << "\n";
  }
}

struct QaItem {
  std::string question, context, answer;
  int64_t start = -1;  // -1: unanswerable
};

// "NAME lives in CITY" inside filler; the question asks where NAME lives
// (answerable) or where another name lives (unanswerable, when allowed).
QaItem MakeQa(std::mt19937* rng, int filler_words, bool unanswerable) {
  auto pick = [&](const std::vector<std::string>& v) {
    return v[(*rng)() % v.size()];
  };
  const size_t who = (*rng)() % Names().size();
  const std::string city = pick(Cities());
  std::string context;
  auto add = [&](const std::string& w) {
    if (!context.empty()) context += ' ';
    context += w;
  };
  const int before = static_cast<int>((*rng)() % (filler_words + 1));
  for (int i = 0; i < before; ++i) add(pick(Filler()));
  add(Names()[who]);
  add("lives");
  add("in");
  if (!context.empty()) context += ' ';
  QaItem q;
  q.start = static_cast<int64_t>(context.size());
  context += city;
  add(".");
  for (int i = before; i < filler_words; ++i) add(pick(Filler()));
  q.context = context;
  q.answer = city;
  std::string asked = Names()[who];
  if (unanswerable) {
    asked =
        Names()[(who + 1 + (*rng)() % (Names().size() - 1)) % Names().size()];
    q.answer.clear();
    q.start = -1;
  }
  q.question = "where does " + asked + " live ?";
  return q;
}

// SQuAD v1.1 JSON.
void WriteSquadV1(const std::string& path, int questions, int seed,
                  int filler_words) {
  std::mt19937 rng(seed);
  json paragraphs = json::array();
  for (int i = 0; i < questions; ++i) {
    const QaItem q = MakeQa(&rng, filler_words, false);
    paragraphs.push_back(
        {{"context", q.context},
         {"qas",
          {{{"id", "v1-" + std::to_string(seed) + "-" + std::to_string(i)},
            {"question", q.question},
            {"answers", {{{"text", q.answer}, {"answer_start", q.start}}}}}}}});
  }
  std::ofstream(path)
      << json{{"version", "1.1"},
              {"data", {{{"title", "synthetic"}, {"paragraphs", paragraphs}}}}}
             .dump();
}

// JSONL in the v2.0 style: every third question has no answer.
void WriteQaV2Jsonl(const std::string& path, int questions, int seed,
                    int filler_words) {
  std::mt19937 rng(seed);
  std::ofstream out(path);
  for (int i = 0; i < questions; ++i) {
    const QaItem q = MakeQa(&rng, filler_words, i % 3 == 2);
    json answers = {{"text", json::array()}, {"answer_start", json::array()}};
    if (q.start >= 0) {
      answers["text"].push_back(q.answer);
      answers["answer_start"].push_back(q.start);
    }
    out << json{{"id", "v2-" + std::to_string(seed) + "-" + std::to_string(i)},
                {"question", q.question},
                {"context", q.context},
                {"answers", answers}}
               .dump()
        << "\n";
  }
}

class SpanTasksTest : public testing::SharedServerTest {
 protected:
  // Submits `task` on preset:bert-tiny with `extra` parameters; returns the
  // job id.
  std::string Submit(const std::string& task, const std::string& train,
                     const std::string& validation,
                     const std::vector<std::string>& extra) {
    testing::SubmitArgs args{
        task,
        "preset:bert-tiny",
        train,
        validation,
        {"batch_size=16", "max_seq_length=64", "warmup_ratio=0", "epochs=100"}};
    return testing::SubmitJob(*server_, args.AddParams(extra));
  }

  // Waits for `id` to end and returns `lathe get` as JSON.
  json WaitAndGet(const std::string& id) {
    return testing::WaitAndGet(*server_, id, 600, testing::JobEnd::kSucceeded);
  }

  // Downloads the job's model and runs `lathe-train predict` on `input`
  // for `task`; returns one JSON object per output line.
  std::vector<json> Predict(const std::string& id, const std::string& task,
                            const std::string& input) {
    const std::string dest =
        testing::DownloadJob(*server_, id, Path(id + "-model"));
    return testing::TrainPredict(dest, task, input, {"max_seq_length=64"});
  }
};

TEST_F(SpanTasksTest, NamedEntitiesTrainAndPredict) {
  WriteNerTokens(Path("ner_train.jsonl"), 320, 1);
  WriteNerSpans(Path("ner_val.jsonl"), 48, 2);
  const std::string id =
      Submit("token-classification", Path("ner_train.jsonl"),
             Path("ner_val.jsonl"), {"learning_rate=3e-3", "max_steps=60"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  const json& m = job["eval_metrics"];
  for (const char* k : {"precision", "recall", "f1", "accuracy", "loss"}) {
    EXPECT_TRUE(m.contains(k)) << k << " missing: " << job.dump(2);
  }
  // Names and cities come from small lists: entity F1 rises well above a
  // model that tags everything "O" (F1 0).
  EXPECT_GE(m.value("f1", 0.0), 0.6) << job.dump(2);
  EXPECT_GE(m.value("accuracy", 0.0), 0.85) << job.dump(2);

  // Prediction on raw text: entity spans are characters into the text.
  std::ofstream(Path("ner_in.jsonl"))
      << json{{"text", "we had tea with Mary visited Vienna today ."}}.dump()
      << "\n"
      << json{{"tokens", {"the", "park", "near", "John", "loves", "Rome"}}}
             .dump()
      << "\n";
  const std::vector<json> rows =
      Predict(id, "token-classification", Path("ner_in.jsonl"));
  ASSERT_EQ(rows.size(), 2u);
  for (const json& row : rows) {
    ASSERT_TRUE(row.contains("entities")) << row.dump();
    const std::string text = row.value("text", "");
    for (const json& e : row["entities"]) {
      const int64_t s = e["start"], t = e["end"];
      ASSERT_LE(t, static_cast<int64_t>(text.size()));
      EXPECT_EQ(text.substr(s, t - s), e["text"]) << row.dump();  // ASCII.
    }
  }
  EXPECT_THAT(rows[0]["entities"].dump(), HasSubstr("\"text\":\"Mary\""));
  EXPECT_THAT(rows[0]["entities"].dump(), HasSubstr("\"text\":\"Vienna\""));
  EXPECT_EQ(rows[1]["text"], "the park near John loves Rome");
  EXPECT_THAT(rows[1]["entities"].dump(), HasSubstr("\"label\":\"LOC\""));
}

TEST_F(SpanTasksTest, SquadV1JsonTrainsAndPredicts) {
  WriteSquadV1(Path("squad_train.json"), 256, 3, 8);
  WriteSquadV1(Path("squad_dev.json"), 40, 4, 8);
  const std::string id =
      Submit("question-answering", Path("squad_train.json"),
             Path("squad_dev.json"), {"learning_rate=3e-3", "max_steps=80"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  const json& m = job["eval_metrics"];
  for (const char* k : {"exact_match", "f1", "loss"}) {
    EXPECT_TRUE(m.contains(k)) << k << " missing: " << job.dump(2);
  }
  EXPECT_FALSE(m.contains("HasAns_f1")) << "v1.1 data has no v2.0 breakdown";
  // The answer is always the city after "lives in".
  EXPECT_GE(m.value("f1", 0.0), 0.5) << job.dump(2);

  std::ofstream(Path("qa_in.jsonl"))
      << json{{"question", "where does Anna live ?"},
              {"context", "some old books . Anna lives in Dublin . a park"}}
             .dump()
      << "\n";
  const std::vector<json> rows =
      Predict(id, "question-answering", Path("qa_in.jsonl"));
  ASSERT_EQ(rows.size(), 1u);
  ASSERT_TRUE(rows[0].contains("answer")) << rows[0].dump();
  EXPECT_TRUE(rows[0].contains("score")) << rows[0].dump();
  const std::string answer = rows[0]["answer"];
  const int64_t s = rows[0]["start"], e = rows[0]["end"];
  const std::string context = "some old books . Anna lives in Dublin . a park";
  EXPECT_EQ(context.substr(s, e - s), answer);
}

TEST_F(SpanTasksTest, SquadV2JsonlWithUnanswerableAndLongContexts) {
  // 40 filler words: contexts longer than max_seq_length 64 allows, so
  // each question has several windows (doc_stride 16).
  WriteQaV2Jsonl(Path("qa2_train.jsonl"), 240, 5, 40);
  WriteQaV2Jsonl(Path("qa2_dev.jsonl"), 36, 6, 40);
  const std::string id = Submit(
      "question-answering", Path("qa2_train.jsonl"), Path("qa2_dev.jsonl"),
      {"learning_rate=3e-3", "max_steps=60", "doc_stride=16"});
  ASSERT_FALSE(id.empty());
  json job = WaitAndGet(id);
  ASSERT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  const json& m = job["eval_metrics"];
  for (const char* k :
       {"exact_match", "f1", "loss", "HasAns_exact", "HasAns_f1", "NoAns_exact",
        "NoAns_f1", "best_f1", "best_f1_thresh"}) {
    EXPECT_TRUE(m.contains(k)) << k << " missing: " << job.dump(2);
  }
  EXPECT_EQ(m.value("NoAns_total", 0), 12) << job.dump(2);
  EXPECT_EQ(m.value("HasAns_total", 0), 24) << job.dump(2);
  // The best threshold can always answer "no answer" to every question.
  EXPECT_GE(m.value("best_f1", 0.0), 12.0 / 36 - 1e-9) << job.dump(2);
}

}  // namespace
}  // namespace lathe
