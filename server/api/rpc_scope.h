// Internal to server/api: the scope every handler opens (RpcScope), the
// file streams of the raw download methods, and what the service files share.
#ifndef LATHE_SERVER_API_RPC_SCOPE_H_
#define LATHE_SERVER_API_RPC_SCOPE_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/api/services.h"

namespace lathe::server {

// The `authorization` metadata of a call ("" when absent).
inline std::string_view Authorization(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return {};
  return std::string_view(it->second.data(), it->second.size());
}

// The peer to audit. A call from the HTTP listener arrives over the
// in-process channel and names its own client in `x-lathe-http-peer`; it
// proves it is the listener with GatewayKey(), which never leaves the
// process, so no network client can name a peer of its choosing.
inline std::string PeerOf(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto key = md.find("x-lathe-gateway");
  auto peer = md.find("x-lathe-http-peer");
  if (key == md.end() || peer == md.end() ||
      std::string_view(key->second.data(), key->second.size()) !=
          GatewayKey()) {
    return ctx.peer();
  }
  return "http:" + std::string(peer->second.data(), peer->second.size());
}

// One RPC: admits it by the access policy before the handler may use the
// core, and records its outcome (the one conversion to grpc::Status, and the
// count by method and code) when it is done.
class RpcScope {
 public:
  RpcScope(Gate* gate, grpc::ServerContextBase* ctx, const char* service,
           const char* method)
      : RpcScope(gate, Authorization(*ctx), PeerOf(*ctx), service, method) {}
  // A call that arrived another way (the HTTP listener): its Authorization
  // header and the peer to audit.
  RpcScope(Gate* gate, std::string_view authorization, std::string peer,
           const char* service, const char* method)
      : gate_(gate),
        method_(method),
        service_(service),
        peer_(std::move(peer)),
        start_(absl::Now()) {
    const std::string full = absl::StrCat("lathe.v1.", service, ".", method);
    rule_ = AccessPolicy::RuleFor(full);
    if (rule_ == nullptr) {
      admitted_ = gate->policy_.Check(full, principal_);
      return;
    }
    auto who = gate->core_.identities->Authenticate(authorization);
    if (!who.ok()) {
      admitted_ = who.status();
      return;
    }
    principal_ = *std::move(who);
    admitted_ = gate->policy_.Check(full, principal_);
    if (!admitted_.ok() || principal_.admin()) return;
    const std::string_view m(method);
    if (m == "SubmitJob") {
      admitted_ = gate->limits_.TakeSubmit(principal_.token_id, absl::Now());
    } else if (m == "WatchJob" || m == "DownloadCheckpointFile" ||
               m == "UploadDataset" || m == "PushModel") {
      admitted_ = gate->limits_.OpenStream(principal_.user);
      holds_stream_ = admitted_.ok();
    }
  }
  ~RpcScope() {
    if (holds_stream_) gate_->limits_.CloseStream(principal_.user);
  }
  // Reactors keep the scope for the life of their stream; the stream's
  // slot moves with it.
  RpcScope(RpcScope&& other) noexcept
      : gate_(other.gate_),
        method_(other.method_),
        service_(other.service_),
        peer_(std::move(other.peer_)),
        start_(other.start_),
        rule_(other.rule_),
        principal_(std::move(other.principal_)),
        resource_(std::move(other.resource_)),
        admitted_(std::move(other.admitted_)),
        holds_stream_(other.holds_stream_) {
    other.holds_stream_ = false;
  }
  RpcScope(const RpcScope&) = delete;
  RpcScope& operator=(const RpcScope&) = delete;
  RpcScope& operator=(RpcScope&&) = delete;

  // `body(core)` if the call is admitted, else why not.
  template <typename Body>
  auto Call(Body&& body) -> decltype(body(std::declval<const Core&>())) {
    if (!admitted_.ok()) return admitted_;
    return body(gate_->core_);
  }
  // Call, then Done.
  template <typename Body>
  grpc::Status Run(Body&& body) {
    return Done(Call(std::forward<Body>(body)));
  }
  grpc::Status Done(const absl::Status& status) {
    grpc::Status s = ToGrpcStatus(status);
    gate_->metrics_->CountRpc(method_, absl::StatusCodeToString(status.code()));
    gate_->metrics_->ObserveRpcSeconds(
        method_, absl::ToDoubleSeconds(absl::Now() - start_));
    const bool refused = absl::IsUnauthenticated(status) ||
                         absl::IsPermissionDenied(status) || !admitted_.ok();
    if (refused || (rule_ != nullptr && rule_->audited)) {
      lathe::v1::AuditEntry e;
      e.set_user(principal_.user);
      e.set_token_id(principal_.token_id);
      e.set_method(absl::StrCat(service_, ".", method_));
      e.set_resource(resource_);
      e.set_peer(peer_);
      e.set_code(absl::StatusCodeToString(status.code()));
      gate_->core_.audit->Record(std::move(e));
    }
    return s;
  }
  template <typename T>
  grpc::Status Done(const absl::StatusOr<T>& result) {
    return Done(result.status());
  }

  // The authenticated caller; meaningful once the call is admitted.
  const Principal& principal() const { return principal_; }
  // The job, model, dataset, user or token the call is about, for the
  // audit log.
  void set_resource(std::string resource) { resource_ = std::move(resource); }
  // NOT_FOUND, worded as for a missing job, unless the caller may see a job
  // of `team`.
  absl::Status SeeJob(const std::string& id, const std::string& team) const {
    if (principal_.Sees(team)) return absl::OkStatus();
    return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  }

 private:
  Gate* gate_;
  const char* method_;
  const char* service_;
  std::string peer_;
  absl::Time start_;  // when the call arrived, for its duration
  const AccessRule* rule_ = nullptr;
  Principal principal_;
  std::string resource_;
  absl::Status admitted_;
  // Holds one of the user's stream slots (Limits::OpenStream).
  bool holds_stream_ = false;
};

// Parses a request that arrived as bytes (the raw callback methods).
template <typename Request>
absl::Status ParseRequest(const grpc::ByteBuffer* bytes, Request* req) {
  grpc::ByteBuffer copy(*bytes);  // shares the slices
  if (!grpc::SerializationTraits<Request>::Deserialize(&copy, req).ok()) {
    return absl::InvalidArgumentError("cannot parse the request");
  }
  return absl::OkStatus();
}

// Streams the stored file at `file` (or fails the call with why there is
// none) from `offset`; `first` (serialized fields, may be empty) goes into
// the first message only. For the raw download methods.
grpc::ServerWriteReactor<grpc::ByteBuffer>* StreamFile(
    RpcScope rpc, const absl::StatusOr<std::string>& file, int64_t offset,
    std::string first);

// The stored file of a checkpoint file, and in `first` the serialized
// DownloadCheckpointFileResponse fields its first message carries.
absl::StatusOr<std::string> ResolveCheckpointStream(
    const Core& core, const std::string& job_id, const std::string& checkpoint,
    const std::string& file, std::string* first);

inline constexpr char kJobs[] = "JobService";
inline constexpr char kDatasets[] = "DatasetService";
inline constexpr char kModels[] = "ModelService";
inline constexpr char kWorkers[] = "WorkerService";
inline constexpr char kAdmin[] = "AdminService";

}  // namespace lathe::server

#endif  // LATHE_SERVER_API_RPC_SCOPE_H_
