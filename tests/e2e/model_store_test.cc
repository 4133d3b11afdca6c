// Whole-system tests of the model store and model references: the real
// lathe-server with one real local worker and training child, the real CLI.
// A short preset:bert-tiny job provides checkpoints; they are pushed to the
// store, trained from by name, from the worker's cache, and as job:ID and
// job:ID@STEP references.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/files.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/support/system_fixture.h"

namespace lathe {
namespace {

using nlohmann::json;
using testing::CommandResult;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::ParseJson;

// A tiny, clearly separable sentiment set in JSONL.
void WriteData(const std::string& path, int rows, int offset) {
  const char* const pos[] = {"great", "excellent", "wonderful", "happy"};
  const char* const neg[] = {"terrible", "awful", "horrible", "sad"};
  std::ofstream out(path);
  for (int i = 0; i < rows; ++i) {
    const bool p = (i + offset) % 2 == 0;
    json row = {{"text", std::string("the movie was ") +
                             (p ? pos : neg)[(i * 3 + offset) % 4]},
                {"label", p ? "positive" : "negative"}};
    out << row.dump() << "\n";
  }
}

class ModelsTest : public testing::SharedServerTest {
 protected:
  static void SetUpTestSuite() {
    SharedServerTest::SetUpTestSuite();
    WriteData(Path("train.jsonl"), 32, 0);
    WriteData(Path("validation.jsonl"), 16, 1);
  }

  // A 4-step job (2 epochs of 32 rows, batch 16) that evaluates and
  // checkpoints every 2 steps, with the further CLI `flags`.
  static testing::SubmitArgs Job(const std::string& model,
                                 const std::vector<std::string>& flags) {
    return {"text-classification",
            model,
            Path("train.jsonl"),
            Path("validation.jsonl"),
            {"epochs=2", "batch_size=16", "max_seq_length=16", "eval_steps=2",
             "save_steps=2", "learning_rate=2e-3"},
            flags};
  }
  // Submits that job; returns the CLI's result, for the caller to check.
  CommandResult Submit(const std::string& model,
                       const std::vector<std::string>& flags = {}) {
    return server_->Cli(testing::SubmitCommand(Job(model, flags)));
  }
  // Submits that job, expecting it accepted; returns its id.
  std::string SubmitOk(const std::string& model,
                       const std::vector<std::string>& flags = {}) {
    return testing::SubmitJob(*server_, Job(model, flags));
  }

  // Waits for the job's end and returns its event log as `lathe watch`
  // prints it.
  std::string WaitSucceeded(const std::string& id) {
    CommandResult wait = server_->Cli({"wait", id, "--timeout", "600"});
    EXPECT_EQ(wait.exit_code, 0) << wait.out << wait.err;
    CommandResult watch = server_->Cli({"watch", id});
    EXPECT_THAT(watch.out, HasSubstr("state SUCCEEDED")) << watch.out;
    return watch.out;
  }

  // The first job, trained from the preset; its checkpoints feed the rest.
  std::string BaseJob() {
    if (base_job_ == nullptr) {
      const std::string id = SubmitOk("preset:bert-tiny");
      WaitSucceeded(id);
      base_job_ = new std::string(id);
    }
    return *base_job_;
  }

