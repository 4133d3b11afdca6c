// gRPC adapters: each handler reads the request, calls the core, converts the
// status once (ToGrpcStatus) and counts the RPC. No business logic here.
// Handlers reach the core only through an RpcScope (services.cc), which
// authenticates the call's token (identities.h) and admits the call by the
// access policy (access.h) before it hands out the core: the Gate keeps the
// core's pointers private to it. Handlers decide team visibility with the
// scope's principal (Principal::Sees); another team's resource is NOT_FOUND.
#ifndef LATHE_SERVER_API_SERVICES_H_
#define LATHE_SERVER_API_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "absl/status/status.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "server/api/access.h"
#include "server/api/limits.h"
#include "server/api/stream_watchdog.h"
#include "server/core/artifacts.h"
#include "server/core/audit_log.h"
#include "server/core/identities.h"
#include "server/core/job_manager.h"
#include "server/core/metrics.h"
#include "server/core/models.h"

namespace lathe::server {

// What a handler may use; handed out by RpcScope once the call is admitted.
struct Core {
  JobManager* jobs = nullptr;
  ModelStore* models = nullptr;
  ArtifactStore* artifacts = nullptr;
  Identities* identities = nullptr;
  AuditLog* audit = nullptr;
};

class RpcScope;

// The access check and the core behind it, shared by the services. Every
// pointer must outlive the gate.
class Gate {
 public:
  Gate(Core core, Metrics* metrics, LimitOptions limits = LimitOptions(),
       absl::Duration stream_idle_timeout = absl::Minutes(5))
      : core_(core),
        metrics_(metrics),
        limits_(limits),
        watchdog_(stream_idle_timeout) {}

  // Upload streams register here (StreamWatchdog); the server's reaper
  // sweeps it.
  StreamWatchdog* watchdog() { return &watchdog_; }

  // The HTTP listener's port (0: none) and whether it serves HTTPS, which
  // ListCheckpoints tells clients.
  void SetHttp(int port, bool tls) {
    http_tls_ = tls;
    http_port_ = port;
  }
  int http_port() const { return http_port_; }
  bool http_tls() const { return http_tls_; }

 private:
  friend class RpcScope;
  const AccessPolicy policy_{};
  const Core core_;
  Metrics* const metrics_;
  Limits limits_;
  StreamWatchdog watchdog_;
  std::atomic<int> http_port_{0};
  std::atomic<bool> http_tls_{false};
};

// A random key, made once per process, that the HTTP listener sends with
// its in-process calls (rpc_scope.h, PeerOf).
const std::string& GatewayKey();

// The one conversion from absl::Status to grpc::Status; messages are capped.
grpc::Status ToGrpcStatus(const absl::Status& status);

// WatchJob uses the callback API: a watcher holds no thread while it waits,
// so a change reaches many watchers without waking a thread for each. File
// downloads (here and in WorkerService) are raw callback methods: their
// messages are encoded by hand around slices of the mapped file.
class JobServiceImpl final
    : public lathe::v1::JobService::
          WithRawCallbackMethod_DownloadCheckpointFile<
              lathe::v1::JobService::WithCallbackMethod_WatchJob<
                  lathe::v1::JobService::Service>> {
 public:
  explicit JobServiceImpl(Gate* gate) : gate_(gate) {}

  grpc::Status SubmitJob(grpc::ServerContext* ctx,
                         const lathe::v1::SubmitJobRequest* req,
                         lathe::v1::SubmitJobResponse* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx,
                      const lathe::v1::GetJobRequest* req,
                      lathe::v1::GetJobResponse* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx,
                        const lathe::v1::ListJobsRequest* req,
                        lathe::v1::ListJobsResponse* resp) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx,
                         const lathe::v1::CancelJobRequest* req,
                         lathe::v1::CancelJobResponse* resp) override;
  grpc::Status PauseJob(grpc::ServerContext* ctx,
                        const lathe::v1::PauseJobRequest* req,
                        lathe::v1::PauseJobResponse* resp) override;
  grpc::Status ResumeJob(grpc::ServerContext* ctx,
                         const lathe::v1::ResumeJobRequest* req,
                         lathe::v1::ResumeJobResponse* resp) override;
  grpc::Status RequestCheckpoint(
      grpc::ServerContext* ctx, const lathe::v1::RequestCheckpointRequest* req,
      lathe::v1::RequestCheckpointResponse* resp) override;
  grpc::ServerWriteReactor<lathe::v1::WatchJobResponse>* WatchJob(
      grpc::CallbackServerContext* ctx,
      const lathe::v1::WatchJobRequest* req) override;
  grpc::Status ListWorkers(grpc::ServerContext* ctx,
                           const lathe::v1::ListWorkersRequest* req,
                           lathe::v1::ListWorkersResponse* resp) override;
  grpc::Status ListJobEvents(grpc::ServerContext* ctx,
                             const lathe::v1::ListJobEventsRequest* req,
                             lathe::v1::ListJobEventsResponse* resp) override;
  grpc::Status ListCheckpoints(
      grpc::ServerContext* ctx, const lathe::v1::ListCheckpointsRequest* req,
      lathe::v1::ListCheckpointsResponse* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* DownloadCheckpointFile(
      grpc::CallbackServerContext* ctx,
      const grpc::ByteBuffer* request) override;

 private:
  Gate* const gate_;
};

class DatasetServiceImpl final : public lathe::v1::DatasetService::Service {
 public:
  explicit DatasetServiceImpl(Gate* gate) : gate_(gate) {}
  grpc::Status UploadDataset(
      grpc::ServerContext* ctx,
      grpc::ServerReader<lathe::v1::UploadDatasetRequest>* reader,
      lathe::v1::UploadDatasetResponse* resp) override;
  grpc::Status ListDatasets(grpc::ServerContext* ctx,
                            const lathe::v1::ListDatasetsRequest* req,
                            lathe::v1::ListDatasetsResponse* resp) override;
  grpc::Status GetDataset(grpc::ServerContext* ctx,
                          const lathe::v1::GetDatasetRequest* req,
                          lathe::v1::GetDatasetResponse* resp) override;
  grpc::Status DeleteDataset(grpc::ServerContext* ctx,
                             const lathe::v1::DeleteDatasetRequest* req,
                             lathe::v1::DeleteDatasetResponse* resp) override;

