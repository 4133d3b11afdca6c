// Token-classification and question-answering data: readers and their
// errors, first-sub-token label alignment, QA windows and answer positions,
// and answer post-processing on hand-made logits. A small WordPiece
// vocabulary written by the tests stands in for a real tokenizer.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/temp_dir.h"
#include "worker/models/model.h"
#include "worker/tasks/squad_data.h"
#include "worker/tasks/task.h"
#include "worker/tasks/token_classification_data.h"
#include "worker/tokenizers/tokenizer.h"

namespace lathe {
namespace {

using Spans = std::vector<std::pair<int64_t, int64_t>>;

std::string Write(const TempDir& dir, const std::string& name,
                  const std::string& contents) {
  const std::string path = dir.path() + "/" + name;
  std::ofstream(path) << contents;
  return path;
}

std::unique_ptr<Tokenizer> SmallTokenizer(const TempDir& dir) {
  std::ofstream(dir.path() + "/vocab.txt")
      << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
         "ada\nlives\nin\nlon\n##don\nparis\nwhere\ndoes\nlive\n?\n.\n"
         "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\n"
         "bob\nrome\nberlin\n";
  auto tok = Tokenizer::FromDirectory(dir.path());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

absl::Status TokenError(const std::string& contents) {
  TempDir dir;
  const std::string path = Write(dir, "train.jsonl", contents);
  return ReadTokenRows(path, "train.jsonl", TokenColumns(), true).status();
}

absl::Status QaError(const std::string& name, const std::string& contents) {
  TempDir dir;
  const std::string path = Write(dir, name, contents);
  return ReadQaExamples(path, name, QaColumns(), true).status();
}

// ---- Token classification data ----

TEST(TokenRowsTest, TokensAndTagsJoinWithSpaces) {
  TempDir dir;
  const std::string path = Write(
      dir, "t.jsonl",
      "{\"tokens\": [\"Ada\", \"lives\", \"in\", \"K\xc3\xb6ln\", \".\"], "
      "\"tags\": [\"B-PER\", \"O\", \"O\", \"B-LOC\", \"O\"]}\n\n"
      "{\"words\": [\"x\"], \"labels\": [\"O\"]}\n");
  TokenColumns columns;
  columns.tokens = "words";
  columns.tags = "labels";
  auto renamed = ReadTokenRows(path, "t.jsonl", columns, true);
  ASSERT_FALSE(renamed.ok());  // Line 1 lacks the renamed columns.
  EXPECT_EQ(renamed.status().message().substr(0, 10), "t.jsonl:1:");
  auto rows = ReadTokenRows(path, "t.jsonl", TokenColumns(), false);
  ASSERT_FALSE(rows.ok());  // Line 3 lacks "tokens" and "text".
  EXPECT_NE(rows.status().message().find("t.jsonl:3:"), std::string::npos);

  const std::string one = Write(
      dir, "one.jsonl",
      "{\"tokens\": [\"Ada\", \"lives\", \"in\", \"K\xc3\xb6ln\", \".\"], "
      "\"tags\": [\"B-PER\", \"O\", \"O\", \"B-LOC\", \"O\"]}\n");
  auto ok = ReadTokenRows(one, "one.jsonl", TokenColumns(), true);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 1u);
  const TokenRow& r = (*ok)[0];
  EXPECT_EQ(r.text, "Ada lives in K\xc3\xb6ln .");
  EXPECT_EQ(r.word_chars,
            (Spans{{0, 3}, {4, 9}, {10, 12}, {13, 17}, {18, 19}}));
  EXPECT_EQ(r.word_bytes[3], std::make_pair(int64_t{13}, int64_t{18}));
  EXPECT_EQ(r.tags[3], "B-LOC");
  EXPECT_EQ(r.line, 1);
}

TEST(TokenRowsTest, SpansBecomeBioOverWords) {
  TempDir dir;
  // "Zoë" has a two-byte ë: offsets count code points.
  const std::string path =
      Write(dir, "s.jsonl",
            "{\"text\": \"Zo\xc3\xab Lovelace lives in Paris.\", \"spans\": "
            "[{\"start\": 0, \"end\": 12, \"label\": \"PER\"}, "
            "{\"start\": 22, \"end\": 27, \"label\": \"LOC\"}]}\n"
            "{\"text\": \"nothing here\", \"entities\": []}\n");
  auto rows = ReadTokenRows(path, "s.jsonl", TokenColumns(), true);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].tags, (std::vector<std::string>{"B-PER", "I-PER", "O",
                                                       "O", "B-LOC", "O"}));
  EXPECT_EQ((*rows)[0].word_chars,
            (Spans{{0, 3}, {4, 12}, {13, 18}, {19, 21}, {22, 27}, {27, 28}}));
  EXPECT_EQ((*rows)[1].tags, (std::vector<std::string>{"O", "O"}));
  EXPECT_EQ((*rows)[1].line, 2);
}

