// Fault injection against the real processes: kill -9 of the training child,
// of the worker agent and of the server, during training, during a checkpoint
// upload and during submits. Each test checks that no acknowledged job is lost
// and that a resumed job ends with weights bitwise identical to the same job
// run without interruption (CPU, fixed seed, fixed thread count).
//
// The kill points are drawn from a seeded generator and printed, so a failure
// can be replayed with LATHE_FAULT_SEED.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/files.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/system_fixture.h"
#include "tests/support/temp_dir.h"

namespace lathe {
namespace {

using nlohmann::json;
using testing::CommandResult;
using ::testing::HasSubstr;
using testing::ServerProcess;

// 220 steps (20 epochs of 11 batches: 10% of the rows are held out), a
// checkpoint every 20 steps. Long enough that a fast machine still gives the
// tests time to act while the job runs.
constexpr int kSaveSteps = 20;
const std::vector<std::string> kJobParams = {
    "epochs=20",          "batch_size=8",  "max_seq_length=16",
    "learning_rate=2e-3", "save_steps=20", "eval_steps=0",
    "logging_steps=1",    "seed=7",        "num_threads=2",
    "warmup_ratio=0.1"};
constexpr int kTotalSteps = 220;

uint64_t FaultSeed() {
  const char* env = std::getenv("LATHE_FAULT_SEED");
  static const uint64_t seed =
      env ? std::strtoull(env, nullptr, 10)
          : static_cast<uint64_t>(
                std::chrono::system_clock::now().time_since_epoch().count());
  return seed;
}

// Kill points leave several steps to go, so that the job is still running
// when the kill lands even on a slow, loaded machine.
int KillStep(int lo, int hi) {
  static std::mt19937_64 rng(FaultSeed());
  std::uniform_int_distribution<int> d(lo, hi);
  const int step = d(rng);
  std::printf("fault seed %llu: killing at step %d\n",
              static_cast<unsigned long long>(FaultSeed()), step);
  return step;
}

void WriteData(const std::string& path) {
  const char* good[] = {"great", "wonderful", "superb", "lovely"};
  const char* bad[] = {"awful", "terrible", "dreadful", "horrible"};
  std::ofstream out(path);
  for (int i = 0; i < 96; ++i) {
    const bool pos = i % 2 == 0;
    json row = {
        {"text", std::string("a ") + (pos ? good : bad)[i % 4] + " day with " +
                     (pos ? good : bad)[(i / 4) % 4] + " news"},
        {"label", pos ? "pos" : "neg"}};
    out << row.dump() << "\n";
  }
}

class FaultTest : public ::testing::Test {
 protected:
  // The weights of the uninterrupted run, computed once for all tests.
  //
  // CTest runs each test in a process of its own, so the reference is kept
  // in a file beside the binaries, named by what decides it: the SHA-256 of
  // the training binary and of this file's job and data. A rebuilt trainer
  // gets a new name, so a stale reference is never read. The first test
  // process computes it under a lock; the others wait and read it.
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    WriteData(dir_->path() + "/data.jsonl");
    auto trainer = Sha256File(testing::BinDir() + "/lathe-train");
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    auto data = Sha256File(dir_->path() + "/data.jsonl");
    ASSERT_TRUE(data.ok());
    std::string job;
    for (const auto& p : kJobParams) job += p + ";";
    const std::string key = Sha256Hex(*trainer + *data + job).substr(0, 24);
    const std::string cache =
        testing::BinDir() + "/fault_reference." + key + ".sha256";
    const int lock =
        ::open((testing::BinDir() + "/fault_reference.lock").c_str(),
               O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(lock, 0);
    ::flock(lock, LOCK_EX);
    std::string sha;
    std::ifstream(cache) >> sha;
    if (sha.size() != 64) {
      ServerProcess server(dir_->path() + "/reference", 1,
                           {"--allow-root", dir_->path()});
      ASSERT_TRUE(testing::Started(server));
      const std::string id = Submit(server);
      CommandResult wait = server.Cli({"wait", id, "--timeout", "600"});
      ASSERT_EQ(wait.exit_code, 0) << wait.out << wait.err;
      sha = FinalWeightsSha(server, id);
      server.Stop();
      ASSERT_EQ(sha.size(), 64u);
      std::ofstream(cache + ".tmp") << sha << "\n";
      std::filesystem::rename(cache + ".tmp", cache);
    }
    ::flock(lock, LOCK_UN);
    ::close(lock);
    reference_sha_ = new std::string(sha);
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete reference_sha_;
  }

