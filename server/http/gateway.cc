#include "server/http/gateway.h"

#include <httplib.h>

#include <exception>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/http/http_util.h"
#include "server/http/routes.h"

namespace lathe::server {

namespace {
// Each open request holds a thread: server-sent event streams and downloads
// last long, so the pool is larger than the machine's cores (event streams
// are capped below it: routes.h).
constexpr size_t kThreads = 128;

// Only checkpoint files answer a Range; anything else is answered whole
// (the library would otherwise cut an error or a JSON answer to the range).
bool TakesRanges(const std::string& path) {
  return path.rfind("/v1/jobs/", 0) == 0 &&
         path.find("/files/") != std::string::npos;
}
}  // namespace

struct HttpGatewayState {
  explicit HttpGatewayState(const std::shared_ptr<grpc::Channel>& channel,
                            Gate* gate, int64_t max_body)
      : api(channel, gate, max_body) {}
  http::Api api;
};

HttpGateway::HttpGateway(HttpOptions options,
                         std::shared_ptr<grpc::Channel> channel, Gate* gate)
    : options_(std::move(options)), channel_(std::move(channel)), gate_(gate) {}

HttpGateway::~HttpGateway() { Stop(); }

const char* HttpGateway::scheme() const {
  return options_.tls_cert.empty() ? "http" : "https";
}

absl::StatusOr<std::string> HttpGateway::Start() {
  if (options_.tls_cert.empty()) {
    http_ = std::make_unique<httplib::Server>();
  } else {
    auto tls = std::make_unique<httplib::SSLServer>(
        options_.tls_cert.c_str(), options_.tls_key.c_str(),
        options_.tls_client_ca.empty() ? nullptr
                                       : options_.tls_client_ca.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--http-listen: cannot serve HTTPS with --tls-cert ",
                       options_.tls_cert, " and --tls-key ", options_.tls_key));
    }
    http_ = std::move(tls);
  }
  state_ = std::make_unique<HttpGatewayState>(channel_, gate_,
                                              options_.max_body_bytes);
  httplib::Server& s = *http_;
  s.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  s.set_payload_max_length(static_cast<size_t>(options_.max_body_bytes));
  s.set_read_timeout(60, 0);
  s.set_write_timeout(60, 0);
  // An idle keep-alive connection holds Stop() until it times out.
  s.set_keep_alive_timeout(5);
  s.set_default_headers({{"X-Content-Type-Options", "nosniff"},
                         {"Referrer-Policy", "no-referrer"}});
  http::AddJsonApi(s, state_->api);
  http::AddOpenAiApi(s, state_->api);
  http::AddDashboard(s);
  s.set_pre_routing_handler(
      [](const httplib::Request& req, httplib::Response&) {
        if (!TakesRanges(req.path)) {
          const_cast<httplib::Request&>(req).ranges.clear();
        }
        return httplib::Server::HandlerResponse::Unhandled;
      });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    // The library calls this outside its own exception handling: nothing
    // may escape.
    try {
      const grpc::StatusCode code =
          res.status == 404   ? grpc::StatusCode::NOT_FOUND
          : res.status == 413 ? grpc::StatusCode::RESOURCE_EXHAUSTED
          : res.status == 416 ? grpc::StatusCode::OUT_OF_RANGE
          : res.status >= 500 ? grpc::StatusCode::INTERNAL
                              : grpc::StatusCode::INVALID_ARGUMENT;
      const int status = res.status;
      std::string what = status == 404   ? "no such route"
                         : status == 413 ? "request body too large"
                         : status == 416 ? "range not satisfiable"
                                         : "bad request";
      http::WriteError(
          res, grpc::Status(
                   code, absl::StrCat(what, ": ", req.method, " ", req.path)));
      res.status = status;  // keep 416's and 413's own status
    } catch (...) {
      res.set_content("{\"error\":{\"message\":\"bad request\"}}",
                      "application/json");
    }
  });
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        http::WriteError(
            res, grpc::Status(grpc::StatusCode::INTERNAL, "internal error"));
      });

  const std::string& listen = options_.listen;
  const size_t colon = listen.rfind(':');
  int64_t port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http-listen ", listen, ": not HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int bound = static_cast<int>(port);
  if (port == 0) {
    bound = s.bind_to_any_port(host);
  } else if (!s.bind_to_port(host, bound)) {
    bound = -1;
  }
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("--http-listen: cannot listen on ", listen));
  }
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return absl::StrCat(listen.substr(0, colon), ":", bound);
}

void HttpGateway::Stop() {
  if (http_ == nullptr) return;
  state_->api.streams.CancelAll();
  http_->stop();
  if (thread_.joinable()) thread_.join();
  http_.reset();
}

}  // namespace lathe::server