TEST(TokenRowsTest, SplitWordsSeparatesPunctuation) {
  const std::string text = "U.S. costs $5, (ok)";
  std::vector<std::string> words;
  for (const auto& [b, e] : SplitWords(text)) {
    words.push_back(text.substr(b, e - b));
  }
  EXPECT_EQ(words, (std::vector<std::string>{"U", ".", "S", ".", "costs", "$",
                                             "5", ",", "(", "ok", ")"}));
}

TEST(TokenRowsTest, Errors) {
  auto expect = [](const std::string& contents, const std::string& want) {
    const absl::Status s = TokenError(contents);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << contents;
    EXPECT_NE(s.message().find(want), std::string::npos)
        << s.message() << " lacks " << want;
  };
  expect(
      "{\"tokens\": [\"a\"], \"tags\": [\"O\"]}\n"
      "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}\n",
      "train.jsonl:2: 2 tokens but 1 tags");
  expect("{\"tokens\": [\"a\", \"b\"]}\n",
         "train.jsonl:1: missing field \"tags\"");
  expect("{\"tokens\": [\"a\", \" \"], \"tags\": [\"O\", \"O\"]}\n",
         "train.jsonl:1: field \"tokens\"[1] is empty");
  expect("{\"tokens\": [\"a\", 3], \"tags\": [\"O\", \"O\"]}\n",
         "field \"tokens\"[1] is not a string");
  expect(
      "{\"text\": \"Ada lives\", \"spans\": "
      "[{\"start\": 4, \"end\": 12, \"label\": \"X\"}]}\n",
      "train.jsonl:1: spans[0] [4, 12) is not a non-empty range inside the "
      "9-character text");
  expect(
      "{\"text\": \"Ada lives\", \"spans\": "
      "[{\"start\": 3, \"end\": 3, \"label\": \"X\"}]}\n",
      "spans[0] [3, 3) is not a non-empty range");
  expect(
      "{\"text\": \"Ada Lovelace\", \"spans\": "
      "[{\"start\": 0, \"end\": 3, \"label\": \"X\"}, "
      "{\"start\": 2, \"end\": 12, \"label\": \"Y\"}]}\n",
      "spans[1] [2, 12) overlaps spans[0] [0, 3)");
  expect(
      "{\"text\": \"Ada  Lovelace\", \"spans\": "
      "[{\"start\": 3, \"end\": 5, \"label\": \"X\"}]}\n",
      "covers no word");
  expect("{\"text\": \"Ada\", \"spans\": [{\"start\": 0, \"end\": 3}]}\n",
         "spans[0] must be {\"start\": int");
  expect("{\"text\": \"Ada lives\"}\n", "missing field \"spans\"");
  expect("{\"tokens\": [\"a\"], \"tags\": [\"O\"]}\n{not json}\n",
         "train.jsonl:2: invalid JSON");
  expect("\n\n", "train.jsonl: no rows");
}