  json ListModels() {
    CommandResult r = server_->Cli({"models", "list", "--output", "json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return ParseJson(r);
  }

  static bool Lists(const json& list, const std::string& name) {
    for (const auto& m : list.value("models", json::array())) {
      if (m.value("name", "") == name) return true;
    }
    return false;
  }

  static std::string* base_job_;
};

std::string* ModelsTest::base_job_ = nullptr;

TEST_F(ModelsTest, PushedCheckpointTrainsByNameAndComesFromTheWorkerCache) {
  const std::string base = BaseJob();
  const std::string dest = Path("best-" + base);
  CommandResult dl =
      server_->Cli({"download", base, "--dest", dest, "--checkpoint", "best"});
  ASSERT_EQ(dl.exit_code, 0) << dl.out << dl.err;

  CommandResult push = server_->Cli(
      {"models", "push", dest, "--name", "tiny-sentiment", "--output", "json"});
  ASSERT_EQ(push.exit_code, 0) << push.out << push.err;
  EXPECT_THAT(push.err, HasSubstr("100%")) << "progress on stderr";
  json pushed = ParseJson(push);
  EXPECT_TRUE(pushed["created"].get<bool>());
  const std::string digest = pushed["model"]["digest"];
  EXPECT_EQ(digest.size(), 64u);
  std::set<std::string> paths;
  for (const auto& f : pushed["model"]["files"]) paths.insert(f["path"]);
  EXPECT_TRUE(paths.count("config.json") && paths.count("model.safetensors") &&
              paths.count("vocab.txt"))
      << pushed.dump(2);
  EXPECT_FALSE(paths.count("trainer_state.json")) << "training state left out";
  EXPECT_FALSE(paths.count("training_state.safetensors"));

  // The same content again is a no-op.
  CommandResult again = server_->Cli(
      {"models", "push", dest, "--name", "tiny-sentiment", "--output", "json"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_FALSE(ParseJson(again)["created"].get<bool>());
  EXPECT_EQ(ParseJson(again)["model"]["digest"], digest);

  json list = ListModels();
  EXPECT_TRUE(Lists(list, "tiny-sentiment")) << list.dump(2);
  std::set<std::string> presets;
  for (const auto& p : list["presets"]) presets.insert(p["name"]);
  for (const char* p : {"preset:bert-tiny", "preset:bert-mini",
                        "preset:gpt2-tiny", "preset:llama-tiny"}) {
    EXPECT_TRUE(presets.count(p)) << p;
  }
  CommandResult text = server_->Cli({"models", "list"});
  EXPECT_THAT(text.out, HasSubstr("tiny-sentiment"));
  EXPECT_THAT(text.out, HasSubstr(digest.substr(0, 16)));
  EXPECT_THAT(text.out, HasSubstr("preset:llama-tiny"));

  // First use fetches the model into the worker's cache, the second reuses
  // it.
  const std::string first = SubmitOk("tiny-sentiment");
  const std::string first_log = WaitSucceeded(first);
  EXPECT_THAT(first_log, HasSubstr("model " + digest + " fetched"));
  const std::string second = SubmitOk("tiny-sentiment");
  const std::string second_log = WaitSucceeded(second);
  EXPECT_THAT(second_log, HasSubstr("model " + digest + " from cache"));
  EXPECT_THAT(second_log, Not(HasSubstr("fetched")));
  CommandResult get = server_->Cli({"get", second, "--output", "json"});
  EXPECT_EQ(ParseJson(get)["model_source"]["digest"], digest);
}

TEST_F(ModelsTest, DeletedModelLeavesTheListButItsQueuedJobStillRuns) {
  const std::string base = BaseJob();
  // Another checkpoint than any pushed so far: a digest the worker has not
  // cached, so the queued job must fetch it after the delete.
  const std::string dest = Path("step2-" + base);
  CommandResult dl =
      server_->Cli({"download", base, "--dest", dest, "--checkpoint", "2"});
  ASSERT_EQ(dl.exit_code, 0) << dl.out << dl.err;
  CommandResult push = server_->Cli(
      {"models", "push", dest, "--name", "step-two", "--output", "json"});
  ASSERT_EQ(push.exit_code, 0) << push.out << push.err;
  const std::string digest = ParseJson(push)["model"]["digest"];
  CommandResult cps = server_->Cli({"checkpoints", base, "--output", "json"});
  const bool step2_is_best = ParseJson(cps)["best_step"] == "2";

  // The single worker is busy with `blocker` while `queued` waits.
  const std::string blocker = SubmitOk("preset:bert-tiny");
  const std::string queued = SubmitOk("step-two");
  CommandResult del = server_->Cli({"models", "delete", "step-two"});
  ASSERT_EQ(del.exit_code, 0) << del.out << del.err;
  EXPECT_THAT(del.out, HasSubstr("deleted step-two"));
  EXPECT_FALSE(Lists(ListModels(), "step-two"));
  CommandResult del2 = server_->Cli({"models", "delete", "step-two"});
  EXPECT_NE(del2.exit_code, 0);
  EXPECT_THAT(del2.err, HasSubstr("NOT_FOUND"));

  WaitSucceeded(blocker);
  const std::string log = WaitSucceeded(queued);
  // The job trains from the pinned files, fetched after the name was gone
  // (unless the same bytes were cached earlier as the best checkpoint).
  EXPECT_THAT(log, HasSubstr("model " + digest +
                             (step2_is_best ? std::string() : " fetched")))
      << log;
  CommandResult again = Submit("step-two");
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.err, HasSubstr("NOT_FOUND"));
}

TEST_F(ModelsTest, EarlierJobsCheckpointsTrainByJobReference) {
  const std::string base = BaseJob();
  const std::string best = SubmitOk("job:" + base);
  const std::string at2 = SubmitOk("job:" + base + "@2");
  WaitSucceeded(best);
  WaitSucceeded(at2);
  CommandResult cps = server_->Cli({"checkpoints", base, "--output", "json"});
  ASSERT_EQ(cps.exit_code, 0) << cps.err;
  const std::string best_step = ParseJson(cps)["best_step"];
  CommandResult get = server_->Cli({"get", best, "--output", "json"});
  EXPECT_EQ(ParseJson(get)["model_source"]["origin"],
            "job:" + base + "@" + best_step);
  get = server_->Cli({"get", at2, "--output", "json"});
  EXPECT_EQ(ParseJson(get)["model_source"]["origin"], "job:" + base + "@2");
}

TEST_F(ModelsTest, BadReferencesAndUnsafeModelsAreRefused) {
  const std::string base = BaseJob();
  CommandResult unknown = Submit("no-such-model");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(unknown.err, HasSubstr("spec.model"));

  CommandResult step = Submit("job:" + base + "@999");
  EXPECT_NE(step.exit_code, 0);
  EXPECT_THAT(step.err, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(step.err, HasSubstr("spec.model"));

  // A job that cannot start (no worker has that much memory) has no
  // checkpoint.
  const std::string waiting =
      SubmitOk("preset:bert-tiny", {"--min-device-memory-mb", "1000000000"});
  CommandResult early = Submit("job:" + waiting);
  EXPECT_NE(early.exit_code, 0);
  EXPECT_THAT(early.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(early.err, HasSubstr("no checkpoint"));
  EXPECT_EQ(server_->Cli({"cancel", waiting}).exit_code, 0);

  CommandResult malformed = Submit("job:" + base + "@x");
  EXPECT_EQ(malformed.exit_code, 2);
  EXPECT_THAT(malformed.err, HasSubstr("INVALID_ARGUMENT"));

  // Pickled weights are refused with the way out.
  const std::string pickled = Path("pickled");
  std::filesystem::create_directories(pickled);
  std::ofstream(pickled + "/config.json") << "{\"model_type\":\"bert\"}";
  std::ofstream(pickled + "/pytorch_model.bin") << "not really a pickle";
  CommandResult pk =
      server_->Cli({"models", "push", pickled, "--name", "pickled"});
  EXPECT_EQ(pk.exit_code, 2) << pk.out << pk.err;
  EXPECT_THAT(pk.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(pk.err, HasSubstr("convert the weights to safetensors"));
  EXPECT_FALSE(Lists(ListModels(), "pickled"));

  // A client that sends an escaping path is refused before any byte lands.
  auto stub = lathe::v1::ModelService::NewStub(server_->AdminChannel());
  grpc::ClientContext ctx;
  lathe::v1::PushModelResponse resp;
  auto writer = stub->PushModel(&ctx, &resp);
  lathe::v1::PushModelRequest msg;
  msg.set_name("evil");
  const std::string content = "owned";
  msg.mutable_file()->set_path("../../escape.txt");
  msg.mutable_file()->set_size(static_cast<int64_t>(content.size()));
  msg.mutable_file()->set_sha256(Sha256Hex(content));
  msg.set_chunk(content);
  writer->Write(msg);
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("file.path"));
  EXPECT_FALSE(Lists(ListModels(), "evil"));
}

}  // namespace
}  // namespace lathe
