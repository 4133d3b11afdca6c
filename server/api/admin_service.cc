// AdminService: users, tokens, the audit log and WhoAmI.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "server/api/rpc_scope.h"
#include "server/api/services.h"

namespace lathe::server {

// ---- AdminService ----

namespace {

void SetToken(const Identities::NewToken& t,
              lathe::v1::CreateTokenResponse* resp) {
  *resp->mutable_token() = t.token;
  resp->set_secret(t.secret);
}

// Non-admins act on their own tokens only; another user's token reads as
// missing.
absl::Status OwnToken(const Principal& who, const lathe::v1::ApiToken& t) {
  if (who.admin() || t.user() == who.user) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("token ", t.id(), " not found"));
}

}  // namespace

grpc::Status AdminServiceImpl::CreateUser(
    grpc::ServerContext* ctx, const lathe::v1::CreateUserRequest* req,
    lathe::v1::CreateUserResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "CreateUser");
  rpc.set_resource(req->name());
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(
        *resp->mutable_user(),
        core.identities->CreateUser(req->name(), req->team(), req->role()));
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::ListUsers(grpc::ServerContext* ctx,
                                         const lathe::v1::ListUsersRequest*,
                                         lathe::v1::ListUsersResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "ListUsers");
  return rpc.Run([&](const Core& core) -> absl::Status {
    for (auto& u : core.identities->ListUsers()) {
      *resp->add_users() = std::move(u);
    }
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::DisableUser(
    grpc::ServerContext* ctx, const lathe::v1::DisableUserRequest* req,
    lathe::v1::DisableUserResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "DisableUser");
  rpc.set_resource(req->name());
  return rpc.Run([&](const Core& core) -> absl::Status {
    if (req->name() == rpc.principal().user) {
      return absl::FailedPreconditionError(
          "name: an admin cannot disable their own user");
    }
    ASSIGN_OR_RETURN(*resp->mutable_user(),
                     core.identities->DisableUser(req->name()));
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::CreateToken(
    grpc::ServerContext* ctx, const lathe::v1::CreateTokenRequest* req,
    lathe::v1::CreateTokenResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "CreateToken");
  return rpc.Run([&](const Core& core) -> absl::Status {
    const Principal& who = rpc.principal();
    const std::string user = req->user().empty() ? who.user : req->user();
    rpc.set_resource(user);
    if (user != who.user && !who.admin()) {
      return absl::PermissionDeniedError(
          "user: only an admin may create tokens for another user");
    }
    if (req->expires_in_s() < 0 || req->expires_in_s() > (int64_t{1} << 32)) {
      return absl::InvalidArgumentError(
          "expires_in_s: must be in [0, 2^32] (0: never)");
    }
    ASSIGN_OR_RETURN(
        auto token, core.identities->CreateToken(
                        user, req->name(), absl::Seconds(req->expires_in_s())));
    rpc.set_resource(token.token.id());
    SetToken(token, resp);
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::ListTokens(
    grpc::ServerContext* ctx, const lathe::v1::ListTokensRequest* req,
    lathe::v1::ListTokensResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "ListTokens");
  return rpc.Run([&](const Core& core) -> absl::Status {
    const Principal& who = rpc.principal();
    const std::string user = who.admin() ? req->user() : who.user;
    for (auto& t : core.identities->ListTokens(user)) {
      *resp->add_tokens() = std::move(t);
    }
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::RevokeToken(
    grpc::ServerContext* ctx, const lathe::v1::RevokeTokenRequest* req,
    lathe::v1::RevokeTokenResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "RevokeToken");
  rpc.set_resource(req->id());
  return rpc.Run([&](const Core& core) -> absl::Status {
    ASSIGN_OR_RETURN(auto token, core.identities->GetToken(req->id()));
    RETURN_IF_ERROR(OwnToken(rpc.principal(), token));
    ASSIGN_OR_RETURN(*resp->mutable_token(),
                     core.identities->RevokeToken(req->id()));
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::ListAudit(grpc::ServerContext* ctx,
                                         const lathe::v1::ListAuditRequest* req,
                                         lathe::v1::ListAuditResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "ListAudit");
  return rpc.Run([&](const Core& core) -> absl::Status {
    if (req->page_size() < 0 || req->page_size() > 1000) {
      return absl::InvalidArgumentError("page_size: must be in [0, 1000]");
    }
    ASSIGN_OR_RETURN(
        auto entries,
        core.audit->List(req->page_size() == 0 ? 100 : req->page_size(),
                         req->before_seq()));
    for (auto& e : entries) *resp->add_entries() = std::move(e);
    return absl::OkStatus();
  });
}

grpc::Status AdminServiceImpl::WhoAmI(grpc::ServerContext* ctx,
                                      const lathe::v1::WhoAmIRequest*,
                                      lathe::v1::WhoAmIResponse* resp) {
  RpcScope rpc(gate_, ctx, kAdmin, "WhoAmI");
  return rpc.Run([&](const Core& core) -> absl::Status {
    const Principal& who = rpc.principal();
    ASSIGN_OR_RETURN(*resp->mutable_user(), core.identities->GetUser(who.user));
    ASSIGN_OR_RETURN(*resp->mutable_token(),
                     core.identities->GetToken(who.token_id));
    return absl::OkStatus();
  });
}

}  // namespace lathe::server