TEST(TokenRowsTest, CheckTagsNamesUnknownTags) {
  std::vector<TokenRow> rows(2);
  rows[0].tags = {"O", "B-PER"};
  rows[0].line = 3;
  rows[1].tags = {"B-ORG", "I-ORG", "B-MISC"};
  rows[1].line = 5;
  auto set = TagSet(rows, "t");
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(*set, (std::vector<std::string>{"B-MISC", "B-ORG", "B-PER", "I-ORG",
                                            "O"}));
  const absl::Status s = CheckTags(rows, {"B-PER", "O"}, "val.jsonl");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "val.jsonl:5: tags not in the training data: \"B-MISC\", "
            "\"B-ORG\", \"I-ORG\"");
  EXPECT_TRUE(CheckTags(rows, *set, "val.jsonl").ok());
}

TEST(TokenAlignmentTest, LabelOnFirstSubTokenOnly) {
  TempDir dir;
  auto tok = SmallTokenizer(dir);
  ASSERT_NE(tok, nullptr);
  // "London" splits into lon ##don; "?" and "." are words of their own.
  const std::string text = "Ada lives in London ?";
  const auto words = SplitWords(text);
  ASSERT_EQ(words.size(), 5u);
  const TokenizedText t = tok->Encode(text, std::nullopt, true);
  ASSERT_EQ(t.ids.size(), 8u);  // [CLS] ada lives in lon ##don ? [SEP]
  EXPECT_EQ(FirstSubTokenWords(t, words),
            (std::vector<int64_t>{-1, 0, 1, 2, 3, -1, 4, -1}));
  // Truncated: words past the limit have no first sub-token.
  const TokenizedText cut = tok->EncodeTruncated(text, std::nullopt, 5);
  EXPECT_EQ(FirstSubTokenWords(cut, words),
            (std::vector<int64_t>{-1, 0, 1, 2, -1}));
}

// ---- Question-answering data ----

TEST(QaReaderTest, SquadJsonV2) {
  TempDir dir;
  const std::string path = Write(dir, "dev.json", R"({"version": "v2.0",
  "data": [{"title": "T", "paragraphs": [{
    "context": "Ada lives in Paris. Zoë lives in London.",
    "qas": [
      {"id": "q1", "question": "Where does Ada live?",
       "answers": [{"text": "Paris", "answer_start": 13},
                   {"text": "Paris.", "answer_start": 13}],
       "is_impossible": false},
      {"id": "q2", "question": "Where does Zoë live?",
       "answers": [{"text": "London", "answer_start": 33}]},
      {"id": "q3", "question": "Where does Bob live?", "answers": [],
       "plausible_answers": [{"text": "Paris", "answer_start": 13}],
       "is_impossible": true}]}]}]})");
  auto ex = ReadQaExamples(path, "dev.json", QaColumns(), true);
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->size(), 3u);
  EXPECT_EQ((*ex)[0].id, "q1");
  ASSERT_EQ((*ex)[0].answers.size(), 2u);
  EXPECT_EQ((*ex)[0].answers[0].byte_start, 13);
  EXPECT_FALSE((*ex)[0].is_impossible);
  // "Zoë" before the answer: 33 code points, 34 bytes.
  EXPECT_EQ((*ex)[1].answers[0].start, 33);
  EXPECT_EQ((*ex)[1].answers[0].byte_start, 34);
  EXPECT_EQ((*ex)[1].answers[0].byte_end, 40);
  EXPECT_TRUE((*ex)[2].is_impossible);
  EXPECT_TRUE((*ex)[2].answers.empty());
}

TEST(QaReaderTest, JsonlBothAnswerForms) {
  TempDir dir;
  const std::string path = Write(
      dir, "qa.jsonl",
      R"({"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [0]}}
{"id": "x", "question": "What?", "context": "Ada wrote it.", "answers": [{"text": "it", "answer_start": 10}]}
{"question": "When?", "context": "Ada wrote it.", "answers": {"text": [], "answer_start": []}}
)");
  auto ex = ReadQaExamples(path, "qa.jsonl", QaColumns(), true);
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->size(), 3u);
  EXPECT_EQ((*ex)[0].id, "1");
  EXPECT_EQ((*ex)[0].answers[0].text, "Ada");
  EXPECT_EQ((*ex)[1].id, "x");
  EXPECT_EQ((*ex)[1].answers[0].byte_start, 10);
  EXPECT_TRUE((*ex)[2].is_impossible);
  // Prediction input needs no answers.
  const std::string bare = Write(
      dir, "bare.jsonl", R"({"question": "Who?", "context": "Ada wrote it."})");
  EXPECT_FALSE(ReadQaExamples(bare, "bare.jsonl", QaColumns(), true).ok());
  auto pred = ReadQaExamples(bare, "bare.jsonl", QaColumns(), false);
  ASSERT_TRUE(pred.ok()) << pred.status();
  EXPECT_TRUE((*pred)[0].answers.empty());
}

