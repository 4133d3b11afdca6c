#include "worker/tokenizers/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace lathe {
namespace {

namespace fs = std::filesystem;

std::string TestData(const std::string& name) {
  return std::string(LATHE_TOKENIZER_TESTDATA) + "/" + name;
}

// A fresh directory holding `files` (name -> contents).
std::string MakeDir(
    const std::string& name,
    const std::vector<std::pair<std::string, std::string>>& files) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("tok_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& [f, contents] : files) {
    std::ofstream(dir / f) << contents;
  }
  return dir.string();
}

const char kBertVocab[] =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n,\n!\ncafe\n##s\n"
    "un\n##aff\n##able\n\xe4\xbd\xa0\n\xe5\xa5\xbd\n";

TEST(TokenizerTest, VocabTxtEncodesWithOffsetsAndDecodes) {
  auto tok =
      Tokenizer::FromDirectory(MakeDir("bert", {{"vocab.txt", kBertVocab}}));
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "Café" is lowercased and stripped to "cafe"; offsets point at the
  // original bytes (é is two bytes).
  const std::string text =
      "Hello, Caf\xc3\xa9s unaffable \xe4\xbd\xa0\xe5\xa5\xbd!";
  TokenizedText t = (*tok)->Encode(text, std::nullopt, true);
  const std::vector<int64_t> want = {2, 5, 7, 9, 10, 11, 12, 13, 14, 15, 8, 3};
  EXPECT_EQ(t.ids, want);
  ASSERT_EQ(t.offsets.size(), want.size());
  EXPECT_EQ(t.offsets[0], std::make_pair(int64_t{0}, int64_t{0}));
  EXPECT_EQ(t.offsets[1], std::make_pair(int64_t{0}, int64_t{5}));
  EXPECT_EQ(t.offsets[3], std::make_pair(int64_t{7}, int64_t{12}));   // Café
  EXPECT_EQ(t.offsets[4], std::make_pair(int64_t{12}, int64_t{13}));  // s
  EXPECT_EQ(t.offsets[8], std::make_pair(int64_t{24}, int64_t{27}));  // 你
  EXPECT_EQ(t.special_mask.front(), 1);
  EXPECT_EQ(t.special_mask[1], 0);
  const auto chars = ByteToCharOffsets(text, t.offsets);
  EXPECT_EQ(chars[3], std::make_pair(int64_t{7}, int64_t{11}));
  EXPECT_EQ(chars[8], std::make_pair(int64_t{23}, int64_t{24}));
  EXPECT_EQ((*tok)->Decode(t.ids, true), "hello, cafes unaffable 你 好!");
  EXPECT_EQ((*tok)->cls_id(), 2);
  EXPECT_EQ((*tok)->sep_id(), 3);
  EXPECT_EQ((*tok)->pad_id(), 0);
  EXPECT_EQ((*tok)->mask_id(), 4);
  EXPECT_EQ((*tok)->vocab_size(), 16);
}

TEST(TokenizerTest, PairAndTruncation) {
  auto tok =
      Tokenizer::FromDirectory(MakeDir("bert2", {{"vocab.txt", kBertVocab}}));
  ASSERT_TRUE(tok.ok()) << tok.status();
  TokenizedText t =
      (*tok)->Encode("hello world", std::string_view("cafe"), true);
  EXPECT_EQ(t.ids, (std::vector<int64_t>{2, 5, 6, 3, 9, 3}));
  EXPECT_EQ(t.type_ids, (std::vector<int64_t>{0, 0, 0, 0, 1, 1}));
  TokenizedText tr = (*tok)->EncodeTruncated("hello world hello world",
                                             std::string_view("cafe"), 6);
  EXPECT_EQ(tr.ids, (std::vector<int64_t>{2, 5, 6, 3, 9, 3}));
}

TEST(TokenizerTest, AstralCjkCharactersAreSeparateWords) {
  auto tok =
      Tokenizer::FromDirectory(MakeDir("bert3", {{"vocab.txt", kBertVocab}}));
  ASSERT_TRUE(tok.ok()) << tok.status();
  // U+20000 and U+20001 (CJK extension B) each become their own [UNK].
  TokenizedText t =
      (*tok)->Encode("\xf0\xa0\x80\x80\xf0\xa0\x80\x81", std::nullopt, false);
  EXPECT_EQ(t.ids, (std::vector<int64_t>{1, 1}));
}

