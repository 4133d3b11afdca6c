// BERT WordPiece through the generic Tokenizer: greedy longest-match-first
// pieces, longest-first truncation, and the real bert-base-uncased ids.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "worker/tokenizers/tokenizer.h"

namespace lathe {
namespace {

std::unique_ptr<Tokenizer> SmallTokenizer() {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "wordpiece_small";
  std::filesystem::create_directories(dir);
  {
    std::ofstream vocab(dir / "vocab.txt");
    for (const char* t :
         {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",       "hello", ",",
          "world", "!",     "un",    "##aff", "##able",       "cafe",  "the",
          "a",     "b",     "c",     "d",     "\xe4\xb8\xad", "##s",   "run",
          "."}) {
      vocab << t << "\n";
    }
  }
  auto tok = Tokenizer::FromDirectory(dir.string());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

std::vector<int64_t> Ids(const Tokenizer& tok, const std::string& text) {
  return tok.Encode(text, std::nullopt, /*add_special_tokens=*/false).ids;
}

TEST(WordPieceTest, GreedyLongestMatchFirstAndUnknownWords) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(Ids(*tok, "unaffable"), (std::vector<int64_t>{9, 10, 11}));
  EXPECT_EQ(Ids(*tok, "runs xyz"), (std::vector<int64_t>{20, 19, 1}));
  // A word over 100 characters is one unknown token.
  EXPECT_EQ(Ids(*tok, std::string(101, 'a')), (std::vector<int64_t>{1}));
  // Lowercased, accents stripped, control characters dropped, CJK split.
  EXPECT_EQ(Ids(*tok,
                "Caf\xc3\xa9\x01  the\xe4\xb8\xad"
                "A"),
            (std::vector<int64_t>{12, 13, 18, 14}));
}

TEST(WordPieceTest, SpecialTokensTypesAndLongestFirstTruncation) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  TokenizedText p = tok->Encode("hello", std::string_view("world !"), true);
  EXPECT_EQ(p.ids, (std::vector<int64_t>{2, 5, 3, 7, 8, 3}));
  EXPECT_EQ(p.type_ids, (std::vector<int64_t>{0, 0, 0, 1, 1, 1}));
  // a: 4 tokens, b: 2 tokens, budget 8 - 3 = 5: one goes from a.
  EXPECT_EQ(
      tok->EncodeTruncated("a b c d", std::string_view("hello world"), 8).ids,
      (std::vector<int64_t>{2, 14, 15, 16, 3, 5, 7, 3}));
  // Budget 3: both are cut, to half the budget, the longer (a) keeping
  // the odd token.
  EXPECT_EQ(
      tok->EncodeTruncated("a b c d", std::string_view("hello world"), 6).ids,
      (std::vector<int64_t>{2, 14, 15, 3, 5, 3}));
  // The other way round, the longer pair keeps the odd token.
  EXPECT_EQ(
      tok->EncodeTruncated("a b", std::string_view("hello world b c"), 6).ids,
      (std::vector<int64_t>{2, 14, 3, 5, 7, 3}));
  EXPECT_EQ(tok->EncodeTruncated("a b c d", std::nullopt, 4).ids,
            (std::vector<int64_t>{2, 14, 15, 3}));
}

TEST(WordPieceTest, RealBertBaseUncasedVocabulary) {
  std::string dir;
  if (const char* env = std::getenv("LATHE_ASSETS_DIR"); env && *env) {
    dir = std::string(env) + "/bert-base-uncased";
  }
  for (const char* candidate :
       {"build/assets/bert-base-uncased", "../build/assets/bert-base-uncased",
        "../../assets/bert-base-uncased", "../assets/bert-base-uncased"}) {
    if (!dir.empty() && std::filesystem::exists(dir + "/vocab.txt")) break;
    dir = candidate;
  }
  if (!std::filesystem::exists(dir + "/vocab.txt")) {
    GTEST_SKIP() << "bert-base-uncased vocab.txt not prepared (./run setup)";
  }
  auto tok = Tokenizer::FromDirectory(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 30522);
  EXPECT_EQ((*tok)->Encode("Hello, world!", std::nullopt, true).ids,
            (std::vector<int64_t>{101, 7592, 1010, 2088, 999, 102}));
  EXPECT_EQ((*tok)->Encode("unaffable", std::nullopt, true).ids,
            (std::vector<int64_t>{101, 14477, 20961, 3468, 102}));
  EXPECT_EQ((*tok)->pad_id(), 0);
  EXPECT_EQ((*tok)->unk_id(), 100);
}

}  // namespace
}  // namespace lathe
