// Data-parallel training on c10d Gloo with real processes on the loopback:
// the lathe-train binary run as 1 and as 2 ranks on the same data and base
// model, compared weight by weight; optimizer-state sharding; checkpoints
// and resuming; and the pure pieces (row split, shard owners, spec).
#include "worker/train/distributed.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/worker/tiny_task.h"
#include "worker/train/trainer.h"

namespace lathe {
namespace {

using ::lathe::testing::FreshDir;
using ::lathe::testing::TinySpec;
using ::lathe::testing::TrainRun;
using ::lathe::testing::WriteTinyTask;
using json = nlohmann::json;

std::pair<size_t, size_t> Range(size_t a, size_t b) { return {a, b}; }

TEST(SplitRowsTest, ContiguousSlicesAsEvenAsPossible) {
  // 10 rows over 4 ranks: 3, 3, 2, 2.
  EXPECT_EQ(SplitRows(20, 30, 0, 4), Range(20, 23));
  EXPECT_EQ(SplitRows(20, 30, 1, 4), Range(23, 26));
  EXPECT_EQ(SplitRows(20, 30, 2, 4), Range(26, 28));
  EXPECT_EQ(SplitRows(20, 30, 3, 4), Range(28, 30));
  // Fewer rows than ranks: the last ranks get nothing.
  EXPECT_EQ(SplitRows(4, 5, 0, 2), Range(4, 5));
  EXPECT_EQ(SplitRows(4, 5, 1, 2), Range(5, 5));
  // One rank takes all.
  EXPECT_EQ(SplitRows(0, 7, 0, 1), Range(0, 7));
}

TEST(ShardOwnersTest, WholeTensorsToTheLeastLoadedRank) {
  // Largest first: 100 -> 0; 60 -> 1; 50 -> 1 (60 < 100); 10 -> 0
  // (100 < 110); 5 -> 0 (110 = 110, the lower rank).
  const std::vector<torch::Tensor> t = {torch::zeros({10}), torch::zeros({60}),
                                        torch::zeros({5}), torch::zeros({100}),
                                        torch::zeros({50})};
  EXPECT_EQ(ShardOwners(t, 2), (std::vector<int>{0, 1, 0, 0, 1}));
  EXPECT_EQ(ShardOwners(t, 1), (std::vector<int>{0, 0, 0, 0, 0}));
  // An embedding and an output projection of the same size go to different
  // ranks wherever they are in the model.
  const std::vector<torch::Tensor> lm = {torch::zeros({800}),
                                         torch::zeros({30}), torch::zeros({30}),
                                         torch::zeros({800})};
  EXPECT_EQ(ShardOwners(lm, 2), (std::vector<int>{0, 0, 1, 1}));
}

TEST(DistributedSpecTest, ReadsAndRefuses) {
  auto one = DistributedSpec::FromJson(json());
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->world_size, 1);
  auto two = DistributedSpec::FromJson(
      {{"world_size", 2}, {"rank", 1}, {"store_port", 4000}});
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->rank, 1);
  EXPECT_EQ(two->store_host, "127.0.0.1");
  auto bad_rank = DistributedSpec::FromJson(
      {{"world_size", 2}, {"rank", 2}, {"store_port", 4000}});
  EXPECT_EQ(bad_rank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_rank.status().message().find("rank"), std::string::npos);
  auto no_port = DistributedSpec::FromJson({{"world_size", 2}});
  EXPECT_NE(no_port.status().message().find("store_port"), std::string::npos);
  auto wrong_type = DistributedSpec::FromJson({{"world_size", "2"}});
  EXPECT_NE(wrong_type.status().message().find("distributed.world_size"),
            std::string::npos);
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::map<std::string, torch::Tensor> Weights(const std::string& dir) {
  std::map<std::string, torch::Tensor> out;
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return out;
  for (const auto& [name, t] : (*file)->tensors()) {
    if (t.dtype != "F32") continue;
    torch::Tensor v = torch::empty(t.shape, torch::kFloat32);
    if (t.nbytes > 0) std::memcpy(v.data_ptr(), t.data, t.nbytes);
    out[name] = v;
  }
  return out;
}

double MaxDifference(const std::string& a, const std::string& b) {
  const auto wa = Weights(a);
  const auto wb = Weights(b);
  EXPECT_EQ(wa.size(), wb.size());
  EXPECT_FALSE(wa.empty());
  double worst = 0;
  for (const auto& [name, t] : wa) {
    auto it = wb.find(name);
    if (it == wb.end()) {
      ADD_FAILURE() << name << " missing from " << b;
      continue;
    }
    worst = std::max(worst, (t - it->second).abs().max().item<double>());
  }
  return worst;
}

std::vector<std::string> FileNames(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class DistributedTrainingTest : public ::testing::Test {
 protected:
  // The base model: a tiny BERT classifier with every dropout off (so one
  // process and two see the same function), written as a Hugging Face
  // directory by one in-process step at learning rate 1e-9.
  static void SetUpTestSuite() {
    dir_ = new std::string(FreshDir("distributed"));
    WriteTinyTask(*dir_, 44);
    TrainSpec init = TinySpec(*dir_);
    init.model_config->hidden_dropout = 0;
    init.model_config->attention_dropout = 0;
    init.model_config->classifier_dropout = 0;
    init.params["max_steps"] = "1";
    init.params["learning_rate"] = "1e-9";
    init.params["validation_split"] = "0";
    auto run = TrainRun(init, *dir_ + "/init");
    ASSERT_TRUE(run.status.ok()) << run.status;
    base_ = new std::string(*dir_ + "/init/checkpoint-1");
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete base_;
  }

  // 44 rows, 8 held out: 36 training rows in global batches of 6 (two
  // micro-batches of 3), 6 steps an epoch, 2 epochs.
  static json Spec(const std::map<std::string, std::string>& extra = {}) {
    json spec = {{"job_id", "dp"},
                 {"task", "text-classification"},
                 {"model", *base_},
                 {"train_data", *dir_ + "/data.jsonl"},
                 {"device", "cpu"}};
    json params = {{"seed", "5"},
                   {"num_threads", "1"},
                   {"epochs", "2"},
                   {"batch_size", "3"},
                   {"gradient_accumulation_steps", "2"},
                   {"learning_rate", "0.003"},
                   {"validation_split", "0.2"},
                   {"eval_steps", "4"},
                   {"logging_steps", "1"},
                   {"save_steps", "5"}};
    for (const auto& [k, v] : extra) params[k] = v;
    spec["params"] = params;
    return spec;
  }

  // Runs `world` lathe-train processes with `spec` and returns each rank's
  // exit code; rank 0 writes to `out`, its events to `out`.events.
  // `adjust`, when given, edits rank r's spec last (a test's fault).
  static std::vector<int> RunRanks(
      json spec, int world, const std::string& out,
      const std::function<void(json&, int)>& adjust = {}) {
    std::filesystem::remove_all(out);
    std::filesystem::create_directories(out);
    const int port = FreePort();
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      json s = spec;
      if (world > 1) {
        s["distributed"] = {{"world_size", world},
                            {"rank", r},
                            {"store_port", port},
                            {"store_prefix", "test"},
                            {"timeout_seconds", 120}};
      }
      if (adjust) adjust(s, r);
      const std::string spec_path = absl::StrCat(out, "/spec-", r, ".json");
      EXPECT_TRUE(WriteFileAtomic(spec_path, s.dump()).ok());
      const std::string out_dir = r == 0 ? out : absl::StrCat(out, "-rank", r);
      const std::string events = absl::StrCat(out, "/events-", r, ".jsonl");
      const pid_t pid = ::fork();
      if (pid == 0) {
        std::freopen(events.c_str(), "w", stdout);
        ::execl(LATHE_TRAIN_BINARY, LATHE_TRAIN_BINARY, "--spec",
                spec_path.c_str(), "--out", out_dir.c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
      }
      pids.push_back(pid);
    }
    std::vector<int> codes;
    for (pid_t pid : pids) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status)
                                        : 128 + WTERMSIG(status));
    }
    return codes;
  }

  static std::vector<json> Events(const std::string& out, int rank) {
    std::vector<json> events;
    auto text = ReadFile(absl::StrCat(out, "/events-", rank, ".jsonl"));
    if (!text.ok()) return events;
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) events.push_back(json::parse(line));
    }
    return events;
  }

  static std::string* dir_;
  static std::string* base_;
};
std::string* DistributedTrainingTest::dir_ = nullptr;
std::string* DistributedTrainingTest::base_ = nullptr;

