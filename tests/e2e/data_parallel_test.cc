// Multi-device jobs through the whole system: a real lathe-server whose local
// worker has two CPU "devices" (--worker-device-count 2), the real CLI and
// real training processes talking c10d Gloo over the loopback. A job asking
// for two devices trains as two ranks and ends where the same job on one
// device ends (up to the order of the gradient sums); killing one rank stops
// the gang, and the job resumes from its checkpoint. The same across two
// local workers with one device each: a gang of two workers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/files.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/system_fixture.h"
#include "tests/support/temp_dir.h"

namespace lathe {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::ServerProcess;

// 96 rows, 10% held out: 87 training rows in global batches of 8.
const std::vector<std::string> kParams = {
    "epochs=2",           "batch_size=8",  "max_seq_length=16",
    "learning_rate=2e-3", "save_steps=10", "eval_steps=0",
    "logging_steps=1",    "seed=7",        "num_threads=1"};

class DataParallelTest : public ::testing::Test {
 protected:
  // The data, and a base model with every dropout off (so that one process
  // and two compute the same function): preset:bert-tiny written out by
  // `lathe-train init-model`, its config edited.
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    testing::WriteSentimentData(dir_->path() + "/data.jsonl", 96, 0);
    const std::string base = dir_->path() + "/base";
    testing::CommandResult init =
        testing::RunCommand({testing::BinDir() + "/lathe-train", "init-model",
                             "preset:bert-tiny", "--out", base});
    ASSERT_EQ(init.exit_code, 0) << init.out << init.err;
    auto text = ReadFile(base + "/config.json");
    ASSERT_TRUE(text.ok());
    json config = json::parse(*text);
    config["hidden_dropout_prob"] = 0.0;
    config["attention_probs_dropout_prob"] = 0.0;
    config["classifier_dropout"] = 0.0;
    ASSERT_TRUE(WriteFileAtomic(base + "/config.json", config.dump(2)).ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string Submit(const ServerProcess& server, int devices,
                            std::vector<std::string> params = kParams) {
    return testing::SubmitJob(server, {"text-classification",
                                       dir_->path() + "/base",
                                       dir_->path() + "/data.jsonl",
                                       "",
                                       std::move(params),
                                       {"--devices", std::to_string(devices)}});
  }

  static std::vector<float> Floats(const std::string& path,
                                   std::vector<std::string>* names) {
    std::vector<float> out;
    auto file = SafetensorsFile::Open(path);
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return out;
    for (const auto& [name, t] : (*file)->tensors()) {
      if (t.dtype != "F32") continue;
      names->push_back(name);
      const size_t n = t.nbytes / sizeof(float);
      const size_t at = out.size();
      out.resize(at + n);
      std::memcpy(out.data() + at, t.data, t.nbytes);
    }
    return out;
  }

  // Waits until the job runs at `step` or later.
  static bool WaitForStep(const ServerProcess& server, const std::string& id,
                          int step) {
    return testing::WaitUntil(
        [&] {
          json job = testing::GetJob(server, id);
          return job["state"] == "RUNNING" && job.contains("train_metrics") &&
                 std::stoi(job["train_metrics"].value("step", "0")) >= step;
        },
        std::chrono::seconds(300), std::chrono::milliseconds(20));
  }

  static TempDir* dir_;
};
TempDir* DataParallelTest::dir_ = nullptr;

TEST_F(DataParallelTest, TwoDevicesOfOneWorkerMatchOneDevice) {
  TempDir dir;
  ServerProcess server(
      dir.path(), 1,
      {"--allow-root", dir_->path(), "--worker-device-count", "2"});
  ASSERT_TRUE(testing::Started(server));
  const std::string one = Submit(server, 1);
  const std::string two = Submit(server, 2);
  json job_one =
      testing::WaitAndGet(server, one, 600, testing::JobEnd::kSucceeded);
  json job_two =
      testing::WaitAndGet(server, two, 600, testing::JobEnd::kSucceeded);
  EXPECT_EQ(job_one["state"], "SUCCEEDED");
  EXPECT_EQ(job_two["state"], "SUCCEEDED");
  const std::string a = testing::DownloadJob(server, one, dir.path() + "/one");
  const std::string b = testing::DownloadJob(server, two, dir.path() + "/two");
  std::vector<std::string> names_a, names_b;
  const std::vector<float> wa = Floats(a + "/model.safetensors", &names_a);
  const std::vector<float> wb = Floats(b + "/model.safetensors", &names_b);
  EXPECT_EQ(names_a, names_b);
  ASSERT_EQ(wa.size(), wb.size());
  ASSERT_FALSE(wa.empty());
  // Summing the gradients in another order changes the last bits, which
  // AdamW's normalisation can enlarge where a gradient is near zero (rarely
  // seen token embeddings): a few weights move by up to about 1e-4, the
  // mass of them by far less. A wrong split or weighting would move them
  // all.
  double worst = 0, total = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    const double d = std::fabs(static_cast<double>(wa[i]) - wb[i]);
    worst = std::max(worst, d);
    total += d;
  }
  const double mean = total / static_cast<double>(wa.size());
  std::printf("2 devices vs 1: max weight difference %.3g, mean %.3g\n", worst,
              mean);
  EXPECT_LT(worst, 5e-4) << "two ranks drifted from one process";
  EXPECT_LT(mean, 1e-7) << "two ranks drifted from one process";
  // The downloaded directory is the same Hugging Face layout either way.
  std::vector<std::string> files_a, files_b;
  for (const auto& e : std::filesystem::directory_iterator(a)) {
    files_a.push_back(e.path().filename().string());
  }
  for (const auto& e : std::filesystem::directory_iterator(b)) {
    files_b.push_back(e.path().filename().string());
  }
  std::sort(files_a.begin(), files_a.end());
  std::sort(files_b.begin(), files_b.end());
  EXPECT_EQ(files_a, files_b);
  // The events say where each rank ran.
  testing::CommandResult events = server.Cli({"watch", two});
  EXPECT_THAT(events.out,
              HasSubstr("data parallel: world size 2 on worker local-0"));
  EXPECT_THAT(events.out, HasSubstr("rank 0 on cpu, rank 1 on cpu"));
  EXPECT_THAT(events.out, HasSubstr("data parallel: 2 processes (gloo)"));
  // A job asking for more devices than any worker has waits in the queue.
  const std::string three = Submit(server, 3);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(testing::GetJob(server, three)["state"], "QUEUED");
  EXPECT_EQ(server.Cli({"cancel", three}).exit_code, 0);
}

TEST_F(DataParallelTest, KillingOneRankStopsTheGangAndTheJobResumes) {
  TempDir dir;
  ServerProcess server(
      dir.path(), 1,
      {"--allow-root", dir_->path(), "--worker-device-count", "2"});
  ASSERT_TRUE(testing::Started(server));
  std::vector<std::string> params = kParams;
  params.push_back("epochs=12");  // 132 steps: time to act while it runs.
  const std::string id = Submit(server, 2, params);
  ASSERT_TRUE(WaitForStep(server, id, 25));
  // Rank 1's training process: its spec file names it.
  const std::vector<pid_t> rank1 =
      testing::ProcessesMatching(id + "/attempt-1/spec-rank1.json");
  ASSERT_EQ(rank1.size(), 1u);
  ::kill(rank1[0], SIGKILL);
  json job = testing::WaitAndGet(server, id, 600, testing::JobEnd::kSucceeded);
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_GE(job["attempt"].get<int>(), 2);
  testing::CommandResult events = server.Cli({"watch", id});
  EXPECT_THAT(
      events.out,
      HasSubstr("rank 1 (cpu) killed by signal 9; the whole gang stops"));
  EXPECT_THAT(events.out, HasSubstr("continuing from the checkpoint"));
  EXPECT_EQ(server.Stop(), 0);
  testing::ExpectNoProcessesLeft(dir.path());
}

// Two local workers with one device each: a job for two devices needs both,
// placed together as a gang, and ends where the one-device job ends.
TEST_F(DataParallelTest, AGangOfTwoWorkersMatchesOneDevice) {
  TempDir dir;
  ServerProcess server(dir.path(), 2, {"--allow-root", dir_->path()});
  ASSERT_TRUE(testing::Started(server));
  const std::string gang = Submit(server, 2);
  json job_gang =
      testing::WaitAndGet(server, gang, 600, testing::JobEnd::kSucceeded);
  ASSERT_EQ(job_gang["state"], "SUCCEEDED");
  const std::string one = Submit(server, 1);
  json job_one =
      testing::WaitAndGet(server, one, 600, testing::JobEnd::kSucceeded);
  ASSERT_EQ(job_one["state"], "SUCCEEDED");
  const std::string a = testing::DownloadJob(server, one, dir.path() + "/one");
  const std::string b = testing::DownloadJob(server, gang, dir.path() + "/two");
  std::vector<std::string> names_a, names_b;
  const std::vector<float> wa = Floats(a + "/model.safetensors", &names_a);
  const std::vector<float> wb = Floats(b + "/model.safetensors", &names_b);
  EXPECT_EQ(names_a, names_b);
  ASSERT_EQ(wa.size(), wb.size());
  ASSERT_FALSE(wa.empty());
  double worst = 0, total = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    const double d = std::fabs(static_cast<double>(wa[i]) - wb[i]);
    worst = std::max(worst, d);
    total += d;
  }
  const double mean = total / static_cast<double>(wa.size());
  std::printf(
      "gang of 2 workers vs 1 device: max weight difference %.3g, "
      "mean %.3g\n",
      worst, mean);
  EXPECT_LT(worst, 5e-4) << "the gang drifted from one process";
  EXPECT_LT(mean, 1e-7) << "the gang drifted from one process";
  // The events name the gang and each rank's worker.
  testing::CommandResult events = server.Cli({"watch", gang});
  EXPECT_THAT(events.out, HasSubstr("started on a gang of 2 workers, world "
                                    "size 2: local-"));
  EXPECT_THAT(events.out, HasSubstr(") rank 1"));
  EXPECT_THAT(events.out,
              HasSubstr("data parallel: world size 2 on 2 workers"));
  EXPECT_EQ(server.Stop(), 0);
  testing::ExpectNoProcessesLeft(dir.path());
}