  static std::string Submit(const ServerProcess& server) {
    return testing::SubmitJob(server,
                              {"text-classification", "preset:bert-tiny",
                               dir_->path() + "/data.jsonl", "", kJobParams});
  }

  // SHA-256 of the final checkpoint's weights, from the server's listing.
  static std::string FinalWeightsSha(const ServerProcess& server,
                                     const std::string& id) {
    CommandResult r = server.Cli({"checkpoints", id, "--output", "json"});
    json list = json::parse(r.out, nullptr, false);
    if (list.is_discarded() || list["checkpoints"].empty()) return "";
    const json& last = list["checkpoints"].back();
    EXPECT_TRUE(last["final"].get<bool>());
    EXPECT_EQ(last["step"], std::to_string(kTotalSteps));
    for (const auto& f : last["files"]) {
      if (f["name"] == "model.safetensors") return f["sha256"];
    }
    return "";
  }

  // Waits until the job runs at `step` or later; false if it did not get
  // there in time (the kills that follow would then hit nothing).
  static bool WaitForStep(const ServerProcess& server, const std::string& id,
                          int step) {
    return testing::WaitUntil(
        [&] {
          CommandResult r = server.Cli({"get", id, "--output", "json"});
          json job = json::parse(r.out, nullptr, false);
          return !job.is_discarded() && job["state"] == "RUNNING" &&
                 std::stoi(job["train_metrics"]["step"].get<std::string>()) >=
                     step;
        },
        std::chrono::seconds(180), std::chrono::milliseconds(20));
  }

  void ExpectResumedExactly(const ServerProcess& server, const std::string& id,
                            int min_attempts) {
    CommandResult wait =
        server.Cli({"wait", id, "--timeout", "600", "--output", "json"});
    ASSERT_EQ(wait.exit_code, 0) << wait.out << wait.err;
    json job = json::parse(wait.out);
    EXPECT_EQ(job["state"], "SUCCEEDED");
    EXPECT_GE(job["attempt"].get<int>(), min_attempts);
    EXPECT_EQ(FinalWeightsSha(server, id), *reference_sha_)
        << "the resumed run's weights differ from the uninterrupted run's";
    if (min_attempts > 1) {
      CommandResult events = server.Cli({"watch", id});
      EXPECT_THAT(events.out, HasSubstr("continuing from the checkpoint"));
    }
  }