TEST_F(DistributedTrainingTest, TwoRanksMatchOneProcessWithTheSameGlobalBatch) {
  const std::string one = *dir_ + "/one";
  const std::string two = *dir_ + "/two";
  ASSERT_EQ(RunRanks(Spec(), 1, one), std::vector<int>{0});
  ASSERT_EQ(RunRanks(Spec(), 2, two), (std::vector<int>{0, 0}));
  // 12 steps; the weights agree up to the order of the gradient sums.
  const double diff =
      MaxDifference(one + "/checkpoint-12", two + "/checkpoint-12");
  std::printf("max weight difference 2 ranks vs 1 process: %.3g\n", diff);
  EXPECT_LT(diff, 2e-5);
  // Training moved the weights well beyond that.
  EXPECT_GT(MaxDifference(*base_, two + "/checkpoint-12"), 1e-3);
  // The same Hugging Face directory as from one process, and only rank 0
  // writes checkpoints.
  EXPECT_EQ(FileNames(one + "/checkpoint-12"),
            FileNames(two + "/checkpoint-12"));
  EXPECT_FALSE(std::filesystem::exists(two + "-rank1/checkpoint-12"));
  const auto state =
      json::parse(*ReadFile(two + "/checkpoint-12/trainer_state.json"));
  EXPECT_EQ(state["world_size"], 2);
  // Rank 0 reports for the gang: the loss of the whole global batch, and
  // samples and tokens of both ranks (tokens per sample as in one process).
  auto train_at = [&](const std::string& out, int step) {
    for (const json& e : Events(out, 0)) {
      if (e["type"] == "train" && e["step"] == step) return e;
    }
    return json();
  };
  for (int step : {1, 2, 7}) {
    const json a = train_at(one, step);
    const json b = train_at(two, step);
    ASSERT_TRUE(a.is_object() && b.is_object()) << step;
    EXPECT_NEAR(a["loss"].get<double>(), b["loss"].get<double>(), 1e-5) << step;
    if (step == 1) continue;  // Rates start after the first step.
    const double per_sample_a = a["tokens_per_second"].get<double>() /
                                a["samples_per_second"].get<double>();
    const double per_sample_b = b["tokens_per_second"].get<double>() /
                                b["samples_per_second"].get<double>();
    EXPECT_NEAR(per_sample_a, per_sample_b, 1e-9 * per_sample_a) << step;
  }
  EXPECT_TRUE(Events(two, 1).empty());
  // Evaluation ran on rank 0 with the same result as one process's.
  double loss_one = -1, loss_two = -2;
  for (const json& e : Events(one, 0)) {
    if (e["type"] == "eval" && e["step"] == 12) loss_one = e["metrics"]["loss"];
  }
  for (const json& e : Events(two, 0)) {
    if (e["type"] == "eval" && e["step"] == 12) loss_two = e["metrics"]["loss"];
  }
  EXPECT_NEAR(loss_one, loss_two, 1e-4);
}