TEST(QaReaderTest, Errors) {
  auto expect = [](const std::string& name, const std::string& contents,
                   const std::string& want) {
    const absl::Status s = QaError(name, contents);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << contents;
    EXPECT_NE(s.message().find(want), std::string::npos)
        << s.message() << " lacks " << want;
  };
  expect(
      "a.jsonl",
      R"({"id": "q7", "question": "Who?", "context": "Ada wrote it.", "answers": [{"text": "Bob", "answer_start": 0}]})",
      "a.jsonl:1: (id \"q7\"): answer 0 \"Bob\" is not the context at "
      "answer_start 0 (which reads \"Ada\")");
  expect(
      "a.jsonl",
      "\n"
      R"({"question": "Who?", "context": "Ada", "answers": [{"text": "Ada", "answer_start": 5}]})",
      "a.jsonl:2: answer 0 answer_start 5 is outside the 3-character "
      "context");
  expect(
      "a.jsonl",
      R"({"question": "Who?", "context": "Ada", "answers": {"text": ["Ada"], "answer_start": []}})",
      "has 1 texts but 0 answer_start values");
  expect("a.jsonl", R"({"question": "Who?", "answers": []})",
         "a.jsonl:1: missing field \"context\"");
  expect("a.jsonl", R"({"question": "Who?", "context": "Ada"})",
         "missing field \"answers\"");
  expect("a.jsonl",
         R"({"id": 1, "question": "Who?", "context": "Ada", "answers": []}
{"id": 1, "question": "Who?", "context": "Ada", "answers": []})",
         "a.jsonl:2: duplicate question id \"1\"");
  expect(
      "d.json",
      R"({"data": [{"paragraphs": [{"context": "Ada wrote it.", "qas": [{"id": "q9", "question": "Who?", "answers": [{"text": "it", "answer_start": 3}]}]}]}]})",
      "d.json:1: data[0].paragraphs[0].qas[0] (id \"q9\"): answer 0 \"it\" "
      "is not the context");
  expect("d.json", R"({"data": [{"title": "no paragraphs"}]})",
         "data[0]: needs a \"paragraphs\" list");
  expect("d.json", "", "d.json: no questions");
}

TEST(QaReaderTest, RefusesHugeFilesWithoutReadingThem) {
  TempDir dir;
  const std::string path = dir.path() + "/huge.json";
  std::ofstream(path) << "{";
  // Sparse: no disk is used.
  std::filesystem::resize_file(path, kMaxSpanDataBytes + 1);
  const absl::Status s =
      ReadQaExamples(path, "huge.json", QaColumns(), true).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("huge.json: 536870913 bytes is over the 512 MiB"),
            std::string::npos)
      << s.message();
}

// ---- QA windows and post-processing ----

// "where" and ten number words, one token each: [CLS] where [SEP] is the
// prefix, [SEP] the suffix.
std::vector<QaExample> NumberExample(const std::string& answer,
                                     int64_t start_char) {
  QaExample ex;
  ex.id = "n";
  ex.question = "where";
  ex.context = "one two three four five six seven eight nine ten";
  QaAnswer a;
  a.text = answer;
  a.start = start_char;
  a.byte_start = start_char;
  a.byte_end = start_char + static_cast<int64_t>(answer.size());
  ex.answers.push_back(a);
  return {ex};
}