TEST_F(DataParallelTest, KillingARankOfAGangStopsItAndTheJobResumes) {
  TempDir dir;
  ServerProcess server(dir.path(), 2, {"--allow-root", dir_->path()});
  ASSERT_TRUE(testing::Started(server));
  std::vector<std::string> params = kParams;
  params.push_back("epochs=12");  // 132 steps: time to act while it runs.
  const std::string id = Submit(server, 2, params);
  ASSERT_TRUE(WaitForStep(server, id, 25));
  // Rank 1 runs on the other worker; its spec file names it.
  const std::vector<pid_t> rank1 =
      testing::ProcessesMatching(id + "/attempt-1/spec-rank1.json");
  ASSERT_EQ(rank1.size(), 1u);
  ::kill(rank1[0], SIGKILL);
  json job = testing::WaitAndGet(server, id, 600, testing::JobEnd::kSucceeded);
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_GE(job["attempt"].get<int>(), 2);
  testing::CommandResult events = server.Cli({"watch", id});
  // Whichever member noticed first ended attempt 1 for the whole gang.
  EXPECT_THAT(events.out, HasSubstr("attempt 1 of 3 failed"));
  const size_t at = events.out.find("attempt 1 of 3 failed");
  if (at != std::string::npos) {
    std::printf("%s\n", events.out.substr(at, 200).c_str());
  }
  EXPECT_THAT(events.out, HasSubstr("attempt 2 started on a gang of 2"));
  EXPECT_THAT(events.out, HasSubstr("continuing from the checkpoint"));
  EXPECT_EQ(server.Stop(), 0);
  testing::ExpectNoProcessesLeft(dir.path());
}

