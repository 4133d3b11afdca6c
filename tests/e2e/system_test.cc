// Whole-system tests: the real lathe-server with a real local worker agent
// and training child, real SQLite, real gRPC on loopback, the real CLI.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "common/files.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/support/system_fixture.h"
#include "tests/support/temp_dir.h"

namespace lathe {
namespace {

using nlohmann::json;
using testing::CommandResult;
using ::testing::HasSubstr;
using testing::ParseJson;
using testing::ServerProcess;
using testing::WriteSentimentData;

class SystemTest : public testing::SentimentServerTest {
 protected:
  static void TearDownTestSuite() {
    StopSharedServer(/*expect_clean_exit=*/true);
  }

  std::unique_ptr<lathe::v1::JobService::Stub> Jobs() {
    return lathe::v1::JobService::NewStub(server_->AdminChannel());
  }

  // Submits the sentiment job through the CLI and returns its id.
  std::string SubmitSmallJob(const std::vector<std::string>& extra_params,
                             const std::string& model = "preset:bert-tiny") {
    testing::SubmitArgs args{"text-classification",
                             model,
                             Path("train.jsonl"),
                             Path("validation.jsonl"),
                             {"learning_rate=2e-3", "batch_size=16",
                              "max_seq_length=32", "warmup_ratio=0"}};
    CommandResult r =
        server_->Cli(testing::SubmitCommand(args.AddParams(extra_params)));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    json job = ParseJson(r);
    EXPECT_EQ(job.value("state", ""), "QUEUED");
    return job.value("id", "");
  }