TEST_F(DistributedTrainingTest, TokenMeanLossesWeighTokensAcrossRanks) {
  // causal-lm averages over labelled tokens: rows of very different lengths
  // split between two ranks must still give one process's loss and
  // gradient (preset:llama-tiny has no dropout; both start from its seeded
  // initialisation).
  {
    std::ofstream data(*dir_ + "/lm.jsonl");
    for (int i = 0; i < 24; ++i) {
      std::string text = "row " + std::to_string(i);
      for (int k = 0; k < (i * 7) % 23; ++k) text += " and some more words";
      data << json{{"text", text}}.dump() << "\n";
    }
  }
  json spec = Spec({{"max_seq_length", "64"},
                    {"validation_split", "0"},
                    {"epochs", "1"},
                    {"batch_size", "4"},
                    {"gradient_accumulation_steps", "1"},
                    {"save_steps", "0"},
                    {"eval_steps", "0"}});
  spec["task"] = "causal-lm";
  spec["model"] = "preset:llama-tiny";
  spec["train_data"] = *dir_ + "/lm.jsonl";
  const std::string one = *dir_ + "/lm-one";
  const std::string two = *dir_ + "/lm-two";
  ASSERT_EQ(RunRanks(spec, 1, one), std::vector<int>{0});
  ASSERT_EQ(RunRanks(spec, 2, two), (std::vector<int>{0, 0}));
  std::vector<double> la, lb;
  for (const json& e : Events(one, 0)) {
    if (e["type"] == "train") la.push_back(e["loss"]);
  }
  for (const json& e : Events(two, 0)) {
    if (e["type"] == "train") lb.push_back(e["loss"]);
  }
  ASSERT_EQ(la.size(), 6u);
  ASSERT_EQ(lb.size(), la.size());
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-5) << i;
  const double diff =
      MaxDifference(one + "/checkpoint-6", two + "/checkpoint-6");
  std::printf("causal-lm, max weight difference 2 ranks vs 1 process: %.3g\n",
              diff);
  EXPECT_LT(diff, 2e-5);
}