std::string FinalWeightsSha(const ServerProcess& server,
                            const std::string& id) {
  json list = json::parse(
      server.Cli({"checkpoints", id, "--output", "json"}).out, nullptr, false);
  if (list.is_discarded() || list["checkpoints"].empty()) return "";
  for (const auto& f : list["checkpoints"].back()["files"]) {
    if (f["name"] == "model.safetensors") return f["sha256"];
  }
  return "";
}

TEST_F(DataParallelTest, APausedTwoRankJobResumesExactly) {
  TempDir dir;
  ServerProcess server(
      dir.path(), 1,
      {"--allow-root", dir_->path(), "--worker-device-count", "2"});
  ASSERT_TRUE(testing::Started(server));
  std::vector<std::string> params = kParams;
  params.push_back("epochs=8");  // 88 steps.
  const std::string whole = Submit(server, 2, params);
  testing::WaitAndGet(server, whole, 600, testing::JobEnd::kSucceeded);
  const std::string reference = FinalWeightsSha(server, whole);
  ASSERT_EQ(reference.size(), 64u);

  const std::string id = Submit(server, 2, params);
  ASSERT_TRUE(WaitForStep(server, id, 20));
  ASSERT_EQ(server.Cli({"pause", id}).exit_code, 0);
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return testing::GetJob(server, id)["state"] == "PAUSED"; },
      std::chrono::seconds(120)));
  EXPECT_TRUE(testing::ProcessesMatching("jobs/" + id).empty())
      << "a paused job holds no training process, on any rank";
  ASSERT_EQ(server.Cli({"resume", id}).exit_code, 0);
  json job = testing::WaitAndGet(server, id, 600, testing::JobEnd::kSucceeded);
  EXPECT_GE(job["attempt"].get<int>(), 2);
  // Both ranks continue from the checkpoint rank 0 wrote at the pause, and
  // end bitwise where the uninterrupted two-rank job ended.
  EXPECT_EQ(FinalWeightsSha(server, id), reference);
}