  json Get(const std::string& id) { return testing::GetJob(*server_, id); }
};

TEST_F(SystemTest, SmallJobSucceedsAndItsCheckpointDownloadsVerified) {
  const std::string id = SubmitSmallJob(
      {"epochs=4", "eval_steps=12", "save_steps=12", "logging_steps=2"});
  ASSERT_FALSE(id.empty());

  // watch streams the live job to its end and exits 0 on success.
  CommandResult watch = server_->Cli({"watch", id});
  EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err;
  EXPECT_THAT(watch.out, HasSubstr("state RUNNING"));
  EXPECT_THAT(watch.out, HasSubstr("samples/s"));
  EXPECT_THAT(watch.out, HasSubstr("eval at step"));
  EXPECT_THAT(watch.out, HasSubstr("state SUCCEEDED"));

  CommandResult wait = server_->Cli({"wait", id});
  EXPECT_EQ(wait.exit_code, 0) << wait.out << wait.err;

  json job = Get(id);
  EXPECT_EQ(job["state"], "SUCCEEDED") << job.dump(2);
  EXPECT_EQ(job["train_metrics"]["step"], job["train_metrics"]["total_steps"]);
  EXPECT_EQ(job["train_metrics"]["total_steps"], "24");  // 4 epochs x 96/16
  EXPECT_GT(job["train_metrics"]["samples_per_second"].get<double>(), 0.0);
  ASSERT_TRUE(job["eval_metrics"].contains("accuracy")) << job.dump(2);
  ASSERT_TRUE(job["eval_metrics"].contains("f1"));
  ASSERT_TRUE(job["eval_metrics"].contains("loss"));
  EXPECT_GE(job["eval_metrics"]["accuracy"].get<double>(), 0.9) << job.dump(2);

  CommandResult cps = server_->Cli({"checkpoints", id, "--output", "json"});
  ASSERT_EQ(cps.exit_code, 0) << cps.err;
  json list = ParseJson(cps);
  ASSERT_EQ(list["checkpoints"].size(), 2u) << list.dump(2);  // steps 12, 24
  EXPECT_EQ(list["checkpoints"][0]["step"], "12");
  EXPECT_EQ(list["checkpoints"][1]["step"], "24");
  EXPECT_TRUE(list["checkpoints"][1]["final"].get<bool>());
  std::map<std::string, json> files;
  for (const auto& f : list["checkpoints"][1]["files"]) files[f["name"]] = f;
  for (const char* name : {"config.json", "model.safetensors", "vocab.txt"}) {
    EXPECT_TRUE(files.count(name)) << name << " missing from " << list.dump(2);
  }

  const std::string dest = Path("download-" + id);
  CommandResult dl = server_->Cli({"download", id, "--dest", dest});
  ASSERT_EQ(dl.exit_code, 0) << dl.out << dl.err;
  for (const auto& [name, f] : files) {
    auto sha = Sha256File(dest + "/" + name);
    ASSERT_TRUE(sha.ok()) << name;
    EXPECT_EQ(*sha, f["sha256"].get<std::string>()) << name;
  }
  json config = json::parse(*ReadFile(dest + "/config.json"));
  EXPECT_EQ(config["id2label"].size(), 2u);
  EXPECT_EQ(config["model_type"], "bert");

  // A damaged local copy is detected and fetched again.
  { std::ofstream(dest + "/model.safetensors", std::ios::app) << "junk"; }
  CommandResult again =
      server_->Cli({"download", id, "--dest", dest, "--checkpoint", "24"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(*Sha256File(dest + "/model.safetensors"),
            files["model.safetensors"]["sha256"].get<std::string>());

  // Chained fine-tuning: the downloaded checkpoint is the next job's base.
  const std::string next =
      SubmitSmallJob({"max_steps=4", "eval_steps=0"}, dest);
  CommandResult wait2 = server_->Cli({"wait", next, "--timeout", "300"});
  EXPECT_EQ(wait2.exit_code, 0) << wait2.out << wait2.err;
  json chained = Get(next);
  EXPECT_EQ(chained["state"], "SUCCEEDED") << chained.dump(2);
  // Starting from a trained model, it is good from its first steps.
  EXPECT_GE(chained["eval_metrics"]["accuracy"].get<double>(), 0.9)
      << chained.dump(2);
}

TEST_F(SystemTest, CancelStopsTheRunningChildWithinFiveSeconds) {
  const std::string id = SubmitSmallJob({"epochs=1000", "logging_steps=1"});
  // Wait (bounded) until the training child reports progress.
  json job;
  testing::WaitUntil(
      [&] {
        job = Get(id);
        return job["train_metrics"]["step"] != "0" && job["state"] == "RUNNING";
      },
      std::chrono::seconds(120), std::chrono::milliseconds(100));
  ASSERT_EQ(job["state"], "RUNNING") << job.dump(2);
  ASSERT_FALSE(testing::ProcessesMatching("jobs/" + id).empty())
      << "the training child is not running";

  const auto start = std::chrono::steady_clock::now();
  CommandResult cancel = server_->Cli({"cancel", id, "--output", "json"});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(ParseJson(cancel)["state"], "CANCELLING");
  CommandResult wait = server_->Cli({"wait", id, "--timeout", "30"});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  EXPECT_EQ(wait.exit_code, 1) << "wait exits 1 for a job that did not succeed";
  EXPECT_EQ(Get(id)["state"], "CANCELLED");
  EXPECT_LT(seconds, 5.0);
  EXPECT_TRUE(testing::ProcessesMatching("jobs/" + id).empty())
      << "the training child outlived the cancel";
}

TEST_F(SystemTest, MalformedRowFailsTheJobNamingFileAndLine) {
  {
    std::ofstream out(Path("broken.jsonl"));
    out << R"({"text": "fine", "label": "a"})"
        << "\n"
        << R"({"text": "also fine", "label": "b"})"
        << "\n"
        << R"({"text": "no label here"})"
        << "\n";
  }
  CommandResult r = server_->Cli({"submit", "--task", "text-classification",
                                  "--model", "preset:bert-tiny", "--train-data",
                                  Path("broken.jsonl"), "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string id = ParseJson(r)["id"];
  CommandResult wait = server_->Cli({"wait", id, "--timeout", "120"});
  EXPECT_EQ(wait.exit_code, 1);
  json job = Get(id);
  EXPECT_EQ(job["state"], "FAILED");
  EXPECT_THAT(job["error"].get<std::string>(), HasSubstr("broken.jsonl:3"));
  EXPECT_THAT(job["error"].get<std::string>(), HasSubstr("label"));
  // The worker survives bad data: the next job still runs.
  const std::string ok = SubmitSmallJob({"max_steps=2", "eval_steps=0"});
  EXPECT_EQ(server_->Cli({"wait", ok, "--timeout", "300"}).exit_code, 0);
}

TEST_F(SystemTest, InvalidRequestsGetInvalidArgumentNamingTheField) {
  auto jobs = Jobs();
  auto submit = [&](const std::function<void(lathe::v1::JobSpec*)>& mutate) {
    lathe::v1::SubmitJobRequest req;
    req.mutable_spec()->set_task("text-classification");
    req.mutable_spec()->set_model("preset:bert-tiny");
    req.mutable_spec()->set_train_data("file://" + Path("train.jsonl"));
    mutate(req.mutable_spec());
    lathe::v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    return jobs->SubmitJob(&ctx, req, &resp);
  };
  struct Case {
    std::function<void(lathe::v1::JobSpec*)> mutate;
    const char* field;
  };
  const std::vector<Case> cases = {
      {[](auto* s) { s->set_task("summarization"); }, "spec.task"},
      {[](auto* s) { s->set_model("preset:bert-enormous"); }, "spec.model"},
      {[](auto* s) { s->set_model("/usr/share"); }, "spec.model"},
      {[](auto* s) { s->clear_train_data(); }, "spec.train_data"},
      {[](auto* s) { s->set_train_data("file:///nonexistent/train.jsonl"); },
       "spec.train_data"},
      {[&](auto* s) { s->set_train_data("file://" + Path("missing.jsonl")); },
       "spec.train_data"},
      {[](auto* s) { s->set_validation_data("dataset:1234"); },
       "spec.validation_data"},
      {[](auto* s) { (*s->mutable_params())["batch_size"] = "0"; },
       "spec.params[batch_size]"},
      {[](auto* s) { (*s->mutable_params())["warmup_ratio"] = "nan"; },
       "spec.params[warmup_ratio]"},
      {[](auto* s) { (*s->mutable_params())["momentum"] = "0.9"; },
       "spec.params[momentum]"},
      {[](auto* s) { s->set_device("gpu"); }, "spec.device"},
  };
  for (const auto& c : cases) {
    grpc::Status s = submit(c.mutate);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_THAT(s.error_message(), HasSubstr(c.field));
  }
  // A valid file:// submit works, so the cases above failed for their field.
  EXPECT_TRUE(
      submit([](auto* s) { (*s->mutable_params())["max_steps"] = "1"; }).ok());

  {
    lathe::v1::GetJobRequest req;
    req.set_id("job-doesnotexist");
    lathe::v1::GetJobResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(jobs->GetJob(&ctx, req, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    lathe::v1::ListJobsRequest req;
    req.set_page_size(5000);
    lathe::v1::ListJobsResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = jobs->ListJobs(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("page_size"));
  }
  {
    auto datasets = lathe::v1::DatasetService::NewStub(server_->AdminChannel());
    grpc::ClientContext ctx;
    lathe::v1::UploadDatasetResponse resp;
    auto w = datasets->UploadDataset(&ctx, &resp);
    lathe::v1::UploadDatasetRequest msg;
    msg.set_name("../../etc/passwd");
    msg.set_chunk("x");
    w->Write(msg);
    w->WritesDone();
    grpc::Status s = w->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("name"));
  }
  // The CLI reports the same error and exits 2.
  CommandResult cli = server_->Cli(
      {"submit", "--task", "text-classification", "--model", "preset:bert-tiny",
       "--train-data", Path("train.jsonl"), "--param", "epochs=-3"});
  EXPECT_EQ(cli.exit_code, 2);
  EXPECT_THAT(cli.err, HasSubstr("spec.params[epochs]"));
  // The server is still healthy afterwards.
  EXPECT_EQ(server_->Cli({"list"}).exit_code, 0);
}

TEST_F(SystemTest, MetricsAreValidPrometheusText) {
  // SERVING says the server is up, not that its local worker has registered
  // yet (nor made the RPCs counted): wait for both before checking the rest.
  std::string body;
  testing::WaitUntil(
      [&] {
        body = testing::HttpGet(server_->metrics_address(), "/metrics");
        return body.find("lathe_workers 1") != std::string::npos &&
               body.find("lathe_rpcs_total{") != std::string::npos;
      },
      std::chrono::seconds(60));
  ASSERT_FALSE(body.empty());
  const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?([0-9.eE+-]+|[Nn][Aa][Nn]|[+-]?[Ii][Nn][Ff])( [0-9]+)?$)");
  // Values as Prometheus parses them: NaN and Inf in any letter case.
  const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$)");
  std::istringstream in(body);
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      EXPECT_TRUE(std::regex_match(line, comment)) << line;
    } else {
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
      ++samples;
    }
  }
  EXPECT_GT(samples, 10);
  for (const char* name :
       {"lathe_jobs{state=\"QUEUED\"}", "lathe_queue_depth_jobs",
        "lathe_workers 1", "lathe_job_start_latency_seconds_bucket",
        "lathe_rpcs_total{"}) {
    EXPECT_THAT(body, HasSubstr(name));
  }
}

// A worker agent killed mid-job: the server notices the silent heartbeat,
// requeues the job, and the restarted local worker runs it to the end as a
// new attempt.
TEST(WorkerLossTest, JobOfAVanishedWorkerIsRequeuedAndFinishes) {
  TempDir dir;
  ServerProcess server(
      dir.path() + "/data", 1,
      {"--allow-root", dir.path(), "--heartbeat-timeout-ms", "2000"});
  ASSERT_TRUE(testing::Started(server));
  WriteSentimentData(dir.path() + "/t.jsonl", 96, 0);
  const std::string id = testing::SubmitJob(
      server, {"text-classification",
               "preset:bert-tiny",
               dir.path() + "/t.jsonl",
               "",
               {"epochs=20", "batch_size=8", "max_seq_length=16",
                "logging_steps=1", "eval_steps=0"}});
  ASSERT_FALSE(id.empty());
  json job;
  testing::WaitUntil(
      [&] {
        job = testing::GetJob(server, id);
        return job["train_metrics"]["step"] != "0";
      },
      std::chrono::seconds(120), std::chrono::milliseconds(100));
  ASSERT_EQ(job["state"], "RUNNING") << job.dump(2);
  ASSERT_FALSE(testing::ProcessesMatching("jobs/" + id).empty());
  for (pid_t p : testing::AgentProcesses(dir.path() + "/data/workers/0", id)) {
    ::kill(p, SIGKILL);
  }
  CommandResult wait =
      server.Cli({"wait", id, "--timeout", "300", "--output", "json"});
  EXPECT_EQ(wait.exit_code, 0) << wait.out << wait.err;
  json done = json::parse(wait.out);
  EXPECT_EQ(done["state"], "SUCCEEDED");
  EXPECT_EQ(done["attempt"], 2);
  CommandResult events = server.Cli({"watch", id});
  EXPECT_THAT(events.out,
              HasSubstr("stopped sending heartbeats; job requeued"));
  EXPECT_THAT(events.out, HasSubstr("attempt 2 started"));
  EXPECT_EQ(server.Stop(), 0);
}

// A server without workers; the test plays the worker. Downloads resume
// from any offset, across chunk boundaries, and say what is wrong.
TEST(DownloadTest, EveryOffsetGivesTheRestOfTheFile) {
  TempDir dir;
  ServerProcess server(dir.path() + "/data", 0, {"--allow-root", dir.path()});
  ASSERT_TRUE(testing::Started(server));
  auto jobs = lathe::v1::JobService::NewStub(server.AdminChannel());
  auto workers = lathe::v1::WorkerService::NewStub(
      server.ChannelAs(server.NewToken("test-worker", "", "worker")));
  WriteSentimentData(dir.path() + "/t.jsonl", 8, 0);
  const std::string id = testing::SubmitJob(
      server,
      {"text-classification", "preset:bert-tiny", dir.path() + "/t.jsonl"});
  ASSERT_FALSE(id.empty());
  lathe::v1::AcquireJobResponse acquired;
  {
    lathe::v1::RegisterWorkerRequest reg;
    reg.set_name("test");
    reg.add_devices("cpu");
    lathe::v1::RegisterWorkerResponse worker;
    grpc::ClientContext rctx;
    ASSERT_TRUE(workers->RegisterWorker(&rctx, reg, &worker).ok());
    lathe::v1::AcquireJobRequest req;
    req.set_worker_id(worker.worker_id());
    grpc::ClientContext actx;
    ASSERT_TRUE(workers->AcquireJob(&actx, req, &acquired).ok());
    ASSERT_EQ(acquired.assignment().job_id(), id);
  }
  // A little over two 2 MiB chunks, of bytes that differ by position.
  std::string content((4 << 20) + 12345, '\0');
  for (size_t i = 0; i < content.size(); ++i) {
    content[i] = static_cast<char>((i * 2654435761u) >> 13);
  }
  lathe::v1::FileInfo info;
  info.set_name("model.safetensors");
  info.set_size(static_cast<int64_t>(content.size()));
  info.set_sha256(Sha256Hex(content));
  {
    grpc::ClientContext ctx;
    lathe::v1::UploadCheckpointFileResponse resp;
    auto writer = workers->UploadCheckpointFile(&ctx, &resp);
    for (size_t at = 0; at < content.size(); at += 1 << 20) {
      lathe::v1::UploadCheckpointFileRequest msg;
      if (at == 0) {
        msg.set_job_id(id);
        msg.set_attempt(acquired.assignment().attempt());
        msg.set_step(1);
        *msg.mutable_file() = info;
      }
      msg.set_chunk(content.substr(at, 1 << 20));
      ASSERT_TRUE(writer->Write(msg));
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    lathe::v1::ReportEventsRequest req;
    req.set_job_id(id);
    req.set_attempt(acquired.assignment().attempt());
    auto* e = req.add_events();
    e->set_type(lathe::v1::EVENT_TYPE_CHECKPOINT);
    e->mutable_checkpoint()->set_step(1);
    *e->mutable_checkpoint()->add_files() = info;
    lathe::v1::ReportEventsResponse rep;
    grpc::ClientContext rctx;
    ASSERT_TRUE(workers->ReportEvents(&rctx, req, &rep).ok());
  }
  // Downloads from `offset`; the data must be the file's rest, each message
  // at the offset it names, and only the first one describes the file.
  auto download = [&](int64_t offset, const std::string& file,
                      std::string* data) {
    lathe::v1::DownloadCheckpointFileRequest req;
    req.set_job_id(id);
    req.set_file(file);
    req.set_offset(offset);
    grpc::ClientContext ctx;
    auto reader = jobs->DownloadCheckpointFile(&ctx, req);
    lathe::v1::DownloadCheckpointFileResponse msg;
    int messages = 0;
    while (reader->Read(&msg)) {
      EXPECT_EQ(msg.offset(), offset + static_cast<int64_t>(data->size()));
      EXPECT_EQ(msg.has_file(), messages == 0);
      if (messages == 0) {
        EXPECT_EQ(msg.file().sha256(), info.sha256());
        EXPECT_EQ(msg.file().size(), info.size());
      }
      *data += msg.data();
      ++messages;
    }
    return reader->Finish();
  };
  const int64_t size = info.size();
  for (int64_t offset :
       {int64_t{0}, int64_t{1}, int64_t{4096 + 7}, int64_t{2 << 20},
        int64_t{(2 << 20) + 1}, int64_t{4 << 20}, size - 1, size}) {
    std::string data;
    grpc::Status s = download(offset, "model.safetensors", &data);
    ASSERT_TRUE(s.ok()) << offset << ": " << s.error_message();
    EXPECT_TRUE(data == content.substr(static_cast<size_t>(offset)))
        << "offset " << offset << ": got " << data.size() << " bytes";
  }
  std::string none;
  EXPECT_EQ(download(size + 1, "model.safetensors", &none).error_code(),
            grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(download(0, "other.bin", &none).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // lathe download (over gRPC: this server has no HTTP listener) resumes
  // a partial file from where it stopped, across chunk boundaries.
  const std::string dest = dir.path() + "/cli";
  const std::string part = dest + "/model.safetensors.part";
  for (int64_t have : {int64_t{1}, int64_t{(2 << 20) + 1}, size}) {
    ASSERT_TRUE(MakeDirs(dest).ok());
    std::filesystem::remove(dest + "/model.safetensors");
    ASSERT_TRUE(
        WriteFileAtomic(part, content.substr(0, static_cast<size_t>(have)))
            .ok());
    auto cli =
        server.Cli({"download", id, "--checkpoint", "1", "--dest", dest});
    ASSERT_EQ(cli.exit_code, 0) << have << ": " << cli.out << cli.err;
    EXPECT_THAT(cli.out, HasSubstr("over gRPC"));
    EXPECT_TRUE(ReadFile(dest + "/model.safetensors").value_or("") == content)
        << "resumed from " << have;
    EXPECT_FALSE(PathExists(part));
  }
  // A part file whose bytes are wrong fails the check and is removed, so
  // the next try starts over.
  std::filesystem::remove(dest + "/model.safetensors");
  ASSERT_TRUE(WriteFileAtomic(part, std::string(1000, 'x')).ok());
  auto damaged =
      server.Cli({"download", id, "--checkpoint", "1", "--dest", dest});
  EXPECT_NE(damaged.exit_code, 0);
  EXPECT_THAT(damaged.err, HasSubstr("does not match"));
  EXPECT_FALSE(PathExists(part));
  auto again =
      server.Cli({"download", id, "--checkpoint", "1", "--dest", dest});
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_EQ(Sha256File(dest + "/model.safetensors").value_or(""),
            info.sha256());

  // A worker fetches the dataset the same way, from any offset.
  const std::string ref = acquired.assignment().train_dataset().ref();
  const std::string train = *ReadFile(dir.path() + "/t.jsonl");
  for (int64_t offset : {int64_t{0}, int64_t{5}}) {
    lathe::v1::FetchDatasetRequest req;
    req.set_ref(ref);
    req.set_offset(offset);
    grpc::ClientContext ctx;
    auto reader = workers->FetchDataset(&ctx, req);
    lathe::v1::FetchDatasetResponse msg;
    std::string data;
    while (reader->Read(&msg)) data += msg.data();
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(data, train.substr(static_cast<size_t>(offset)));
  }
  EXPECT_EQ(server.Stop(), 0);
}

// A separate server without workers: acknowledged jobs survive kill -9.
TEST(ServerRestartTest, AcknowledgedJobsSurviveKillNine) {
  TempDir dir;
  ServerProcess server(dir.path() + "/data", 0, {"--allow-root", dir.path()});
  ASSERT_TRUE(testing::Started(server));
  WriteSentimentData(dir.path() + "/t.jsonl", 8, 0);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(testing::SubmitJob(
        server,
        {"text-classification", "preset:bert-tiny", dir.path() + "/t.jsonl"}));
    ASSERT_FALSE(ids.back().empty());
  }
  server.Kill();
  ASSERT_TRUE(testing::Started(server));
  CommandResult list = server.Cli({"list", "--output", "json"});
  ASSERT_EQ(list.exit_code, 0);
  json l = json::parse(list.out);
  std::set<std::string> listed;
  for (const auto& j : l["jobs"]) {
    listed.insert(j["id"].get<std::string>());
    EXPECT_EQ(j["state"], "QUEUED");
  }
  for (const auto& id : ids) EXPECT_TRUE(listed.count(id)) << id;
  EXPECT_EQ(server.Stop(), 0);
}

}  // namespace
}  // namespace lathe