  static TempDir* dir_;
  static std::string* reference_sha_;
};

TempDir* FaultTest::dir_ = nullptr;
std::string* FaultTest::reference_sha_ = nullptr;

TEST_F(FaultTest, KillNineOfTheTrainingChildIsRetriedAndResumesExactly) {
  ASSERT_FALSE(reference_sha_->empty());
  TempDir dir;
  ServerProcess server(dir.path(), 1, {"--allow-root", dir_->path()});
  ASSERT_TRUE(testing::Started(server));
  const std::string id = Submit(server);
  ASSERT_TRUE(
      WaitForStep(server, id, KillStep(kSaveSteps + 5, kTotalSteps - 8)));
  auto children = testing::ProcessesMatching("jobs/" + id + "/attempt-1");
  ASSERT_FALSE(children.empty());
  // The child is the one whose command line names lathe-train.
  for (pid_t p : children) {
    std::ifstream in("/proc/" + std::to_string(p) + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), {});
    if (cmd.find("lathe-train") != std::string::npos) ::kill(p, SIGKILL);
  }
  ExpectResumedExactly(server, id, 2);
  CommandResult events = server.Cli({"watch", id});
  EXPECT_THAT(events.out, HasSubstr("killed by signal 9"));
  EXPECT_THAT(events.out, HasSubstr("retrying in"));
}

TEST_F(FaultTest, KillNineOfTheAgentRequeuesAndResumesExactly) {
  TempDir dir;
  ServerProcess server(
      dir.path(), 1,
      {"--allow-root", dir_->path(), "--heartbeat-timeout-ms", "2000"});
  ASSERT_TRUE(testing::Started(server));
  const std::string id = Submit(server);
  ASSERT_TRUE(
      WaitForStep(server, id, KillStep(kSaveSteps + 5, kTotalSteps - 8)));
  // The agent: its work dir is on its command line; its child dies with it.
  const std::vector<pid_t> agents =
      testing::AgentProcesses(dir.path() + "/workers/0", id);
  ASSERT_EQ(agents.size(), 1u);
  ::kill(agents[0], SIGKILL);
  ExpectResumedExactly(server, id, 2);
}

TEST_F(FaultTest, KillNineOfTheServerLosesNothingAndTheWorkerCarriesOn) {
  TempDir dir;
  ServerProcess server(dir.path() + "/server", 0,
                       {"--allow-root", dir_->path()});
  ASSERT_TRUE(testing::Started(server));
  // The restarted server listens where the first one did (a port the
  // kernel chose), so the worker finds it again.
  const std::string addr = server.grpc_address();
  server.SetListen(addr);
  // A worker of its own, as on another machine: it outlives the server.
  testing::BackgroundProcess worker(
      {testing::BinDir() + "/lathe-worker", "--server", addr, "--name",
       "remote", "--work-dir", dir.path() + "/worker", "--token-file",
       server.NewToken("remote-worker", "", "worker")},
      dir.path() + "/worker.log");
  const std::string id = Submit(server);
  ASSERT_TRUE(WaitForStep(server, id, KillStep(4, kTotalSteps - 9)));
  server.Kill();
  ASSERT_TRUE(testing::Started(server));
  // The same attempt finishes: nothing was lost or redone.
  ExpectResumedExactly(server, id, 1);
  CommandResult get = server.Cli({"get", id, "--output", "json"});
  EXPECT_EQ(json::parse(get.out)["attempt"], 1);
}

TEST_F(FaultTest, KillNineOfTheAgentDuringACheckpointUploadKeepsEarlierOnes) {
  TempDir dir;
  ServerProcess server(
      dir.path(), 1,
      {"--allow-root", dir_->path(), "--heartbeat-timeout-ms", "2000"});
  // Local workers inherit the environment: the first attempt's upload of
  // the checkpoint at step 12 stalls (fault injection, worker/agent/agent.cc).
  ::setenv("LATHE_FAULT_STALL_UPLOAD_STEP",
           std::to_string(2 * kSaveSteps).c_str(), 1);
  const ::testing::AssertionResult started = testing::Started(server);
  ::unsetenv("LATHE_FAULT_STALL_UPLOAD_STEP");
  ASSERT_TRUE(started);
  const std::string id = Submit(server);
  // Wait until the stall marker appears in the worker log.
  const std::string log = dir.path() + "/logs/worker-0.log";
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto text = ReadFile(log);
        return text.ok() && text->find("stalling upload") != std::string::npos;
      },
      std::chrono::seconds(180)));
  CommandResult cps = server.Cli({"checkpoints", id, "--output", "json"});
  json before = json::parse(cps.out);
  ASSERT_EQ(before["checkpoints"].size(), 1u) << "the first checkpoint";
  for (pid_t p : testing::AgentProcesses(dir.path() + "/workers/0", id)) {
    ::kill(p, SIGKILL);
  }
  // The restarted worker stalls only first attempts: it resumes from the
  // first checkpoint.
  ExpectResumedExactly(server, id, 2);
  // No half-written upload is left in the artifact store.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path() + "/artifacts/tmp"));
}

