// Audio reading (libsndfile, libsoxr) and the speech metrics (WER, CER),
// against files written here and hand-computed values.
#include <gtest/gtest.h>
#include <sndfile.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/support/temp_dir.h"
#include "worker/models/model_config.h"
#include "worker/tasks/audio_data.h"
#include "worker/tasks/ctc_text_data.h"
#include "worker/tasks/speech_metrics.h"

namespace lathe {
namespace {

constexpr double kPi = 3.14159265358979323846;

// A sine of `hz` at amplitude 0.5 in every channel.
void WriteSine(const std::string& path, int format, int rate, int channels,
               double seconds, double hz) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  const int64_t frames = static_cast<int64_t>(seconds * rate);
  std::vector<float> data(static_cast<size_t>(frames * channels));
  for (int64_t i = 0; i < frames; ++i) {
    for (int c = 0; c < channels; ++c) {
      data[static_cast<size_t>(i * channels + c)] =
          static_cast<float>(0.5 * std::sin(2 * kPi * hz * i / rate));
    }
  }
  ASSERT_EQ(sf_writef_float(f, data.data(), frames), frames);
  sf_close(f);
}

// Upward zero crossings per second.
double Frequency(const std::vector<float>& x, int rate) {
  int crossings = 0;
  for (size_t i = 1; i < x.size(); ++i) crossings += x[i - 1] < 0 && x[i] >= 0;
  return crossings * static_cast<double>(rate) / static_cast<double>(x.size());
}

TEST(AudioTest, ReadsWavMixesDownAndResamples) {
  TempDir dir;
  const std::string wav = dir.path() + "/tone.wav";
  WriteSine(wav, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 2, 0.5, 440);
  AudioOptions options;
  options.sampling_rate = 16000;
  auto audio = ReadAudio(wav, "tone.wav", options);
  ASSERT_TRUE(audio.ok()) << audio.status();
  // 0.5 s at 16 kHz, the tone's pitch and level kept.
  EXPECT_NEAR(static_cast<double>(audio->size()), 8000, 16);
  EXPECT_NEAR(Frequency(*audio, 16000), 440, 10);
  float peak = 0;
  for (size_t i = 400; i + 400 < audio->size(); ++i) {
    peak = std::max(peak, std::fabs((*audio)[i]));
  }
  EXPECT_NEAR(peak, 0.5, 0.02);
}

TEST(AudioTest, ReadsFlacAtItsOwnRateUnchanged) {
  TempDir dir;
  const std::string flac = dir.path() + "/tone.flac";
  WriteSine(flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, 0.25, 300);
  auto audio = ReadAudio(flac, "tone.flac", AudioOptions{});
  ASSERT_TRUE(audio.ok()) << audio.status();
  ASSERT_EQ(audio->size(), 4000u);
  for (size_t i = 0; i < audio->size(); i += 97) {
    EXPECT_NEAR((*audio)[i], 0.5 * std::sin(2 * kPi * 300 * i / 16000.0),
                1.0 / 16384);
  }
}

TEST(AudioTest, ErrorsNameTheFileAndTheLimit) {
  TempDir dir;
  const std::string wav = dir.path() + "/long.wav";
  WriteSine(wav, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 2.0, 200);
  AudioOptions options;
  options.max_seconds = 1;
  auto long_file = ReadAudio(wav, "clips/long.wav", options);
  ASSERT_FALSE(long_file.ok());
  EXPECT_EQ(long_file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(long_file.status().message(),
                                "clips/long.wav: 2.0 s of audio; the limit "
                                "is 1 s"))
      << long_file.status();
  std::ofstream(dir.path() + "/notes.wav") << "not audio at all";
  auto text = ReadAudio(dir.path() + "/notes.wav", "notes.wav", {});
  ASSERT_FALSE(text.ok());
  EXPECT_TRUE(absl::StartsWith(text.status().message(), "notes.wav: not audio"))
      << text.status();
  auto missing = ReadAudio(dir.path() + "/none.wav", "none.wav", {});
  EXPECT_TRUE(absl::StartsWith(missing.status().message(), "none.wav: no such"))
      << missing.status();
}

TEST(AudioTest, NormalizeGivesZeroMeanUnitVariance) {
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  NormalizeAudio(&x);
  double mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= x.size();
  for (float v : x) var += (v - mean) * (v - mean);
  var /= x.size();
  EXPECT_NEAR(mean, 0, 1e-6);
  EXPECT_NEAR(var, 1, 1e-5);
  // (1 - 4.5) / sqrt(5.25 + 1e-7)
  EXPECT_NEAR(x[0], -3.5 / std::sqrt(5.25 + 1e-7), 1e-6);
}

TEST(AudioTest, DatasetsAreClassFoldersOrMetadataRows) {
  TempDir dir;
  const std::string root = dir.path() + "/words";
  std::filesystem::create_directories(root + "/yes");
  std::filesystem::create_directories(root + "/no");
  WriteSine(root + "/yes/b.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, 0.2,
            300);
  WriteSine(root + "/yes/a.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1,
            0.1, 300);
  WriteSine(root + "/no/c.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 0.3,
            500);
  std::ofstream(root + "/no/readme.txt") << "not a clip";
  AudioReadOptions options;
  options.label_column = "label";
  auto rows = ReadAudioExamples(root, "words", options);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  // By path; labels from the folders; every clip at 16 kHz, normalised.
  EXPECT_EQ((*rows)[0].audio, "no/c.wav");
  EXPECT_EQ((*rows)[0].label, "no");
  EXPECT_EQ((*rows)[1].audio, "yes/a.flac");
  EXPECT_EQ((*rows)[2].label, "yes");
  EXPECT_NEAR(static_cast<double>((*rows)[2].samples.size()), 3200, 16);
  double sum = 0;
  for (float x : (*rows)[0].samples) sum += x;
  EXPECT_NEAR(sum / (*rows)[0].samples.size(), 0, 1e-4);
  // The same files read again give the same samples.
  auto again = ReadAudioExamples(root, "words", options);
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < rows->size(); ++i) {
    EXPECT_EQ((*again)[i].samples, (*rows)[i].samples) << i;
  }

