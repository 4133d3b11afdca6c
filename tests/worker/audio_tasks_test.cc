// The audio tasks inside the training child, on clips the test writes:
// tones in class folders (audio-classification) and tone sequences with
// letter transcripts (speech-recognition), preset:wav2vec2-tiny with its
// SpecAugment on. A run resumed mid-epoch ends bitwise where the
// uninterrupted run ends; LoRA and linear-probe train only what they
// should; predictions give labels and transcripts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "tests/worker/tiny_task.h"
#include "worker/train/trainer.h"

namespace lathe {
namespace {

using ::lathe::testing::FreshDir;
using ::lathe::testing::RunResult;
using ::lathe::testing::TrainRun;

// 16-bit mono PCM WAV.
void WriteWav(const std::string& path, const std::vector<float>& samples,
              int rate) {
  std::ofstream out(path, std::ios::binary);
  auto u32 = [&](uint32_t v) { out.write(reinterpret_cast<char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { out.write(reinterpret_cast<char*>(&v), 2); };
  const uint32_t bytes = static_cast<uint32_t>(samples.size() * 2);
  out.write("RIFF", 4);
  u32(36 + bytes);
  out.write("WAVEfmt ", 8);
  u32(16);
  u16(1);  // PCM
  u16(1);  // mono
  u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate * 2));
  u16(2);
  u16(16);
  out.write("data", 4);
  u32(bytes);
  for (float s : samples) {
    u16(static_cast<uint16_t>(
        static_cast<int16_t>(std::lround(std::clamp(s, -1.0f, 1.0f) * 32000))));
  }
}

// Tones of the letters' pitches, 0.15 s each with a little noise.
std::vector<float> Tones(const std::string& letters, std::mt19937* rng) {
  std::normal_distribution<float> noise(0.0f, 0.02f);
  std::vector<float> out;
  for (char c : letters) {
    const double hz = c == 'a' ? 300 : c == 'b' ? 900 : 1800;
    for (int i = 0; i < 2400; ++i) {
      out.push_back(
          static_cast<float>(0.5 * std::sin(2 * M_PI * hz * i / 16000.0)) +
          noise(*rng));
    }
    out.insert(out.end(), 800, 0.0f);
  }
  return out;
}

// DIR/classes/{low,high}/N.wav and DIR/phrases/{metadata.jsonl,N.wav}.
void WriteAudioData(const std::string& dir) {
  std::mt19937 rng(5);
  for (const char* cls : {"low", "high"}) {
    std::filesystem::create_directories(dir + "/classes/" + cls);
    for (int i = 0; i < 12; ++i) {
      WriteWav(absl::StrCat(dir, "/classes/", cls, "/", i, ".wav"),
               Tones(std::string(3, cls[0] == 'l' ? 'a' : 'c'), &rng), 16000);
    }
  }
  std::filesystem::create_directories(dir + "/phrases");
  std::ofstream meta(dir + "/phrases/metadata.jsonl");
  const std::vector<std::string> words = {"ab", "ba", "cab", "bc", "ca"};
  for (int i = 0; i < 24; ++i) {
    const std::string a = words[i % 5], b = words[(i * 3 + 1) % 5];
    WriteWav(absl::StrCat(dir, "/phrases/", i, ".wav"), Tones(a + b, &rng),
             16000);
    meta << "{\"audio\": \"" << i << ".wav\", \"text\": \"" << a << " " << b
         << "\"}\n";
  }
}

std::string Bytes(const std::string& path) {
  auto bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

struct AudioTask {
  const char* task;
  const char* folder;
};

// Names the task in test names and failure messages, not its bytes.
void PrintTo(const AudioTask& t, std::ostream* os) { *os << t.task; }

class AudioTasksTest : public ::testing::TestWithParam<AudioTask> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(FreshDir("audio_tasks"));
    WriteAudioData(*dir_);
  }
  static void TearDownTestSuite() { delete dir_; }