TEST_F(DataParallelTest, APausedGangResumesExactly) {
  TempDir dir;
  ServerProcess server(dir.path(), 2, {"--allow-root", dir_->path()});
  ASSERT_TRUE(testing::Started(server));
  std::vector<std::string> params = kParams;
  params.push_back("epochs=8");  // 88 steps.
  const std::string whole = Submit(server, 2, params);
  testing::WaitAndGet(server, whole, 600, testing::JobEnd::kSucceeded);
  const std::string reference = FinalWeightsSha(server, whole);
  ASSERT_EQ(reference.size(), 64u);

  const std::string id = Submit(server, 2, params);
  ASSERT_TRUE(WaitForStep(server, id, 20));
  ASSERT_EQ(server.Cli({"pause", id}).exit_code, 0);
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return testing::GetJob(server, id)["state"] == "PAUSED"; },
      std::chrono::seconds(120)));
  // The other member's ranks ended with rank 0's, and that was no failure.
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return testing::ProcessesMatching("jobs/" + id).empty(); },
      std::chrono::seconds(60)))
      << "a paused gang holds no training process on any worker";
  EXPECT_EQ(testing::GetJob(server, id)["state"], "PAUSED");
  ASSERT_EQ(server.Cli({"resume", id}).exit_code, 0);
  json job = testing::WaitAndGet(server, id, 600, testing::JobEnd::kSucceeded);
  EXPECT_GE(job["attempt"].get<int>(), 2);
  EXPECT_THAT(server.Cli({"watch", id}).out,
              ::testing::Not(HasSubstr("failed")));
  EXPECT_EQ(FinalWeightsSha(server, id), reference);
  EXPECT_EQ(server.Stop(), 0);
}

}  // namespace
}  // namespace lathe
