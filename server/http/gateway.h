// The HTTP listener (--http-listen): the dashboard at `/`, the JSON API under
// /v1/jobs, /v1/datasets and /v1/models, and checkpoint files with ranges.
//
// It decides nothing itself. Every JSON call is the gRPC call of the same
// name, made over the server's in-process channel with the request's
// `Authorization` header as the call's metadata: the same access rules,
// validation, team visibility, limits, audit and error words. Checkpoint
// files are admitted and resolved the same way (CheckpointDownload) and then
// read straight from the artifact store in large reads.
#ifndef LATHE_SERVER_HTTP_GATEWAY_H_
#define LATHE_SERVER_HTTP_GATEWAY_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/api/services.h"

namespace httplib {
class Server;
}

namespace lathe::server {

struct HttpOptions {
  std::string listen;  // HOST:PORT; port 0 picks a free one
  // PEM files; empty cert: plain HTTP.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // Largest request body (a dataset upload).
  int64_t max_body_bytes = int64_t{4} << 30;
};

struct HttpGatewayState;

class HttpGateway {
 public:
  // `channel` reaches this server's own services in-process; `gate` admits
  // checkpoint downloads. Both must outlive the gateway.
  HttpGateway(HttpOptions options, std::shared_ptr<grpc::Channel> channel,
              Gate* gate);
  ~HttpGateway();
  HttpGateway(const HttpGateway&) = delete;
  HttpGateway& operator=(const HttpGateway&) = delete;

  // Binds and starts serving on a thread of its own; the bound HOST:PORT.
  absl::StatusOr<std::string> Start();
  // Stops accepting, ends open streams and joins.
  void Stop();

  // "http" or "https".
  const char* scheme() const;

 private:
  void Routes();

  HttpOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  Gate* gate_;
  std::unique_ptr<HttpGatewayState> state_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_HTTP_GATEWAY_H_
