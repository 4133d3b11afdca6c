// Who may call what, over gRPC with a bearer token, as the CLI and the
// workers send it (the fixture: access_fixture.h).
//
// Every method of every service in lathe/v1/lathe.proto must be in both the
// server's table and the fixture's matrix: an RPC added without a rule, or
// without a row there, fails. Each method is called with no token, a
// malformed token, an unknown one, a wrong secret, an expired token, a
// revoked token, a disabled user's token, and a token of each role.
#include <atomic>
#include <thread>

#include "tests/server/access_fixture.h"

namespace lathe::server {
namespace {

TEST(AccessTableTest, EveryMethodHasARuleAndARowInTheMatrix) {
  const auto methods = ApiMethods();
  EXPECT_GE(methods.size(), 32u);
  for (const auto& m : methods) {
    EXPECT_NE(AccessPolicy::RuleFor("lathe.v1." + m), nullptr)
        << m << " has no access rule in server/api/access.cc";
    EXPECT_EQ(Matrix().count(m), 1u)
        << m << " has no row in this test's permission matrix";
  }
  // And nothing in the table that the API does not have.
  EXPECT_EQ(AccessPolicy::Methods().size(), methods.size());
}

TEST(AccessTableTest, AMethodWithoutARuleIsRefused) {
  auto s = AccessPolicy().Check("lathe.v1.JobService.DropAllJobs",
                                Principal::System());
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(AccessPolicy::RuleFor("lathe.v1.JobService.DropAllJobs"), nullptr);
}

TEST_F(AccessTest, EveryMethodRefusesABadTokenAndAdmitsOnlyItsRoles) {
  const auto bad = BadCredentials();
  const auto roles = RoleTokens();
  const lathe::v1::WhoAmIRequest empty;  // no fields: an empty message
  for (const auto& method : ApiMethods()) {
    auto row = Matrix().find(method);
    ASSERT_NE(row, Matrix().end()) << method;
    for (const auto& [what, header] : bad) {
      EXPECT_EQ(Call(method, header, empty).error_code(),
                grpc::StatusCode::UNAUTHENTICATED)
          << method << " with " << what;
    }
    for (const auto& [role, header] : roles) {
      const grpc::Status s = Call(method, header, empty);
      if (row->second.count(role) > 0) {
        EXPECT_NE(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
            << method << " as " << Role_Name(role) << ": " << s.error_message();
        EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
            << method << " as " << Role_Name(role);
      } else {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
            << method << " as " << Role_Name(role) << ": " << s.error_message();
      }
    }
  }
}

TEST_F(AccessTest, AnotherTeamsJobsDatasetsAndModelsDoNotExist) {
  const std::string blue_data =
      Dataset("blue", "{\"text\":\"b\",\"label\":1}\n");
  auto bob_job = manager_->Submit(Spec(blue_data), "", Who(bob_));
  ASSERT_TRUE(bob_job.ok()) << bob_job.status();
  EXPECT_EQ(bob_job->team(), "blue");
  EXPECT_EQ(bob_job->spec().owner(), "bob");
  const std::string id = bob_job->id();

  auto jobs = Jobs();
  auto not_found = [&](const grpc::Status& s, const char* what) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND)
        << what << ": " << s.error_message();
  };
  {
    lathe::v1::GetJobRequest req;
    req.set_id(id);
    lathe::v1::GetJobResponse resp;
    not_found(jobs->GetJob(As(alice_).get(), req, &resp), "GetJob");
    EXPECT_TRUE(jobs->GetJob(As(admin_).get(), req, &resp).ok());
    EXPECT_TRUE(jobs->GetJob(As(bob_).get(), req, &resp).ok());
  }
  {
    lathe::v1::CancelJobRequest req;
    req.set_id(id);
    lathe::v1::CancelJobResponse resp;
    not_found(jobs->CancelJob(As(alice_).get(), req, &resp), "CancelJob");
    lathe::v1::PauseJobRequest p;
    p.set_id(id);
    lathe::v1::PauseJobResponse pr;
    not_found(jobs->PauseJob(As(alice_).get(), p, &pr), "PauseJob");
    lathe::v1::ResumeJobRequest r;
    r.set_id(id);
    lathe::v1::ResumeJobResponse rr;
    not_found(jobs->ResumeJob(As(alice_).get(), r, &rr), "ResumeJob");
    lathe::v1::RequestCheckpointRequest c;
    c.set_id(id);
    lathe::v1::RequestCheckpointResponse cr;
    not_found(jobs->RequestCheckpoint(As(alice_).get(), c, &cr),
              "RequestCheckpoint");
  }
  {
    lathe::v1::ListCheckpointsRequest req;
    req.set_job_id(id);
    lathe::v1::ListCheckpointsResponse resp;
    not_found(jobs->ListCheckpoints(As(alice_).get(), req, &resp),
              "ListCheckpoints");
    lathe::v1::DownloadCheckpointFileRequest d;
    d.set_job_id(id);
    d.set_file("model.safetensors");
    not_found(Call("JobService.DownloadCheckpointFile", alice_, d),
              "DownloadCheckpointFile");
    lathe::v1::WatchJobRequest w;
    w.set_id(id);
    not_found(Call("JobService.WatchJob", alice_, w), "WatchJob");
  }
  {
    lathe::v1::ListJobsRequest req;
    lathe::v1::ListJobsResponse resp;
    ASSERT_TRUE(jobs->ListJobs(As(alice_).get(), req, &resp).ok());
    EXPECT_EQ(resp.jobs_size(), 0);
    ASSERT_TRUE(jobs->ListJobs(As(admin_).get(), req, &resp).ok());
    EXPECT_EQ(resp.jobs_size(), 1);
  }
  {
    // Chaining from bob's job, or training on bob's dataset.
    lathe::v1::SubmitJobRequest req;
    *req.mutable_spec() =
        Spec(Dataset("red", "{\"text\":\"r\",\"label\":1}\n"));
    req.mutable_spec()->set_model("job:" + id);
    lathe::v1::SubmitJobResponse resp;
    not_found(jobs->SubmitJob(As(alice_).get(), req, &resp), "job:ID");
    *req.mutable_spec() = Spec(blue_data);
    not_found(jobs->SubmitJob(As(alice_).get(), req, &resp), "dataset");
    // An owner other than oneself is refused; the owner is the token's.
    req.mutable_spec()->set_owner("bob");
    EXPECT_EQ(jobs->SubmitJob(As(bob_).get(), req, &resp).error_code(),
              grpc::StatusCode::OK);
    EXPECT_EQ(resp.job().spec().owner(), "bob");
    *req.mutable_spec() =
        Spec(Dataset("red", "{\"text\":\"r\",\"label\":1}\n"));
    req.mutable_spec()->set_owner("bob");
    EXPECT_EQ(jobs->SubmitJob(As(alice_).get(), req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    // A stored model of team blue.
    auto push = *manager_->models()->StartPush("blue-model", false, Who(bob_));
    for (const auto& [path, bytes] : std::map<std::string, std::string>{
             {"config.json", "{}"}, {"model.safetensors", "w"}}) {
      lathe::v1::ModelFile f;
      f.set_path(path);
      f.set_size(static_cast<int64_t>(bytes.size()));
      f.set_sha256(Sha256Hex(bytes));
      ASSERT_TRUE(push->BeginFile(f).ok());
      ASSERT_TRUE(push->Append(bytes).ok());
    }
    ASSERT_TRUE(push->Finish().ok());
    auto models = lathe::v1::ModelService::NewStub(channel_);
    lathe::v1::GetModelRequest get;
    get.set_name("blue-model");
    lathe::v1::GetModelResponse got;
    not_found(models->GetModel(As(alice_).get(), get, &got), "GetModel");
    EXPECT_TRUE(models->GetModel(As(bob_).get(), get, &got).ok());
    EXPECT_EQ(got.model().team(), "blue");
    lathe::v1::ListModelsResponse listed;
    ASSERT_TRUE(models->ListModels(As(alice_).get(), {}, &listed).ok());
    EXPECT_EQ(listed.models_size(), 0);
    ASSERT_TRUE(models->ListModels(As(admin_).get(), {}, &listed).ok());
    EXPECT_EQ(listed.models_size(), 1);
    lathe::v1::DeleteModelRequest del;
    del.set_name("blue-model");
    lathe::v1::DeleteModelResponse deleted;
    not_found(models->DeleteModel(As(alice_).get(), del, &deleted),
              "DeleteModel");
    lathe::v1::SubmitJobRequest req;
    *req.mutable_spec() =
        Spec(Dataset("red", "{\"text\":\"r\",\"label\":1}\n"));
    req.mutable_spec()->set_model("blue-model");
    lathe::v1::SubmitJobResponse resp;
    not_found(jobs->SubmitJob(As(alice_).get(), req, &resp), "stored model");
    // Pushing over another team's name is refused whatever the content.
    auto over = *manager_->models()->StartPush("blue-model", true, Who(alice_));
    lathe::v1::ModelFile f;
    f.set_path("config.json");
    f.set_size(2);
    f.set_sha256(Sha256Hex("{}"));
    ASSERT_TRUE(over->BeginFile(f).ok());
    ASSERT_TRUE(over->Append("{}").ok());
    f.set_path("model.safetensors");
    f.set_size(1);
    f.set_sha256(Sha256Hex("w"));
    ASSERT_TRUE(over->BeginFile(f).ok());
    ASSERT_TRUE(over->Append("w").ok());
    EXPECT_EQ(over->Finish().status().code(), absl::StatusCode::kAlreadyExists);
  }
}

TEST_F(AccessTest, ATeamSharesItsJobsAndAViewerOnlyReads) {
  const std::string red = Dataset("red", "{\"text\":\"r\",\"label\":1}\n");
  auto job = manager_->Submit(Spec(red), "", Who(alice_));
  ASSERT_TRUE(job.ok()) << job.status();
  auto jobs = Jobs();
  lathe::v1::GetJobRequest get;
  get.set_id(job->id());
  lathe::v1::GetJobResponse got;
  EXPECT_TRUE(jobs->GetJob(As(vic_).get(), get, &got).ok());
  lathe::v1::CancelJobRequest cancel;
  cancel.set_id(job->id());
  lathe::v1::CancelJobResponse cancelled;
  EXPECT_EQ(jobs->CancelJob(As(vic_).get(), cancel, &cancelled).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(jobs->CancelJob(As(carol_).get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.job().state(), lathe::v1::CANCELLED);
}

TEST_F(AccessTest, ARevokedTokenIsRefusedOnTheNextCall) {
  auto admin = lathe::v1::AdminService::NewStub(channel_);
  lathe::v1::CreateTokenRequest create;
  create.set_name("ci");
  lathe::v1::CreateTokenResponse made;
  ASSERT_TRUE(admin->CreateToken(As(alice_).get(), create, &made).ok());
  const std::string header = "Bearer " + made.secret();
  EXPECT_EQ(made.token().user(), "alice");
  // The secret is not in any listing.
  lathe::v1::ListTokensResponse listed;
  ASSERT_TRUE(admin->ListTokens(As(admin_).get(), {}, &listed).ok());
  EXPECT_EQ(listed.DebugString().find(made.secret()), std::string::npos);
  lathe::v1::WhoAmIResponse who;
  ASSERT_TRUE(admin->WhoAmI(As(header).get(), {}, &who).ok());
  EXPECT_EQ(who.user().name(), "alice");
  // Bob cannot revoke alice's token: to him it does not exist.
  lathe::v1::RevokeTokenRequest revoke;
  revoke.set_id(made.token().id());
  lathe::v1::RevokeTokenResponse revoked;
  EXPECT_EQ(admin->RevokeToken(As(bob_).get(), revoke, &revoked).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(admin->RevokeToken(As(alice_).get(), revoke, &revoked).ok());
  EXPECT_EQ(admin->WhoAmI(As(header).get(), {}, &who).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A member cannot make tokens for others, or users.
  create.set_user("bob");
  EXPECT_EQ(admin->CreateToken(As(alice_).get(), create, &made).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AccessTest, TheAuditLogKeepsChangesAndRefusals) {
  auto jobs = Jobs();
  lathe::v1::SubmitJobRequest req;
  *req.mutable_spec() = Spec(Dataset("red", "{\"text\":\"r\",\"label\":1}\n"));
  lathe::v1::SubmitJobResponse resp;
  ASSERT_TRUE(jobs->SubmitJob(As(alice_).get(), req, &resp).ok());
  EXPECT_EQ(jobs->SubmitJob(As(vic_).get(), req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  lathe::v1::GetJobResponse got;
  EXPECT_EQ(jobs->GetJob(As("Bearer nope").get(), {}, &got).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  auto admin = lathe::v1::AdminService::NewStub(channel_);
  lathe::v1::ListAuditResponse audit;
  ASSERT_TRUE(admin->ListAudit(As(admin_).get(), {}, &audit).ok());
  ASSERT_GE(audit.entries_size(), 3);
  // Newest first.
  EXPECT_EQ(audit.entries(0).method(), "JobService.GetJob");
  EXPECT_EQ(audit.entries(0).code(), "UNAUTHENTICATED");
  EXPECT_EQ(audit.entries(1).user(), "vic");
  EXPECT_EQ(audit.entries(1).code(), "PERMISSION_DENIED");
  EXPECT_EQ(audit.entries(2).user(), "alice");
  EXPECT_EQ(audit.entries(2).method(), "JobService.SubmitJob");
  EXPECT_EQ(audit.entries(2).resource(), resp.job().id());
  EXPECT_EQ(audit.entries(2).code(), "OK");
  EXPECT_NE(audit.entries(2).peer().find("127.0.0.1"), std::string::npos);
  // Reads that were admitted are not kept.
  ASSERT_TRUE(admin->ListAudit(As(admin_).get(), {}, &audit).ok());
  for (const auto& e : audit.entries()) {
    EXPECT_NE(e.method(), "AdminService.ListAudit");
  }
  // A member may not read it.
  EXPECT_EQ(admin->ListAudit(As(alice_).get(), {}, &audit).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AccessTest, AWorkerActsOnlyForItselfAndFetchesOnlyWhatItsJobsUse) {
  const std::string other = Token("other-box", "", ROLE_WORKER);
  auto workers = lathe::v1::WorkerService::NewStub(channel_);
  lathe::v1::RegisterWorkerRequest reg;
  reg.set_name("gpu-box");
  reg.add_devices("cpu");
  lathe::v1::RegisterWorkerResponse registered;
  ASSERT_TRUE(
      workers->RegisterWorker(As(worker_).get(), reg, &registered).ok());
  const std::string w = registered.worker_id();
  lathe::v1::HeartbeatRequest hb;
  hb.set_worker_id(w);
  lathe::v1::HeartbeatResponse hr;
  EXPECT_TRUE(workers->Heartbeat(As(worker_).get(), hb, &hr).ok());
  EXPECT_EQ(workers->Heartbeat(As(other).get(), hb, &hr).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  const std::string data = Dataset("red", "{\"text\":\"r\",\"label\":1}\n");
  lathe::v1::FetchDatasetRequest fetch;
  fetch.set_ref(data);
  // No job uses it yet.
  EXPECT_EQ(Call("WorkerService.FetchDataset", worker_, fetch).error_code(),
            grpc::StatusCode::NOT_FOUND);
  auto job = manager_->Submit(Spec(data), "", Who(alice_));
  ASSERT_TRUE(job.ok());
  lathe::v1::AcquireJobRequest acquire;
  acquire.set_worker_id(w);
  lathe::v1::AcquireJobResponse acquired;
  EXPECT_EQ(
      workers->AcquireJob(As(other).get(), acquire, &acquired).error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(workers->AcquireJob(As(worker_).get(), acquire, &acquired).ok());
  ASSERT_EQ(acquired.assignment().job_id(), job->id());
  EXPECT_TRUE(Call("WorkerService.FetchDataset", worker_, fetch).ok());
  EXPECT_EQ(Call("WorkerService.FetchDataset", other, fetch).error_code(),
            grpc::StatusCode::NOT_FOUND);
  lathe::v1::ReportEventsRequest report;
  report.set_job_id(job->id());
  report.set_attempt(acquired.assignment().attempt());
  lathe::v1::ReportEventsResponse reported;
  EXPECT_EQ(
      workers->ReportEvents(As(other).get(), report, &reported).error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(workers->ReportEvents(As(worker_).get(), report, &reported).ok());
}

TEST_F(AccessTest, AnUploadThatGoesQuietIsEnded) {
  std::atomic<bool> stop{false};
  std::thread reaper([&] {
    while (!stop) {
      gate_->watchdog()->Sweep(absl::Now());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  auto datasets = lathe::v1::DatasetService::NewStub(channel_);
  auto ctx = As(alice_);
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::seconds(30));
  lathe::v1::UploadDatasetResponse resp;
  auto writer = datasets->UploadDataset(ctx.get(), &resp);
  lathe::v1::UploadDatasetRequest first;
  first.set_name("slow.jsonl");
  first.set_chunk("{\"text\":\"a\",\"label\":1}\n");
  ASSERT_TRUE(writer->Write(first));
  // Then nothing: the server ends the call after its idle timeout (1 s
  // here), long before the client's own deadline.
  const auto t0 = std::chrono::steady_clock::now();
  const grpc::Status s = writer->Finish();
  const auto waited = std::chrono::steady_clock::now() - t0;
  stop = true;
  reaper.join();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();
  EXPECT_LT(waited, std::chrono::seconds(10));
}

TEST(LimitsTest, SubmitsPerTokenRefillAtTheRate) {
  Limits limits(LimitOptions{/*submit_rate=*/2, /*submit_burst=*/3,
                             /*max_streams=*/2});
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limits.TakeSubmit("a", t0).ok());
  absl::Status s = limits.TakeSubmit("a", t0);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("retry in 500 ms"), std::string::npos)
      << s.message();
  // Another token has its own bucket; half a second refills one submit.
  EXPECT_TRUE(limits.TakeSubmit("b", t0).ok());
  EXPECT_TRUE(limits.TakeSubmit("a", t0 + absl::Milliseconds(500)).ok());
  EXPECT_FALSE(limits.TakeSubmit("a", t0 + absl::Milliseconds(500)).ok());
}

TEST(LimitsTest, StreamsPerUserAreCountedAndGivenBack) {
  Limits limits(LimitOptions{0, 1, /*max_streams=*/2});
  EXPECT_TRUE(limits.OpenStream("u").ok());
  EXPECT_TRUE(limits.OpenStream("u").ok());
  EXPECT_EQ(limits.OpenStream("u").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(limits.OpenStream("v").ok());
  limits.CloseStream("u");
  EXPECT_EQ(limits.open_streams("u"), 1);
  EXPECT_TRUE(limits.OpenStream("u").ok());
}

TEST_F(AccessTest, AMemberWhoSubmitsTooFastIsToldWhenToRetry) {
  const std::string data = Dataset("red", "{\"text\":\"r\",\"label\":1}\n");
  auto jobs = Jobs();
  lathe::v1::SubmitJobRequest req;
  *req.mutable_spec() = Spec(data);
  grpc::Status last;
  int accepted = 0;
  for (int i = 0; i < 400 && last.ok(); ++i) {
    lathe::v1::SubmitJobResponse resp;
    last = jobs->SubmitJob(As(alice_).get(), req, &resp);
    if (last.ok()) ++accepted;
  }
  EXPECT_EQ(last.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(last.error_message().find("retry in"), std::string::npos);
  EXPECT_GE(accepted, 100);  // the burst
  // Another member's token is not held up.
  lathe::v1::SubmitJobResponse resp;
  *req.mutable_spec() = Spec(Dataset("blue", "{\"text\":\"b\",\"label\":1}\n"));
  EXPECT_TRUE(jobs->SubmitJob(As(bob_).get(), req, &resp).ok());
}

}  // namespace
}  // namespace lathe::server
