// The fixture of the access tests (access_test.cc, http_access_test.cc): a
// real server core (SQLite and artifacts in a temporary directory) behind the
// real gRPC services on a loopback port, users of each role, and the
// permission matrix, written here apart from the server's own table
// (server/api/access.cc).
#ifndef LATHE_TESTS_SERVER_ACCESS_FIXTURE_H_
#define LATHE_TESTS_SERVER_ACCESS_FIXTURE_H_

#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/files.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "server/api/access.h"
#include "server/api/services.h"
#include "server/core/audit_log.h"
#include "server/core/identities.h"
#include "server/http/gateway.h"
#include "tests/support/temp_dir.h"

namespace lathe::server {

using lathe::v1::Role;
using lathe::v1::ROLE_ADMIN;
using lathe::v1::ROLE_MEMBER;
using lathe::v1::ROLE_VIEWER;
using lathe::v1::ROLE_WORKER;

// Who may call each method, by role ("Service.Method" -> roles).
inline const std::map<std::string, std::set<Role>>& Matrix() {
  const std::set<Role> people = {ROLE_ADMIN, ROLE_MEMBER};
  const std::set<Role> readers = {ROLE_ADMIN, ROLE_MEMBER, ROLE_VIEWER};
  const std::set<Role> workers = {ROLE_WORKER};
  const std::set<Role> admins = {ROLE_ADMIN};
  static const auto* m = new std::map<std::string, std::set<Role>>{
      {"JobService.SubmitJob", people},
      {"JobService.GetJob", readers},
      {"JobService.ListJobs", readers},
      {"JobService.CancelJob", people},
      {"JobService.PauseJob", people},
      {"JobService.ResumeJob", people},
      {"JobService.RequestCheckpoint", people},
      {"JobService.WatchJob", readers},
      {"JobService.ListJobEvents", readers},
      {"JobService.ListWorkers", readers},
      {"JobService.ListCheckpoints", readers},
      {"JobService.DownloadCheckpointFile", readers},
      {"DatasetService.UploadDataset", people},
      {"DatasetService.ListDatasets", readers},
      {"DatasetService.GetDataset", readers},
      {"DatasetService.DeleteDataset", people},
      {"ModelService.PushModel", people},
      {"ModelService.ListModels", readers},
      {"ModelService.GetModel", readers},
      {"ModelService.DeleteModel", people},
      {"WorkerService.RegisterWorker", workers},
      {"WorkerService.Heartbeat", workers},
      {"WorkerService.HeartbeatStream", workers},
      {"WorkerService.AcquireJob", workers},
      {"WorkerService.ReportEvents", workers},
      {"WorkerService.UploadCheckpointFile", workers},
      {"WorkerService.FinishAttempt", workers},
      {"WorkerService.JoinGang", workers},
      {"WorkerService.FetchDataset", workers},
      {"WorkerService.FetchModelFile", workers},
      {"WorkerService.FetchCheckpointFile", workers},
      {"AdminService.CreateUser", admins},
      {"AdminService.ListUsers", admins},
      {"AdminService.DisableUser", admins},
      {"AdminService.CreateToken", readers},
      {"AdminService.ListTokens", readers},
      {"AdminService.RevokeToken", readers},
      {"AdminService.ListAudit", admins},
      {"AdminService.WhoAmI",
       {ROLE_ADMIN, ROLE_MEMBER, ROLE_VIEWER, ROLE_WORKER}},
  };
  return *m;
}

class AccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *Store::Open(dir_.path() + "/lathe.db");
    artifacts_ = *ArtifactStore::Open(dir_.path() + "/artifacts");
    JobManagerOptions opts;
    opts.allowed_roots = {dir_.path()};
    manager_ =
        *JobManager::Create(opts, store_.get(), artifacts_.get(), &metrics_);
    identities_ = *Identities::Open(store_.get());
    audit_ = std::make_unique<AuditLog>(store_.get(), absl::Hours(24), 1000);
    gate_ = std::make_unique<Gate>(
        Core{manager_.get(), manager_->models(), artifacts_.get(),
             identities_.get(), audit_.get()},
        &metrics_, LimitOptions(), /*stream_idle_timeout=*/absl::Seconds(1));
    jobs_svc_ = std::make_unique<JobServiceImpl>(gate_.get());
    datasets_svc_ = std::make_unique<DatasetServiceImpl>(gate_.get());
    models_svc_ = std::make_unique<ModelServiceImpl>(gate_.get());
    workers_svc_ = std::make_unique<WorkerServiceImpl>(gate_.get());
    admin_svc_ = std::make_unique<AdminServiceImpl>(gate_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(jobs_svc_.get());
    builder.RegisterService(datasets_svc_.get());
    builder.RegisterService(models_svc_.get());
    builder.RegisterService(workers_svc_.get());
    builder.RegisterService(admin_svc_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());

    admin_ = Token("root", "ops", ROLE_ADMIN);
    alice_ = Token("alice", "red", ROLE_MEMBER);
    carol_ = Token("carol", "red", ROLE_MEMBER);
    vic_ = Token("vic", "red", ROLE_VIEWER);
    bob_ = Token("bob", "blue", ROLE_MEMBER);
    worker_ = Token("gpu-box", "", ROLE_WORKER);
  }

  void TearDown() override {
    if (http_) http_->Stop();
    if (server_) server_->Shutdown();
  }