TEST(QaWindowsTest, AnswerAcrossWindowsIsFoundInTheWindowHoldingIt) {
  TempDir dir;
  auto tok = SmallTokenizer(dir);
  ASSERT_NE(tok, nullptr);
  // "four five" is context tokens 3 and 4 (characters 14..23).
  const auto ex = NumberExample("four five", 14);
  // 8 tokens: 4 specials and question, 4 context tokens per window, windows
  // overlapping by 2: context [0,4) [2,6) [4,8) [6,10).
  auto w = BuildQaFeatures(*tok, ex, 8, 2);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->features.size(), 4u);
  EXPECT_EQ(w->stride, 2);
  const QaFeature& f0 = w->features[0];
  EXPECT_EQ(f0.encoding.ids.size(), 8u);
  EXPECT_EQ(f0.encoding.ids[0], *tok->cls_id());
  EXPECT_EQ(f0.encoding.ids[1], *tok->TokenToId("where"));
  EXPECT_EQ(f0.encoding.ids[3], *tok->TokenToId("one"));
  EXPECT_EQ(f0.encoding.ids[7], *tok->sep_id());
  EXPECT_EQ(f0.encoding.type_ids[3], 1);
  EXPECT_EQ(f0.context_begin, 3);
  EXPECT_EQ(f0.context_end, 7);
  // Window 0 holds "four" but not "five": no answer; window 1 holds both
  // (context tokens 2..5, so "four" sits at 3 + 1); window 2 lacks "four".
  EXPECT_EQ(f0.start_position, 0);
  EXPECT_EQ(f0.end_position, 0);
  EXPECT_EQ(w->features[1].start_position, 4);
  EXPECT_EQ(w->features[1].end_position, 5);
  EXPECT_EQ(w->features[1].encoding.ids[4], *tok->TokenToId("four"));
  EXPECT_EQ(w->features[2].start_position, 0);
  EXPECT_EQ(w->features[3].start_position, 0);
  EXPECT_EQ(w->features[3].encoding.ids[6], *tok->TokenToId("ten"));
  for (const QaFeature& f : w->features) EXPECT_EQ(f.example, 0);

  // A stride as large as the room is clamped to half of it.
  auto wide = BuildQaFeatures(*tok, ex, 8, 128);
  ASSERT_TRUE(wide.ok());
  EXPECT_EQ(wide->stride, 2);
  EXPECT_EQ(wide->features.size(), 4u);
  // Room for the whole context: one window.
  auto one = BuildQaFeatures(*tok, ex, 64, 128);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->features.size(), 1u);
  EXPECT_EQ(one->features[0].start_position, 6);
  EXPECT_EQ(one->features[0].end_position, 7);
  // Too small for the specials and one context token.
  EXPECT_EQ(BuildQaFeatures(*tok, ex, 3, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(QaPostProcessTest, BestSpanOverWindowsAndNoAnswer) {
  TempDir dir;
  auto tok = SmallTokenizer(dir);
  ASSERT_NE(tok, nullptr);
  auto w = BuildQaFeatures(*tok, NumberExample("four five", 14), 8, 2);
  ASSERT_TRUE(w.ok());
  const QaExample ex = NumberExample("four five", 14)[0];
  std::vector<const QaFeature*> feats;
  for (const QaFeature& f : w->features) feats.push_back(&f);
  std::vector<std::vector<float>> s(4, std::vector<float>(8, 0)),
      e(4, std::vector<float>(8, 0));
  // Window 1: start at "four" (4), end at "five" (5): 3 + 2.
  s[1][4] = 3;
  e[1][5] = 2;
  // Window 0: a higher start on a question token and an end on [SEP], both
  // outside the context; a start at "four" (token 6) with an end at "one"
  // (token 3) scores 8 but ends before it starts.
  s[0][1] = 9;
  e[0][2] = 9;
  s[0][6] = 4;
  e[0][3] = 4;
  QaPostProcessing opt;
  QaPrediction p = PostProcessQa(ex, feats, s, e, opt);
  EXPECT_EQ(p.text, "four five");
  EXPECT_EQ(p.start, 14);
  EXPECT_EQ(p.end, 23);
  EXPECT_GT(p.score, 0);
  EXPECT_LT(p.score, 1);
  // The null score is the lowest start+end at token 0 over windows: 0 here,
  // 5 below the best span.
  EXPECT_DOUBLE_EQ(p.score_diff, -5);

  // max_answer_length 1 rules the two-token span out: the best single
  // token is "four" at window 0's end (4 + 0; "one" ties later).
  opt.max_answer_length = 1;
  p = PostProcessQa(ex, feats, s, e, opt);
  EXPECT_EQ(p.text, "four");

  // SQuAD v2: a null score above the best span gives "no answer".
  opt.max_answer_length = 30;
  opt.allow_no_answer = true;
  for (int f = 0; f < 4; ++f) {
    s[f][0] = 4;
    e[f][0] = 4;
  }
  p = PostProcessQa(ex, feats, s, e, opt);
  EXPECT_EQ(p.text, "");
  EXPECT_DOUBLE_EQ(p.score_diff, 3);
  // ... unless the threshold is above the difference.
  opt.null_score_diff_threshold = 3.5;
  p = PostProcessQa(ex, feats, s, e, opt);
  EXPECT_EQ(p.text, "four five");
  // Without v2 the null score is never chosen.
  opt.allow_no_answer = false;
  opt.null_score_diff_threshold = 0;
  p = PostProcessQa(ex, feats, s, e, opt);
  EXPECT_EQ(p.text, "four five");
}

// ---- The tasks, trained for a few steps on a tiny BERT ----

ModelConfig TinyBert(int64_t vocab_size) {
  ModelConfig c;
  c.pad_token_id = 0;
  c.vocab_size = vocab_size;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = 64;
  c.hidden_dropout = 0;
  c.attention_dropout = 0;
  c.classifier_dropout = 0;
  return c;
}

// Trains `task` (Prepared) on `model` with Adam for `steps` batches of 16.
void Train(const Task& task, TaskModelImpl& model, int steps) {
  torch::optim::Adam opt(model.parameters(), torch::optim::AdamOptions(5e-3));
  model.train();
  std::mt19937 rng(3);
  const torch::Device cpu(torch::kCPU);
  for (int step = 0; step < steps; ++step) {
    std::vector<size_t> idx;
    for (int i = 0; i < 16; ++i) idx.push_back(rng() % task.train_size());
    TaskBatch b = task.TrainBatch(idx, cpu, nullptr);
    torch::Tensor loss = task.Loss(model.forward(b.inputs), b);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  model.eval();
}

TEST(SpanTasksTrainTest, TokenClassificationLearnsFirstSubTokenTags) {
  TempDir dir;
  auto tok = SmallTokenizer(dir);
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> names = {"Ada", "Bob"};
  const std::vector<std::string> cities = {"Paris", "London", "Rome", "Berlin"};
  const std::vector<std::string> filler = {"one",   "two", "three", "four",
                                           "lives", "in",  "."};
  std::mt19937 rng(1);
  auto sentence = [&](std::vector<std::string>* w,
                      std::vector<std::string>* t) {
    for (int i = 0; i < 6; ++i) {
      const int kind = rng() % 4;
      if (kind == 0) {
        w->push_back(names[rng() % 2]);
        t->push_back("B-PER");
      } else if (kind == 1) {
        w->push_back(cities[rng() % 4]);
        t->push_back("B-LOC");
      } else {
        w->push_back(filler[rng() % filler.size()]);
        t->push_back("O");
      }
    }
  };
  {
    std::ofstream train(dir.path() + "/train.jsonl");
    for (int r = 0; r < 64; ++r) {
      std::vector<std::string> w, t;
      sentence(&w, &t);
      train << nlohmann::json{{"tokens", w}, {"tags", t}}.dump() << "\n";
    }
    // Validation as text with spans.
    std::ofstream val(dir.path() + "/val.jsonl");
    for (int r = 0; r < 16; ++r) {
      std::vector<std::string> w, t;
      sentence(&w, &t);
      std::string text;
      nlohmann::json spans = nlohmann::json::array();
      for (size_t i = 0; i < w.size(); ++i) {
        if (!text.empty()) text += ' ';
        if (t[i] != "O") {
          spans.push_back({{"start", text.size()},
                           {"end", text.size() + w[i].size()},
                           {"label", t[i].substr(2)}});
        }
        text += w[i];
      }
      val << nlohmann::json{{"text", text}, {"spans", spans}}.dump() << "\n";
    }
  }
  TrainParams params;
  ModelConfig config = TinyBert(tok->vocab_size());
  TaskContext ctx;
  ctx.params = &params;
  ctx.tokenizer = tok.get();
  ctx.model_config = &config;
  ctx.max_length = 32;
  auto task = CreateTask("token-classification");
  ASSERT_TRUE(task.ok()) << task.status();
  TaskData data{dir.path() + "/train.jsonl", "train.jsonl",
                dir.path() + "/val.jsonl", "val.jsonl"};
  ASSERT_TRUE((*task)->Prepare(data, ctx).ok());
  EXPECT_EQ((*task)->train_size(), 64);
  EXPECT_EQ((*task)->validation_size(), 16);
  EXPECT_EQ((*task)->default_metric(), "f1");
  (*task)->ConfigureModel(&config);
  EXPECT_EQ(config.id2label, (std::vector<std::string>{"B-LOC", "B-PER", "O"}));
  // "London" is two tokens: its tag sits on "lon" only.
  std::vector<size_t> all;
  for (size_t i = 0; i < 64; ++i) all.push_back(i);
  TaskBatch b = (*task)->TrainBatch(all, torch::Device(torch::kCPU), nullptr);
  const torch::Tensor ids = b.inputs.input_ids, labels = b.targets["labels"];
  const int64_t lon = *tok->TokenToId("lon"), don = *tok->TokenToId("##don");
  int64_t seen = 0;
  for (int64_t r = 0; r < ids.size(0); ++r) {
    EXPECT_EQ(labels[r][0].item<int64_t>(), -100);  // [CLS]
    for (int64_t t = 0; t < ids.size(1); ++t) {
      if (ids[r][t].item<int64_t>() == lon) {
        EXPECT_EQ(labels[r][t].item<int64_t>(), 0);  // B-LOC
        ++seen;
      }
      if (ids[r][t].item<int64_t>() == don) {
        EXPECT_EQ(labels[r][t].item<int64_t>(), -100);
      }
    }
  }
  EXPECT_GT(seen, 0);

  torch::manual_seed(0);
  auto model = CreateModel(config, (*task)->head());
  ASSERT_TRUE(model.ok()) << model.status();
  Train(**task, **model, 60);
  torch::NoGradGuard no_grad;
  auto metrics = (*task)->Evaluate(**model, 8, torch::Device(torch::kCPU));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  for (const char* k : {"precision", "recall", "f1", "accuracy", "loss"}) {
    EXPECT_TRUE(metrics->contains(k)) << k;
  }
  EXPECT_GE((*metrics)["f1"].get<double>(), 0.9) << metrics->dump();
  EXPECT_GE((*metrics)["accuracy"].get<double>(), 0.9) << metrics->dump();

  std::ofstream(dir.path() + "/in.jsonl")
      << "{\"text\": \"one Ada lives in London .\"}\n"
      << "{\"tokens\": [\"Bob\", \"two\", \"Rome\"]}\n";
  auto rows = (*task)->Predict(**model, dir.path() + "/in.jsonl", "in.jsonl",
                               ctx, torch::Device(torch::kCPU));
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0]["entities"],
            nlohmann::json::parse(
                R"([{"label": "PER", "start": 4, "end": 7, "text": "Ada"},
                    {"label": "LOC", "start": 17, "end": 23,
                     "text": "London"}])"))
      << (*rows)[0].dump();
  EXPECT_EQ((*rows)[1]["text"], "Bob two Rome");
  EXPECT_EQ((*rows)[1]["tags"],
            nlohmann::json::parse(R"(["B-PER", "O", "B-LOC"])"));
  EXPECT_EQ((*rows)[1]["entities"][1]["start"], 8);

  // Validation tags that training lacks are named.
  std::ofstream(dir.path() + "/bad.jsonl")
      << "{\"tokens\": [\"Ada\"], \"tags\": [\"B-ORG\"]}\n";
  auto again = CreateTask("token-classification");
  TaskData bad{dir.path() + "/train.jsonl", "train.jsonl",
               dir.path() + "/bad.jsonl", "bad.jsonl"};
  const absl::Status s = (*again)->Prepare(bad, ctx);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("bad.jsonl:1: tags not in the training data: "
                             "\"B-ORG\""),
            std::string::npos)
      << s.message();
}

