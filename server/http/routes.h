// Internal to server/http: the route sets the gateway installs, and what
// they share.
#ifndef LATHE_SERVER_HTTP_ROUTES_H_
#define LATHE_SERVER_HTTP_ROUTES_H_

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/synchronization/mutex.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "server/api/services.h"

namespace lathe::server::http {

// Open server-sent event streams, so that Stop can end them. Each holds
// one of the listener's threads while it waits for the job's next event, so
// they are capped: in all, and per token (`key`, its Authorization header),
// below the pool's size.
class OpenStreams {
 public:
  static constexpr int kMax = 64;
  static constexpr int kMaxPerToken = 16;
  // False (and nothing added) past a cap.
  bool Add(grpc::ClientContext* ctx, const std::string& key);
  void Remove(grpc::ClientContext* ctx, const std::string& key);
  // Cancels every open stream; later ones are cancelled as they open.
  void CancelAll();

 private:
  absl::Mutex mu_;
  std::set<grpc::ClientContext*> open_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> per_token_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

struct Api {
  explicit Api(const std::shared_ptr<grpc::Channel>& channel, Gate* g,
               int64_t max_body)
      : jobs(lathe::v1::JobService::NewStub(channel)),
        datasets(lathe::v1::DatasetService::NewStub(channel)),
        models(lathe::v1::ModelService::NewStub(channel)),
        admin(lathe::v1::AdminService::NewStub(channel)),
        gate(g),
        max_body_bytes(max_body) {}
  std::unique_ptr<lathe::v1::JobService::Stub> jobs;
  std::unique_ptr<lathe::v1::DatasetService::Stub> datasets;
  std::unique_ptr<lathe::v1::ModelService::Stub> models;
  std::unique_ptr<lathe::v1::AdminService::Stub> admin;
  Gate* gate;
  int64_t max_body_bytes;
  OpenStreams streams;
};

// /v1/jobs, /v1/datasets, /v1/models, /v1/whoami (json_api.cc).
void AddJsonApi(httplib::Server& server, Api& api);
// GET /v1/jobs/ID/events as server-sent events (event_stream.cc).
void ServeEvents(Api& api, const httplib::Request& hreq, httplib::Response& res,
                 const lathe::v1::WatchJobRequest& req);
// `/` and the dashboard's files (dashboard.cc).
void AddDashboard(httplib::Server& server);
// /v1/files and /v1/fine_tuning/jobs in OpenAI's shapes (openai_api.cc).
void AddOpenAiApi(httplib::Server& server, Api& api);

}  // namespace lathe::server::http

#endif  // LATHE_SERVER_HTTP_ROUTES_H_