TEST_F(FaultTest, PauseCheckpointNowAndResumeEndExactly) {
  TempDir dir;
  ServerProcess server(dir.path(), 1, {"--allow-root", dir_->path()});
  ASSERT_TRUE(testing::Started(server));
  const std::string id = Submit(server);
  ASSERT_TRUE(WaitForStep(server, id, KillStep(2, 8)));
  // checkpoint-now: a checkpoint arrives at a step that is not a save step.
  // Read from the event log: retention may delete the checkpoint itself.
  auto jobs = lathe::v1::JobService::NewStub(server.AdminChannel());
  CommandResult now = server.Cli({"checkpoint-now", id});
  ASSERT_EQ(now.exit_code, 0) << now.err;
  int64_t requested_step = 0;
  {
    lathe::v1::WatchJobRequest req;
    req.set_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(120));
    auto reader = jobs->WatchJob(&ctx, req);
    lathe::v1::WatchJobResponse r;
    while (requested_step == 0 && reader->Read(&r)) {
      const auto& cp = r.event().checkpoint();
      if (r.event().type() == lathe::v1::EVENT_TYPE_CHECKPOINT && !cp.final() &&
          cp.step() % kSaveSteps != 0) {
        requested_step = cp.step();
      }
    }
    ctx.TryCancel();
    reader->Finish();
  }
  EXPECT_GT(requested_step, 0) << "no requested checkpoint arrived";

  // Pause at once: the job is a few steps past the requested checkpoint.
  CommandResult pause = server.Cli({"pause", id, "--output", "json"});
  ASSERT_EQ(pause.exit_code, 0) << pause.err;
  json job;
  testing::WaitUntil(
      [&] {
        job = testing::GetJob(server, id);
        return job["state"] == "PAUSED";
      },
      std::chrono::seconds(120));
  ASSERT_EQ(job["state"], "PAUSED") << job.dump(2);
  EXPECT_TRUE(testing::ProcessesMatching("jobs/" + id).empty())
      << "a paused job holds no training process";
  CommandResult resume = server.Cli({"resume", id});
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  ExpectResumedExactly(server, id, 2);
}

TEST_F(FaultTest, SigtermToAWorkerCheckpointsAndTheJobContinuesExactly) {
  TempDir dir;
  ServerProcess server(dir.path(), 1, {"--allow-root", dir_->path()});
  ASSERT_TRUE(testing::Started(server));
  const std::string id = Submit(server);
  ASSERT_TRUE(WaitForStep(server, id, KillStep(8, kTotalSteps - 8)));
  for (pid_t p : testing::AgentProcesses(dir.path() + "/workers/0", id)) {
    ::kill(p, SIGTERM);
  }
  // The local worker is restarted by the server and takes the job again.
  ExpectResumedExactly(server, id, 2);
  CommandResult events = server.Cli({"watch", id});
  EXPECT_THAT(events.out, HasSubstr("worker is shutting down"));
}

TEST_F(FaultTest, KillNineDuringASubmitStormLosesNoAcknowledgedJob) {
  TempDir dir;
  ServerProcess server(dir.path() + "/server", 0,
                       {"--allow-root", dir_->path()});
  ASSERT_TRUE(testing::Started(server));
  auto stub = lathe::v1::JobService::NewStub(server.AdminChannel());
  // Upload once; submits then only reference it.
  CommandResult up = server.Cli(
      {"datasets", "upload", dir_->path() + "/data.jsonl", "--output", "json"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  const std::string ref = json::parse(up.out)["ref"];
  std::mutex mu;
  std::vector<std::string> acknowledged;
  std::atomic<int> attempted{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        lathe::v1::SubmitJobRequest req;
        req.mutable_spec()->set_task("text-classification");
        req.mutable_spec()->set_model("preset:bert-tiny");
        req.mutable_spec()->set_train_data(ref);
        lathe::v1::SubmitJobResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
        attempted++;
        if (stub->SubmitJob(&ctx, req, &resp).ok()) {
          std::lock_guard<std::mutex> lock(mu);
          acknowledged.push_back(resp.job().id());
        } else {
          return;  // the server is gone
        }
      }
    });
  }
  // Kill once some submits were acknowledged, while others are in flight.
  testing::WaitUntil(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return acknowledged.size() >= 50;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(1));
  server.Kill();
  for (auto& c : clients) c.join();
  ASSERT_GE(acknowledged.size(), 50u);
  ASSERT_TRUE(testing::Started(server));
  std::set<std::string> stored;
  std::string token;
  do {
    std::vector<std::string> args = {"list", "--page-size", "1000", "--output",
                                     "json"};
    if (!token.empty()) {
      args.push_back("--page-token");
      args.push_back(token);
    }
    json page = json::parse(server.Cli(args).out);
    for (const auto& j : page["jobs"]) stored.insert(j["id"]);
    token = page.value("next_page_token", "");
  } while (!token.empty());
  for (const auto& id : acknowledged) {
    EXPECT_TRUE(stored.count(id)) << "acknowledged job " << id << " was lost";
  }
  std::printf("%zu acknowledged of %d attempted; %zu stored after kill -9\n",
              acknowledged.size(), attempted.load(), stored.size());
}

}  // namespace
}  // namespace lathe