TEST(TokenizerTest, ByteFallbackOffsetsAndDecoding) {
  auto tok = Tokenizer::FromDirectory(TestData("bpe_byte_fallback"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "ü" is not in the vocab: two byte tokens, both covering the character.
  const std::string text = "hello \xc3\xbc";
  TokenizedText t = (*tok)->Encode(text, std::nullopt, false);
  ASSERT_GE(t.ids.size(), 3u);
  const size_t n = t.ids.size();
  EXPECT_EQ(*(*tok)->IdToToken(t.ids[n - 2]), "<0xC3>");
  EXPECT_EQ(*(*tok)->IdToToken(t.ids[n - 1]), "<0xBC>");
  EXPECT_EQ(t.offsets[n - 1], std::make_pair(int64_t{6}, int64_t{8}));
  EXPECT_EQ((*tok)->Decode(t.ids, true), text);
}

TEST(TokenizerTest, ByteLevelLeadingSpaceOffsets) {
  auto tok = Tokenizer::FromDirectory(TestData("gpt2_small"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  TokenizedText t = (*tok)->Encode("ab  ab", std::nullopt, true);
  // "ab", " " (the space before the last word stays alone), " ab".
  ASSERT_EQ(t.ids.size(), 3u);
  EXPECT_EQ(*(*tok)->IdToToken(t.ids[2]),
            "\xc4\xa0"
            "ab");
  EXPECT_EQ(t.offsets[0], std::make_pair(int64_t{0}, int64_t{2}));
  // A whitespace-only token trims to an empty span after it.
  EXPECT_EQ(t.offsets[1], std::make_pair(int64_t{3}, int64_t{3}));
  // trim_offsets drops the leading space from " ab".
  EXPECT_EQ(t.offsets[2], std::make_pair(int64_t{4}, int64_t{6}));
  EXPECT_EQ((*tok)->Decode(t.ids, false), "ab  ab");
}

TEST(TokenizerTest, UnigramViterbi) {
  auto tok = Tokenizer::FromDirectory(TestData("unigram_metaspace"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  TokenizedText t = (*tok)->Encode("Hello world", std::nullopt, true);
  std::vector<std::string> pieces;
  for (int64_t id : t.ids) pieces.push_back(*(*tok)->IdToToken(id));
  EXPECT_EQ(pieces, (std::vector<std::string>{"\xe2\x96\x81hello",
                                              "\xe2\x96\x81world", "</s>"}));
  EXPECT_EQ((*tok)->Decode(t.ids, true), "hello world");
}

TEST(TokenizerTest, ByteToCharOffsetsRoundsDown) {
  const std::string text =
      "a\xf0\x9f\xa4\x97"
      "b";  // a 🤗 b
  auto c = ByteToCharOffsets(text, {{0, 1}, {1, 5}, {3, 6}, {5, 6}});
  EXPECT_EQ(c[0], std::make_pair(int64_t{0}, int64_t{1}));
  EXPECT_EQ(c[1], std::make_pair(int64_t{1}, int64_t{2}));
  EXPECT_EQ(c[2], std::make_pair(int64_t{1}, int64_t{3}));
  EXPECT_EQ(c[3], std::make_pair(int64_t{2}, int64_t{3}));
}

void ExpectInvalid(const std::string& name, const std::string& json,
                   const std::string& want_in_message) {
  const std::string dir = MakeDir(name, {{"tokenizer.json", json}});
  auto tok = Tokenizer::FromDirectory(dir);
  ASSERT_FALSE(tok.ok()) << name;
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << name;
  EXPECT_NE(tok.status().message().find("tokenizer.json"), std::string::npos)
      << tok.status();
  EXPECT_NE(tok.status().message().find(want_in_message), std::string::npos)
      << tok.status();
}

TEST(TokenizerTest, MalformedFilesGiveClearErrors) {
  ExpectInvalid("badjson", "{\"model\": ", "not valid JSON");
  ExpectInvalid("nomodel", "{\"normalizer\": null}", "model: missing");
  ExpectInvalid("badtype", R"({"model": {"type": "Bogus"}})",
                "model.type: unsupported model \"Bogus\"");
  ExpectInvalid("badnorm",
                R"({"normalizer": {"type": "Nope"},
                    "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}})",
                "normalizer.type: unsupported normalizer");
  ExpectInvalid("badmerge",
                R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
                              "merges": ["a b", "a c"]}})",
                "model.merges[1]: merge refers to unknown token \"c\"");
  ExpectInvalid("novocab", R"({"model": {"type": "BPE", "merges": []}})",
                "model.vocab: missing");
  ExpectInvalid(
      "badregex",
      R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(("},
                                      "behavior": "Isolated"},
                    "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}})",
      "pre_tokenizer.pattern.Regex: bad regular expression");
  ExpectInvalid("badtemplate",
                R"({"post_processor": {"type": "TemplateProcessing",
                      "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}],
                      "pair": [], "special_tokens": {}},
                    "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}})",
                "post_processor.single[0]: special token \"<x>\"");
  auto missing = Tokenizer::FromDirectory(MakeDir("empty", {}));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizerTest, CopyFilesToRoundTrips) {
  auto tok = Tokenizer::FromDirectory(TestData("metaspace_bpe"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string dest = MakeDir("copy", {});
  ASSERT_TRUE((*tok)->CopyFilesTo(dest).ok());
  auto again = Tokenizer::FromDirectory(dest);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->Encode("the and spa", std::nullopt, true).ids,
            (*tok)->Encode("the and spa", std::nullopt, true).ids);
}

}  // namespace
}  // namespace lathe
