#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "worker/tokenizers/wordpiece.h"

namespace lathe {
namespace {

std::unique_ptr<WordPieceTokenizer> SmallTokenizer() {
  auto tok = WordPieceTokenizer::FromVocab(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",       "hello", ",",
       "world", "!",     "un",    "##aff", "##able",       "cafe",  "the",
       "a",     "b",     "c",     "d",     "\xe4\xb8\xad", "##s",   "run",
       "."});
  EXPECT_TRUE(tok.ok()) << tok.status();
  return std::move(tok).value();
}

TEST(WordPieceTest, BasicTokenizeLowercasesStripsAccentsSplitsPunctuation) {
  auto tok = SmallTokenizer();
  EXPECT_EQ(tok->BasicTokenize("Hello, WORLD!"),
            (std::vector<std::string>{"hello", ",", "world", "!"}));
  // "Café" -> "cafe" (NFD, combining acute removed); control chars dropped;
  // CJK ideographs become their own words.
  EXPECT_EQ(tok->BasicTokenize("Caf\xc3\xa9\x01  x\xe4\xb8\xadY"),
            (std::vector<std::string>{"cafe", "x", "\xe4\xb8\xad", "y"}));
  // Unicode punctuation (em dash) splits too; tabs and newlines are spaces.
  EXPECT_EQ(tok->BasicTokenize("a\xe2\x80\x94"
                               "b\tc\nd"),
            (std::vector<std::string>{"a", "\xe2\x80\x94", "b", "c", "d"}));
}

TEST(WordPieceTest, GreedyLongestMatchFirst) {
  auto tok = SmallTokenizer();
  EXPECT_EQ(tok->Tokenize("unaffable"),
            (std::vector<std::string>{"un", "##aff", "##able"}));
  EXPECT_EQ(tok->Tokenize("runs xyz"),
            (std::vector<std::string>{"run", "##s", "[UNK]"}));
  EXPECT_EQ(tok->Tokenize(std::string(101, 'a')),
            (std::vector<std::string>{"[UNK]"}));
}

TEST(WordPieceTest, EncodeAddsSpecialTokensAndTypes) {
  auto tok = SmallTokenizer();
  Encoding e = tok->Encode("hello world", std::nullopt, 16);
  EXPECT_EQ(e.input_ids, (std::vector<int64_t>{2, 5, 7, 3}));
  EXPECT_EQ(e.token_type_ids, (std::vector<int64_t>{0, 0, 0, 0}));
  Encoding p = tok->Encode("hello", std::string_view("world !"), 16);
  EXPECT_EQ(p.input_ids, (std::vector<int64_t>{2, 5, 3, 7, 8, 3}));
  EXPECT_EQ(p.token_type_ids, (std::vector<int64_t>{0, 0, 0, 1, 1, 1}));
}

TEST(WordPieceTest, TruncatesLongestFirst) {
  auto tok = SmallTokenizer();
  // a: 4 tokens, b: 2 tokens, budget 8 - 3 = 5: drop one from a.
  Encoding e = tok->Encode("a b c d", std::string_view("hello world"), 8);
  EXPECT_EQ(e.input_ids, (std::vector<int64_t>{2, 14, 15, 16, 3, 5, 7, 3}));
  // Budget 3: a loses to 2, then they alternate from b (equal length, b pops).
  Encoding f = tok->Encode("a b c d", std::string_view("hello world"), 6);
  EXPECT_EQ(f.input_ids.size(), 6u);
  EXPECT_EQ(f.input_ids, (std::vector<int64_t>{2, 14, 15, 3, 5, 3}));
  Encoding g = tok->Encode("a b c d", std::nullopt, 4);
  EXPECT_EQ(g.input_ids, (std::vector<int64_t>{2, 14, 15, 3}));
}

TEST(WordPieceTest, VocabWithoutSpecialsIsRejected) {
  auto tok = WordPieceTokenizer::FromVocab({"[PAD]", "a"});
  EXPECT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WordPieceTest, RealBertBaseUncasedVocab) {
  std::string path;
  for (const char* candidate :
       {"build/assets/bert-base-uncased/vocab.txt",
        "../build/assets/bert-base-uncased/vocab.txt",
        "../../build/assets/bert-base-uncased/vocab.txt",
        "/work/main/build/assets/bert-base-uncased/vocab.txt"}) {
    if (std::filesystem::exists(candidate)) {
      path = candidate;
      break;
    }
  }
  if (const char* env = std::getenv("LATHE_ASSETS_DIR"); path.empty() && env) {
    const std::string p = std::string(env) + "/bert-base-uncased/vocab.txt";
    if (std::filesystem::exists(p)) path = p;
  }
  if (path.empty()) GTEST_SKIP() << "bert-base-uncased vocab.txt not prepared";
  auto tok = WordPieceTokenizer::FromVocabFile(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 30522);
  EXPECT_EQ((*tok)->Encode("Hello, world!", std::nullopt, 512).input_ids,
            (std::vector<int64_t>{101, 7592, 1010, 2088, 999, 102}));
  EXPECT_EQ((*tok)->Encode("unaffable", std::nullopt, 512).input_ids,
            (std::vector<int64_t>{101, 14477, 20961, 3468, 102}));
  EXPECT_EQ((*tok)->pad_id(), 0);
  EXPECT_EQ((*tok)->unk_id(), 100);
}

}  // namespace
}  // namespace lathe