TEST(SpanTasksTrainTest, QuestionAnsweringLearnsSpansAcrossWindows) {
  TempDir dir;
  auto tok = SmallTokenizer(dir);
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> cities = {"paris", "rome", "berlin"};
  const std::vector<std::string> filler = {"one",  "two", "three", "four",
                                           "five", "six", "seven", "eight"};
  std::mt19937 rng(2);
  auto write = [&](const std::string& path, int rows) {
    std::ofstream out(path);
    for (int r = 0; r < rows; ++r) {
      std::string context;
      const int before = rng() % 12;
      for (int i = 0; i < before; ++i) context += filler[rng() % 8] + " ";
      context += "ada lives in ";
      const int64_t start = context.size();
      const std::string city = cities[rng() % 3];
      context += city + " .";
      for (int i = before; i < 12; ++i) context += " " + filler[rng() % 8];
      out << nlohmann::json{{"question", "where does ada live ?"},
                            {"context", context},
                            {"answers",
                             {{"text", {city}}, {"answer_start", {start}}}}}
                 .dump()
          << "\n";
    }
  };
  write(dir.path() + "/train.jsonl", 64);
  write(dir.path() + "/val.jsonl", 16);
  TrainParams params;
  params.doc_stride = 4;
  ModelConfig config = TinyBert(tok->vocab_size());
  TaskContext ctx;
  ctx.params = &params;
  ctx.tokenizer = tok.get();
  ctx.model_config = &config;
  ctx.max_length = 16;  // 8 specials and question tokens, 8 of context.
  auto task = CreateTask("question-answering");
  ASSERT_TRUE(task.ok()) << task.status();
  TaskData data{dir.path() + "/train.jsonl", "train.jsonl",
                dir.path() + "/val.jsonl", "val.jsonl"};
  ASSERT_TRUE((*task)->Prepare(data, ctx).ok());
  // 17 context tokens in windows of 8 advancing by 4: 4 windows each.
  EXPECT_EQ((*task)->train_rows(), 64);
  EXPECT_EQ((*task)->train_size(), 64 * 4);
  EXPECT_EQ((*task)->validation_size(), 16 * 4);
  (*task)->ConfigureModel(&config);
  // Recorded for predictions: this model never learnt "no answer".
  EXPECT_EQ(config.original["version_2_with_negative"], false);
  torch::manual_seed(0);
  auto model = CreateModel(config, (*task)->head());
  ASSERT_TRUE(model.ok()) << model.status();
  Train(**task, **model, 150);
  torch::NoGradGuard no_grad;
  auto metrics = (*task)->Evaluate(**model, 8, torch::Device(torch::kCPU));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_FALSE(metrics->contains("HasAns_f1"));  // No unanswerable ones.
  EXPECT_GE((*metrics)["exact_match"].get<double>(), 0.75) << metrics->dump();
  EXPECT_GE((*metrics)["f1"].get<double>(), 0.75) << metrics->dump();

  std::ofstream(dir.path() + "/in.jsonl")
      << nlohmann::json{{"question", "where does ada live ?"},
                        {"context",
                         "one two three four five six ada lives "
                         "in rome . seven eight one two"}}
             .dump()
      << "\n";
  auto rows = (*task)->Predict(**model, dir.path() + "/in.jsonl", "in.jsonl",
                               ctx, torch::Device(torch::kCPU));
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0]["answer"], "rome") << (*rows)[0].dump();
  EXPECT_EQ((*rows)[0]["start"], 41);
  EXPECT_EQ((*rows)[0]["end"], 45);
  EXPECT_GT((*rows)[0]["score"].get<double>(), 0);
}

}  // namespace
}  // namespace lathe