  // Authorization headers that must all be refused as UNAUTHENTICATED, by
  // what is wrong with each (an expired token among them: this waits 1.1 s
  // for it to expire).
  std::map<std::string, std::string> BadCredentials() {
    auto expired = identities_->CreateToken("alice", "short", absl::Seconds(1));
    EXPECT_TRUE(expired.ok());
    auto revoked =
        identities_->CreateToken("alice", "gone", absl::ZeroDuration());
    EXPECT_TRUE(revoked.ok());
    EXPECT_TRUE(identities_->RevokeToken(revoked->token.id()).ok());
    const std::string disabled = Token("mallory", "red", ROLE_MEMBER);
    EXPECT_TRUE(identities_->DisableUser("mallory").ok());
    std::string wrong_secret = alice_;
    wrong_secret.back() = wrong_secret.back() == '0' ? '1' : '0';
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    return {
        {"no token", ""},
        {"not a bearer header", "Basic dXNlcjpwYXNz"},
        {"malformed token", "Bearer lt_nonsense"},
        {"unknown token", "Bearer lt_000000000000_" + std::string(64, 'a')},
        {"wrong secret", wrong_secret},
        {"expired token", "Bearer " + expired->secret},
        {"revoked token", "Bearer " + revoked->secret},
        {"disabled user", disabled},
    };
  }
  // A token of each role.
  std::map<Role, std::string> RoleTokens() const {
    return {{ROLE_ADMIN, admin_},
            {ROLE_MEMBER, alice_},
            {ROLE_VIEWER, vic_},
            {ROLE_WORKER, worker_}};
  }

  // The HTTP listener over this server, started on first use; HOST:PORT.
  std::string Http() {
    if (http_ == nullptr) {
      http_ = std::make_unique<HttpGateway>(
          HttpOptions{"127.0.0.1:0", "", "", "", 1 << 20},
          server_->InProcessChannel(grpc::ChannelArguments()), gate_.get());
      auto addr = http_->Start();
      EXPECT_TRUE(addr.ok()) << addr.status();
      http_addr_ = addr.ok() ? *addr : "";
    }
    return http_addr_;
  }

  // Creates a user and returns "Bearer TOKEN" for it.
  std::string Token(const std::string& user, const std::string& team,
                    Role role) {
    EXPECT_TRUE(identities_->CreateUser(user, team, role).ok());
    auto t = identities_->CreateToken(user, "test", absl::ZeroDuration());
    EXPECT_TRUE(t.ok()) << t.status();
    return "Bearer " + t->secret;
  }

  Principal Who(const std::string& header) {
    return *identities_->Authenticate(header);
  }

  // Calls `method` ("JobService.GetJob") with `request` over a generic
  // stream: one request message, then the end of the stream; the answer's
  // messages are read and dropped. The same code path serves unary and
  // streaming methods, since they look alike on the wire.
  grpc::Status Call(const std::string& method, const std::string& authorization,
                    const google::protobuf::Message& request) {
    const std::string path = "/lathe.v1." + method.substr(0, method.find('.')) +
                             "/" + method.substr(method.find('.') + 1);
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
    grpc::CompletionQueue cq;
    auto wait = [&cq] {
      void* tag;
      bool ok = false;
      cq.Next(&tag, &ok);
      return ok;
    };
    auto call = stub.PrepareCall(&ctx, path, &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    wait();
    std::string bytes = request.SerializeAsString();
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    wait();
    call->WritesDone(reinterpret_cast<void*>(3));
    wait();
    while (true) {
      grpc::ByteBuffer reply;
      call->Read(&reply, reinterpret_cast<void*>(4));
      if (!wait()) break;
    }
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    wait();
    return status;
  }

  std::unique_ptr<lathe::v1::JobService::Stub> Jobs() {
    return lathe::v1::JobService::NewStub(channel_);
  }
  std::unique_ptr<grpc::ClientContext> As(const std::string& authorization) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", authorization);
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
    return ctx;
  }

  // A dataset uploaded by `team`; its reference.
  std::string Dataset(const std::string& team, const std::string& rows) {
    auto w = *artifacts_->NewWriter(1 << 20);
    EXPECT_TRUE(w->Append(rows).ok());
    const std::string sha = *w->Commit();
    return manager_->AddDataset("d.jsonl", sha, w->size(), team)->ref();
  }

  lathe::v1::JobSpec Spec(const std::string& data) {
    lathe::v1::JobSpec spec;
    spec.set_task("text-classification");
    spec.set_model("preset:bert-tiny");
    spec.set_train_data(data);
    return spec;
  }

  TempDir dir_;
  Metrics metrics_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<JobManager> manager_;
  std::unique_ptr<Identities> identities_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<Gate> gate_;
  std::unique_ptr<JobServiceImpl> jobs_svc_;
  std::unique_ptr<DatasetServiceImpl> datasets_svc_;
  std::unique_ptr<ModelServiceImpl> models_svc_;
  std::unique_ptr<WorkerServiceImpl> workers_svc_;
  std::unique_ptr<AdminServiceImpl> admin_svc_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<HttpGateway> http_;
  std::string http_addr_;
  std::string admin_, alice_, carol_, vic_, bob_, worker_;
};

// Every method of the API, from the proto's descriptors.
inline std::vector<std::string> ApiMethods() {
  const google::protobuf::FileDescriptor* file =
      lathe::v1::Job::descriptor()->file();
  std::vector<std::string> out;
  for (int s = 0; s < file->service_count(); ++s) {
    const auto* service = file->service(s);
    for (int m = 0; m < service->method_count(); ++m) {
      out.push_back(service->name() + "." + service->method(m)->name());
    }
  }
  return out;
}

}  // namespace lathe::server

#endif  // LATHE_TESTS_SERVER_ACCESS_FIXTURE_H_