  // 24 clips, a quarter held out: 18 training clips in batches of 4, so 5
  // steps an epoch (the last of 2) and 10 in 2 epochs.
  TrainSpec Spec() const {
    TrainSpec spec;
    spec.job_id = "test";
    spec.task = GetParam().task;
    spec.model = "preset:wav2vec2-tiny";
    spec.train_data = *dir_ + "/" + GetParam().folder;
    spec.train_name = GetParam().folder;
    spec.params = {{"num_threads", "1"},
                   {"seed", "3"},
                   {"epochs", "2"},
                   {"batch_size", "4"},
                   {"validation_split", "0.25"},
                   {"eval_steps", "4"},
                   {"logging_steps", "1"},
                   {"save_steps", "1"}};
    return spec;
  }
  std::string Out(const std::string& name) const {
    return absl::StrCat(*dir_, "/", GetParam().folder, "-", name);
  }
  static std::string* dir_;
};
std::string* AudioTasksTest::dir_ = nullptr;

TEST_P(AudioTasksTest, ResumedMidEpochEndsBitwiseEqual) {
  const RunResult full = TrainRun(Spec(), Out("full"));
  ASSERT_TRUE(full.status.ok()) << full.status;
  const std::string end = Out("full") + "/checkpoint-10";
  for (int at : {3, 5}) {
    SCOPED_TRACE(at);
    TrainSpec spec = Spec();
    spec.resume_from = Out("full") + "/checkpoint-" + std::to_string(at);
    const std::string out = Out("resumed-" + std::to_string(at));
    const RunResult run = TrainRun(spec, out);
    ASSERT_TRUE(run.status.ok()) << run.status;
    EXPECT_TRUE(Bytes(out + "/checkpoint-10/model.safetensors") ==
                Bytes(end + "/model.safetensors"));
    EXPECT_TRUE(Bytes(out + "/checkpoint-10/training_state.safetensors") ==
                Bytes(end + "/training_state.safetensors"));
    EXPECT_EQ(run.OfType("eval").back(), full.OfType("eval").back());
  }
  // The checkpoint is a Hugging Face Wav2Vec2 directory.
  const nlohmann::json config =
      nlohmann::json::parse(Bytes(end + "/config.json"));
  EXPECT_EQ(config["model_type"], "wav2vec2");
  EXPECT_TRUE(std::filesystem::exists(end + "/preprocessor_config.json"));
  auto weights = SafetensorsFile::Open(end + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_TRUE(
      (*weights)->Find("wav2vec2.feature_extractor.conv_layers.0.conv.weight"));
  if (std::string(GetParam().task) == "speech-recognition") {
    EXPECT_EQ(config["architectures"][0], "Wav2Vec2ForCTC");
    EXPECT_TRUE((*weights)->Find("lm_head.weight"));
    // The alphabet: five special tokens and a, b, c.
    auto vocab = nlohmann::json::parse(Bytes(end + "/vocab.json"));
    EXPECT_EQ(vocab.size(), 8u) << vocab.dump();
    EXPECT_EQ(vocab["<pad>"], 0);
    EXPECT_EQ(vocab["|"], 4);
    EXPECT_EQ(config["vocab_size"], 8);
    EXPECT_EQ(config["pad_token_id"], 0);
    EXPECT_TRUE(full.OfType("eval").back()["metrics"].contains("wer"));
  } else {
    EXPECT_EQ(config["architectures"][0], "Wav2Vec2ForSequenceClassification");
    EXPECT_TRUE((*weights)->Find("classifier.weight"));
    EXPECT_TRUE((*weights)->Find("projector.weight"));
    EXPECT_EQ(config["id2label"]["0"], "high");
    EXPECT_TRUE(full.OfType("eval").back()["metrics"].contains("accuracy"));
  }

  // Predictions from the checkpoint: a label or a transcript per clip.
  TrainSpec predict;
  predict.job_id = "predict";
  predict.mode = "predict";
  predict.task = GetParam().task;
  predict.model = end;
  predict.train_data = *dir_ + "/" + GetParam().folder;
  predict.train_name = GetParam().folder;
  predict.params = {{"num_threads", "1"}};
  const RunResult p = TrainRun(predict, Out("predict"));
  ASSERT_TRUE(p.status.ok()) << p.status;
  const auto rows =
      ReadFile(Out("predict") + "/checkpoint-0/predictions.jsonl");
  ASSERT_TRUE(rows.ok()) << rows.status();
  size_t n = 0;
  for (absl::string_view line :
       absl::StrSplit(*rows, '\n', absl::SkipEmpty())) {
    const nlohmann::json row = nlohmann::json::parse(line);
    EXPECT_TRUE(row.contains("audio")) << line;
    EXPECT_TRUE(row.contains(
        std::string(GetParam().task) == "speech-recognition" ? "text"
                                                             : "label"))
        << line;
    ++n;
  }
  EXPECT_EQ(n, 24u);
}

TEST_P(AudioTasksTest, LoraAndLinearProbeTrainOnlyTheirParts) {
  for (const char* method : {"lora", "linear-probe"}) {
    SCOPED_TRACE(method);
    TrainSpec spec = Spec();
    spec.params["method"] = method;
    spec.params["save_steps"] = "0";
    const RunResult run = TrainRun(spec, Out(method));
    ASSERT_TRUE(run.status.ok()) << run.status;
    std::string plan;
    for (const auto& e : run.OfType("log")) {
      const std::string m = e["message"];
      if (m.rfind("training: ", 0) == 0) plan = m;
    }
    // "trainable parameters T of N" with T well below N.
    const size_t at = plan.find("trainable parameters ");
    ASSERT_NE(at, std::string::npos) << plan;
    int64_t trainable = 0, total = 0;
    ASSERT_EQ(std::sscanf(plan.c_str() + at, "trainable parameters %ld of %ld",
                          &trainable, &total),
              2)
        << plan;
    EXPECT_GT(trainable, 0);
    EXPECT_LT(trainable * 4, total) << plan;
    EXPECT_FALSE(run.OfType("eval").empty());
  }
}

// freeze_feature_encoder=auto: trained from the preset's random start,
// kept from a checkpoint's; false trains it from a checkpoint too.
TEST_P(AudioTasksTest, AStartFromACheckpointFreezesTheFeatureEncoder) {
  const std::string conv =
      "wav2vec2.feature_extractor.conv_layers.1.conv.weight";
  auto weight = [&](const std::string& dir) {
    auto file = SafetensorsFile::Open(dir + "/model.safetensors");
    EXPECT_TRUE(file.ok()) << file.status();
    const SafetensorsFile::Tensor* t =
        file.ok() ? (*file)->Find(conv) : nullptr;
    EXPECT_NE(t, nullptr);
    return t == nullptr
               ? std::string()
               : std::string(reinterpret_cast<const char*>(t->data), t->nbytes);
  };
  auto logged = [](const RunResult& run, const std::string& prefix) {
    for (const auto& e : run.OfType("log")) {
      if (e["message"].get<std::string>().rfind(prefix, 0) == 0) return true;
    }
    return false;
  };
  TrainSpec spec = Spec();
  spec.params["max_steps"] = "2";
  spec.params["save_steps"] = "0";
  const RunResult start = TrainRun(spec, Out("start"));
  ASSERT_TRUE(start.status.ok()) << start.status;
  EXPECT_TRUE(logged(start, "feature encoder trained"));
  const std::string from = Out("start") + "/checkpoint-2";
  for (const char* setting : {"auto", "false"}) {
    SCOPED_TRACE(setting);
    TrainSpec next = Spec();
    next.model = from;
    next.params["max_steps"] = "2";
    next.params["save_steps"] = "0";
    next.params["freeze_feature_encoder"] = setting;
    const std::string out = Out(std::string("from-checkpoint-") + setting);
    const RunResult run = TrainRun(next, out);
    ASSERT_TRUE(run.status.ok()) << run.status;
    const bool frozen = std::string(setting) == "auto";
    EXPECT_EQ(logged(run, "feature encoder frozen"), frozen);
    EXPECT_EQ(weight(from) == weight(out + "/checkpoint-2"), frozen);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Tasks, AudioTasksTest,
    ::testing::Values(AudioTask{"audio-classification", "classes"},
                      AudioTask{"speech-recognition", "phrases"}),
    [](const ::testing::TestParamInfo<AudioTask>& info) {
      return std::string(info.param.task) == "speech-recognition" ? "Ctc"
                                                                  : "Classes";
    });

}  // namespace
}  // namespace lathe