  // metadata.jsonl rows name their clips inside the folder.
  std::ofstream(root + "/metadata.jsonl")
      << "{\"audio\": \"yes/b.wav\", \"text\": \"yes please\"}\n\n"
      << "{\"audio\": \"no/c.wav\", \"text\": \"no\"}\n";
  AudioReadOptions speech;
  speech.text_column = "text";
  auto phrases = ReadAudioExamples(root, "words", speech);
  ASSERT_TRUE(phrases.ok()) << phrases.status();
  ASSERT_EQ(phrases->size(), 2u);
  EXPECT_EQ((*phrases)[0].text, "yes please");
  EXPECT_EQ((*phrases)[1].audio, "no/c.wav");

  // A path out of the folder, a missing clip, a missing transcript.
  std::ofstream(root + "/metadata.jsonl")
      << "{\"audio\": \"yes/b.wav\", \"text\": \"fine\"}\n"
      << "{\"audio\": \"../../etc/passwd\", \"text\": \"x\"}\n";
  auto escape = ReadAudioExamples(root, "words", speech);
  ASSERT_FALSE(escape.ok());
  EXPECT_TRUE(
      absl::StartsWith(escape.status().message(), "words/metadata.jsonl:2: "))
      << escape.status();
  std::ofstream(root + "/metadata.jsonl")
      << "{\"audio\": \"yes/none.wav\", \"text\": \"x\"}\n";
  EXPECT_TRUE(absl::StrContains(
      ReadAudioExamples(root, "words", speech).status().message(),
      "words/yes/none.wav: no such audio file"));
  std::ofstream(root + "/metadata.jsonl") << "{\"audio\": \"yes/b.wav\"}\n";
  EXPECT_TRUE(absl::StrContains(
      ReadAudioExamples(root, "words", speech).status().message(),
      "words/metadata.jsonl:1: \"text\" is missing"));
  // Prediction input may lack transcripts and labels.
  speech.labels_optional = true;
  EXPECT_TRUE(ReadAudioExamples(root, "words", speech).ok());
}

TEST(AudioTest, ALooseClipNeedsAClassFolder) {
  TempDir dir;
  WriteSine(dir.path() + "/loose.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000,
            1, 0.1, 300);
  AudioReadOptions options;
  options.label_column = "label";
  auto rows = ReadAudioExamples(dir.path(), "set", options);
  ASSERT_FALSE(rows.ok());
  EXPECT_TRUE(absl::StartsWith(rows.status().message(), "set/loose.wav: "))
      << rows.status();
  options.labels_optional = true;
  auto loose = ReadAudioExamples(dir.path(), "set", options);
  ASSERT_TRUE(loose.ok()) << loose.status();
  EXPECT_EQ((*loose)[0].label, "");
  EXPECT_FALSE(ReadAudioExamples(dir.path() + "/none", "none", options).ok());
}

TEST(SpeechMetricsTest, EditDistanceCountsEachKindOfError) {
  EXPECT_EQ(EditDistance(U"kitten", U"sitting"), 3);
  EXPECT_EQ(EditDistance(U"", U"abc"), 3);
  EXPECT_EQ(EditDistance(U"abc", U""), 3);
  EXPECT_EQ(EditDistance(U"same", U"same"), 0);
}