TEST_F(DistributedTrainingTest,
       ShardedOptimizerStateGivesTheSameRunAndWholeCheckpoints) {
  const std::string plain = *dir_ + "/plain";
  const std::string zero = *dir_ + "/zero";
  ASSERT_EQ(RunRanks(Spec(), 2, plain), (std::vector<int>{0, 0}));
  ASSERT_EQ(RunRanks(Spec({{"zero_stage", "1"}}), 2, zero),
            (std::vector<int>{0, 0}));
  EXPECT_LT(MaxDifference(plain + "/checkpoint-12", zero + "/checkpoint-12"),
            1e-6);
  // The checkpoint holds every parameter's moments, gathered from both
  // ranks: the same tensors as without sharding.
  auto a =
      SafetensorsFile::Open(plain + "/checkpoint-5/training_state.safetensors");
  auto b =
      SafetensorsFile::Open(zero + "/checkpoint-5/training_state.safetensors");
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<std::string> names_a, names_b;
  for (const auto& [name, t] : (*a)->tensors()) names_a.push_back(name);
  for (const auto& [name, t] : (*b)->tensors()) names_b.push_back(name);
  EXPECT_EQ(names_a, names_b);
  EXPECT_GT(names_a.size(), 20u);

  // Resumed on two ranks from step 5 it ends where the uninterrupted sharded
  // run ended; resumed on one process, close to it.
  json resume = Spec({{"zero_stage", "1"}});
  resume["resume_from"] = zero + "/checkpoint-5";
  const std::string again = *dir_ + "/zero-resumed";
  ASSERT_EQ(RunRanks(resume, 2, again), (std::vector<int>{0, 0}));
  EXPECT_EQ(MaxDifference(zero + "/checkpoint-12", again + "/checkpoint-12"),
            0);
  json alone = Spec();
  alone["resume_from"] = zero + "/checkpoint-5";
  const std::string single = *dir_ + "/zero-resumed-alone";
  ASSERT_EQ(RunRanks(alone, 1, single), std::vector<int>{0});
  EXPECT_LT(MaxDifference(zero + "/checkpoint-12", single + "/checkpoint-12"),
            2e-5);
  bool warned = false;
  for (const json& e : Events(single, 0)) {
    if (e["type"] == "log" && e["message"].get<std::string>().find(
                                  "a run trained on 2") != std::string::npos) {
      warned = true;
    }
  }
  EXPECT_TRUE(warned);
}

TEST_F(DistributedTrainingTest, ARankThatDiesStopsTheOthers) {
  // Rank 1 gets a training file that does not exist: it fails before the
  // rendezvous, and rank 0 gives up when the store's timeout passes instead
  // of training alone.
  const std::string out = *dir_ + "/broken";
  const std::vector<int> codes =
      RunRanks(Spec(), 2, out, [&](json& s, int rank) {
        s["distributed"]["timeout_seconds"] = 5;
        if (rank == 1) s["train_data"] = *dir_ + "/missing.jsonl";
      });
  EXPECT_EQ(codes[1], 2) << "invalid input";
  EXPECT_NE(codes[0], 0) << "rank 0 must not train alone";
  const auto events = Events(out, 0);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["type"], "error");
  EXPECT_NE(events.back()["message"].get<std::string>().find("rank 0 of 2"),
            std::string::npos)
      << events.back().dump();
}

}  // namespace
}  // namespace lathe