 private:
  Gate* const gate_;
};

class ModelServiceImpl final : public lathe::v1::ModelService::Service {
 public:
  explicit ModelServiceImpl(Gate* gate) : gate_(gate) {}
  grpc::Status PushModel(
      grpc::ServerContext* ctx,
      grpc::ServerReader<lathe::v1::PushModelRequest>* reader,
      lathe::v1::PushModelResponse* resp) override;
  grpc::Status ListModels(grpc::ServerContext* ctx,
                          const lathe::v1::ListModelsRequest* req,
                          lathe::v1::ListModelsResponse* resp) override;
  grpc::Status GetModel(grpc::ServerContext* ctx,
                        const lathe::v1::GetModelRequest* req,
                        lathe::v1::GetModelResponse* resp) override;
  grpc::Status DeleteModel(grpc::ServerContext* ctx,
                           const lathe::v1::DeleteModelRequest* req,
                           lathe::v1::DeleteModelResponse* resp) override;

 private:
  Gate* const gate_;
};

class AdminServiceImpl final : public lathe::v1::AdminService::Service {
 public:
  explicit AdminServiceImpl(Gate* gate) : gate_(gate) {}
  grpc::Status CreateUser(grpc::ServerContext* ctx,
                          const lathe::v1::CreateUserRequest* req,
                          lathe::v1::CreateUserResponse* resp) override;
  grpc::Status ListUsers(grpc::ServerContext* ctx,
                         const lathe::v1::ListUsersRequest* req,
                         lathe::v1::ListUsersResponse* resp) override;
  grpc::Status DisableUser(grpc::ServerContext* ctx,
                           const lathe::v1::DisableUserRequest* req,
                           lathe::v1::DisableUserResponse* resp) override;
  grpc::Status CreateToken(grpc::ServerContext* ctx,
                           const lathe::v1::CreateTokenRequest* req,
                           lathe::v1::CreateTokenResponse* resp) override;
  grpc::Status ListTokens(grpc::ServerContext* ctx,
                          const lathe::v1::ListTokensRequest* req,
                          lathe::v1::ListTokensResponse* resp) override;
  grpc::Status RevokeToken(grpc::ServerContext* ctx,
                           const lathe::v1::RevokeTokenRequest* req,
                           lathe::v1::RevokeTokenResponse* resp) override;
  grpc::Status ListAudit(grpc::ServerContext* ctx,
                         const lathe::v1::ListAuditRequest* req,
                         lathe::v1::ListAuditResponse* resp) override;
  grpc::Status WhoAmI(grpc::ServerContext* ctx,
                      const lathe::v1::WhoAmIRequest* req,
                      lathe::v1::WhoAmIResponse* resp) override;

 private:
  Gate* const gate_;
};

class WorkerServiceImpl final
    : public lathe::v1::WorkerService::WithRawCallbackMethod_FetchDataset<
          lathe::v1::WorkerService::WithRawCallbackMethod_FetchModelFile<
              lathe::v1::WorkerService::
                  WithRawCallbackMethod_FetchCheckpointFile<
                      lathe::v1::WorkerService::Service>>> {
 public:
  explicit WorkerServiceImpl(Gate* gate) : gate_(gate) {}
  grpc::Status RegisterWorker(grpc::ServerContext* ctx,
                              const lathe::v1::RegisterWorkerRequest* req,
                              lathe::v1::RegisterWorkerResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx,
                         const lathe::v1::HeartbeatRequest* req,
                         lathe::v1::HeartbeatResponse* resp) override;
  grpc::Status HeartbeatStream(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<lathe::v1::HeartbeatResponse,
                               lathe::v1::HeartbeatRequest>* stream) override;
  grpc::Status AcquireJob(grpc::ServerContext* ctx,
                          const lathe::v1::AcquireJobRequest* req,
                          lathe::v1::AcquireJobResponse* resp) override;
  grpc::Status ReportEvents(grpc::ServerContext* ctx,
                            const lathe::v1::ReportEventsRequest* req,
                            lathe::v1::ReportEventsResponse* resp) override;
  grpc::Status UploadCheckpointFile(
      grpc::ServerContext* ctx,
      grpc::ServerReader<lathe::v1::UploadCheckpointFileRequest>* reader,
      lathe::v1::UploadCheckpointFileResponse* resp) override;
  grpc::Status FinishAttempt(grpc::ServerContext* ctx,
                             const lathe::v1::FinishAttemptRequest* req,
                             lathe::v1::FinishAttemptResponse* resp) override;
  grpc::Status JoinGang(grpc::ServerContext* ctx,
                        const lathe::v1::JoinGangRequest* req,
                        lathe::v1::JoinGangResponse* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchDataset(
      grpc::CallbackServerContext* ctx,
      const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchModelFile(
      grpc::CallbackServerContext* ctx,
      const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchCheckpointFile(
      grpc::CallbackServerContext* ctx,
      const grpc::ByteBuffer* request) override;

 private:
  Gate* const gate_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_API_SERVICES_H_