TEST(SpeechMetricsTest, WerAndCerAreCorpusLevel) {
  SpeechErrorRates rates;
  // One substitution (sat -> sit) and one deletion (the): 2 of 6 words.
  // Characters: 1 substitution and "the " deleted: 5 of 22.
  rates.Add("the cat sat on the mat", "the cat sit on mat");
  EXPECT_DOUBLE_EQ(rates.wer(), 2.0 / 6);
  EXPECT_DOUBLE_EQ(rates.cer(), 5.0 / 22);
  // A perfect utterance adds words, not errors; an insertion adds an
  // error: totals over totals, not a mean of per-utterance rates.
  rates.Add("hello world", "hello world");
  rates.Add("a", "a b");
  EXPECT_EQ(rates.word_errors(), 3);
  EXPECT_EQ(rates.words(), 9);
  EXPECT_DOUBLE_EQ(rates.wer(), 3.0 / 9);
  // "a" -> "a b": two characters inserted (" b").
  EXPECT_EQ(rates.char_errors(), 7);
  EXPECT_EQ(rates.chars(), 22 + 11 + 1);
}

TEST(SpeechMetricsTest, WhitespaceAndUnicode) {
  SpeechErrorRates rates;
  rates.Add("  two   words ", "two words");
  EXPECT_EQ(rates.word_errors(), 0);
  EXPECT_EQ(rates.char_errors(), 0);
  SpeechErrorRates accents;
  accents.Add("café", "cafe");  // One code point differs, not two bytes.
  EXPECT_EQ(accents.char_errors(), 1);
  EXPECT_EQ(accents.chars(), 4);
  SpeechErrorRates empty;
  EXPECT_EQ(empty.wer(), 0.0);
  empty.Add("", "noise");
  EXPECT_EQ(empty.word_errors(), 1);
  EXPECT_EQ(empty.wer(), 0.0);  // No reference words: no rate.
}

TEST(CtcAlphabetTest, BuiltFromTranscriptsInLowerCase) {
  const CtcAlphabet a = CtcAlphabet::FromTranscripts({"Seven ONE", "zwölf"});
  const std::vector<std::string> expected = {
      "<pad>", "<s>", "</s>", "<unk>", "|", "e", "f", "l",
      "n",     "o",   "s",    "v",     "w", "z", "ö"};
  EXPECT_EQ(a.tokens(), expected);
  EXPECT_EQ(a.blank(), 0);
  // Case folded, whitespace runs one delimiter, nothing at the ends.
  EXPECT_EQ(a.Normalize("  One\t  SEVEN "), "one seven");
  EXPECT_EQ(a.Encode("one  zwölf"),
            (std::vector<int64_t>{9, 8, 5, 4, 13, 12, 14, 7, 6}));
  int64_t dropped = 0;
  EXPECT_EQ(a.Normalize("one, two!", &dropped), "one wo");
  EXPECT_EQ(dropped, 3);  // ",", "t" and "!".
}

TEST(CtcAlphabetTest, GreedyDecodingMergesRunsAndDropsBlanks) {
  const CtcAlphabet a = CtcAlphabet::FromTranscripts({"no one"});
  // Tokens: <pad> <s> </s> <unk> | e n o.
  // "n n _ o o | | _ o n _ n e" with _ the blank: repeats merge unless a
  // blank separates them.
  EXPECT_EQ(a.Decode({6, 6, 0, 7, 7, 4, 4, 0, 7, 6, 0, 6, 5}), "no onne");
  EXPECT_EQ(a.Decode({4, 0, 6, 7, 4, 0}), "no");
  EXPECT_EQ(a.Decode({1, 3, 2, 0}), "");
  EXPECT_EQ(a.Decode(a.Encode("no one")), "no one");
}

TEST(CtcAlphabetTest, AModelsUpperCaseAlphabetFoldsUp) {
  auto a = CtcAlphabet::FromTokens(
      {"<pad>", "<s>", "</s>", "<unk>", "|", "E", "N", "O", "'"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Normalize("No one's"), "NO ONE'");
  EXPECT_FALSE(CtcAlphabet::FromTokens({"a", "b"}).ok());
}

TEST(CtcAlphabetTest, VocabFilesRoundTripAndBadOnesAreNamed) {
  TempDir dir;
  const std::vector<std::string> vocab = {"<pad>", "<s>", "</s>",
                                          "<unk>", "|",   "a"};
  ASSERT_TRUE(WriteCtcTokenizerFiles(dir.path(), vocab).ok());
  auto back = ReadCtcVocab(dir.path() + "/vocab.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, vocab);
  std::ifstream config(dir.path() + "/tokenizer_config.json");
  const std::string text((std::istreambuf_iterator<char>(config)),
                         std::istreambuf_iterator<char>());
  EXPECT_TRUE(absl::StrContains(text, "Wav2Vec2CTCTokenizer")) << text;
  std::ofstream(dir.path() + "/bad.json") << R"({"a": 0, "b": 0})";
  auto bad = ReadCtcVocab(dir.path() + "/bad.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "bad.json"))
      << bad.status();
}

}  // namespace
}  // namespace lathe
