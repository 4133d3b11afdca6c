#include "client/account_commands.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <iomanip>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/files.h"

namespace lathe::client {
namespace {

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::string When(int64_t ms) {
  if (ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(ms),
                          absl::UTCTimeZone());
}

std::string RoleName(lathe::v1::Role role) {
  switch (role) {
    case lathe::v1::ROLE_ADMIN:
      return "admin";
    case lathe::v1::ROLE_MEMBER:
      return "member";
    case lathe::v1::ROLE_VIEWER:
      return "viewer";
    case lathe::v1::ROLE_WORKER:
      return "worker";
    default:
      return "?";
  }
}

absl::StatusOr<lathe::v1::Role> ParseRole(const std::string& name) {
  if (name.empty() || name == "member") return lathe::v1::ROLE_MEMBER;
  if (name == "admin") return lathe::v1::ROLE_ADMIN;
  if (name == "viewer") return lathe::v1::ROLE_VIEWER;
  if (name == "worker") return lathe::v1::ROLE_WORKER;
  return absl::InvalidArgumentError(absl::StrCat(
      "--role: \"", name, "\" is not admin, member, viewer or worker"));
}

void PrintUser(const lathe::v1::User& u) {
  std::cout << std::left << std::setw(20) << u.name() << std::setw(16)
            << (u.team().empty() ? "-" : u.team()) << std::setw(8)
            << RoleName(u.role()) << (u.disabled() ? "disabled" : "active")
            << "\n";
}

void PrintToken(const lathe::v1::ApiToken& t) {
  std::string state = "active";
  if (t.revoke_time_ms() != 0) {
    state = "revoked";
  } else if (t.expire_time_ms() != 0 &&
             t.expire_time_ms() <= absl::ToUnixMillis(absl::Now())) {
    state = "expired";
  }
  std::cout << std::left << std::setw(17) << t.id() << std::setw(16) << t.user()
            << std::setw(9) << state << std::setw(21)
            << When(t.expire_time_ms()) << std::setw(21)
            << When(t.last_used_time_ms()) << t.name() << "\n";
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return c;
}

// Writes the token for later commands, readable by this user alone.
absl::Status StoreToken(const std::string& token) {
  const std::string path = LoginTokenFile();
  if (path.empty()) {
    return absl::FailedPreconditionError(
        "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the token");
  }
  const std::string dir = path.substr(0, path.rfind('/'));
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  ::chmod(dir.c_str(), 0700);
  const std::string tmp = path + ".tmp";
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  ::fchmod(fd, 0600);
  const std::string line = token + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) ==
                  static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace

std::string LoginTokenFile() {
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) {
    return absl::StrCat(x, "/lathe/token");
  }
  if (const char* h = std::getenv("HOME"); h && *h) {
    return absl::StrCat(h, "/.config/lathe/token");
  }
  return "";
}

absl::StatusOr<int64_t> ParseLifetimeSeconds(const std::string& text) {
  int64_t days = 0;
  if (!text.empty() && text.back() == 'd' &&
      absl::SimpleAtoi(text.substr(0, text.size() - 1), &days) && days > 0 &&
      days <= 36500) {
    return days * 86400;
  }
  absl::Duration d;
  if (absl::ParseDuration(text, &d) && d >= absl::Seconds(1)) {
    return absl::ToInt64Seconds(d);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--expires: \"", text, "\" is not a duration such as 30d, 12h or 90m"));
}

bool IsAccountCommand(const std::string& c) {
  return c == "users create" || c == "users list" || c == "users disable" ||
         c == "tokens create" || c == "tokens list" || c == "tokens revoke" ||
         c == "audit" || c == "whoami" || c == "login";
}

int RunAccountCommand(Client& client, const ParsedArgs& a,
                      const std::string& token, const AccountIo& io) {
  const std::string cmd = a.command->name;
  auto& admin = client.admin();
  auto call = [&](const grpc::Status& s) -> absl::Status {
    return FromGrpc(s);
  };
  if (cmd == "users create") {
    auto role = ParseRole(a.Get("role"));
    if (!role.ok()) return io.fail(role.status());
    lathe::v1::CreateUserRequest req;
    req.set_name(a.positional[0]);
    req.set_team(a.Get("team"));
    req.set_role(*role);
    lathe::v1::CreateUserResponse resp;
    if (auto s = call(admin.CreateUser(Ctx().get(), req, &resp)); !s.ok()) {
      return io.fail(s);
    }
    if (io.json) {
      std::cout << ToJson(resp.user()) << "\n";
    } else {
      std::cout << "created user " << resp.user().name() << " (team "
                << resp.user().team() << ", " << RoleName(resp.user().role())
                << ")\n";
    }
    return 0;
  }
  if (cmd == "users list") {
    lathe::v1::ListUsersResponse resp;
    if (auto s = call(admin.ListUsers(Ctx().get(), {}, &resp)); !s.ok()) {
      return io.fail(s);
    }
    if (io.json) {
      std::cout << ToJson(resp) << "\n";
      return 0;
    }
    std::cout << std::left << std::setw(20) << "NAME" << std::setw(16) << "TEAM"
              << std::setw(8) << "ROLE"
              << "STATE\n";
    for (const auto& u : resp.users()) PrintUser(u);
    return 0;
  }
  if (cmd == "users disable") {
    lathe::v1::DisableUserRequest req;
    req.set_name(a.positional[0]);
    lathe::v1::DisableUserResponse resp;
    if (auto s = call(admin.DisableUser(Ctx().get(), req, &resp)); !s.ok()) {
      return io.fail(s);
    }
    if (io.json) {
      std::cout << ToJson(resp.user()) << "\n";
    } else {
      std::cout << "disabled user " << resp.user().name()
                << "; its tokens are refused from now on\n";
    }
    return 0;
  }
  if (cmd == "tokens create") {
    lathe::v1::CreateTokenRequest req;
    req.set_user(a.Get("user"));
    req.set_name(a.Get("name"));
    if (!a.Get("expires").empty()) {
      auto secs = ParseLifetimeSeconds(a.Get("expires"));
      if (!secs.ok()) return io.fail(secs.status());
      req.set_expires_in_s(*secs);
    }
    lathe::v1::CreateTokenResponse resp;
    if (auto s = call(admin.CreateToken(Ctx().get(), req, &resp)); !s.ok()) {
      return io.fail(s);
    }
    if (io.json) {
      // `token` is the secret, as scripts read it; `info` the listing.
      std::cout << "{\"token\":\"" << resp.secret()
                << "\",\"info\":" << ToJson(resp.token()) << "}\n";
    } else {
      std::cout << resp.secret() << "\n";
      std::cerr << "token " << resp.token().id() << " for user "
                << resp.token().user()
                << ": shown this once; keep it in a file only you can "
                   "read\n";
    }
    return 0;
  }
  if (cmd == "tokens list") {
    lathe::v1::ListTokensRequest req;
    req.set_user(a.Get("user"));
    lathe::v1::ListTokensResponse resp;
    if (auto s = call(admin.ListTokens(Ctx().get(), req, &resp)); !s.ok()) {
      return io.fail(s);
    }
    if (io.json) {
      std::cout << ToJson(resp) << "\n";
      return 0;
    }
    std::cout << std::left << std::setw(17) << "ID" << std::setw(16) << "USER"
              << std::setw(9) << "STATE" << std::setw(21) << "EXPIRES"
              << std::setw(21) << "LAST USED"
              << "NAME\n";
    for (const auto& t : resp.tokens()) PrintToken(t);
    return 0;
  }
  if (cmd == "tokens revoke") {
    lathe::v1::RevokeTokenRequest req;
    req.set_id(a.positional[0]);
    lathe::v1::RevokeTokenResponse resp;
    if (auto s = call(admin.RevokeToken(Ctx().get(), req, &resp)); !s.ok()) {
      return io.fail(s);
    }
    if (io.json) {
      std::cout << ToJson(resp.token()) << "\n";
    } else {
      std::cout << "revoked token " << resp.token().id() << "\n";
    }
    return 0;
  }
  if (cmd == "audit") {
    lathe::v1::ListAuditRequest req;
    int64_t n = 0;
    if (!a.Get("limit").empty() &&
        (!absl::SimpleAtoi(a.Get("limit"), &n) || n < 1 || n > 1000)) {
      return io.fail(absl::InvalidArgumentError(
          "--limit: must be an integer in [1, 1000]"));
    }
    req.set_page_size(static_cast<int32_t>(n));
    int64_t before = 0;
    if (!a.Get("before-seq").empty() &&
        !absl::SimpleAtoi(a.Get("before-seq"), &before)) {
      return io.fail(
          absl::InvalidArgumentError("--before-seq: must be an integer"));
    }
    req.set_before_seq(before);
    lathe::v1::ListAuditResponse resp;
    if (auto s = call(admin.ListAudit(Ctx().get(), req, &resp)); !s.ok()) {
      return io.fail(s);
    }
    if (io.json) {
      std::cout << ToJson(resp) << "\n";
      return 0;
    }
    for (const auto& e : resp.entries()) {
      std::cout << e.seq() << "  " << When(e.time_ms()) << "  "
                << (e.user().empty() ? "-" : e.user()) << "  " << e.method()
                << "  " << (e.resource().empty() ? "-" : e.resource()) << "  "
                << e.code() << "  " << e.peer() << "\n";
    }
    return 0;
  }
  if (cmd == "whoami" || cmd == "login") {
    lathe::v1::WhoAmIResponse resp;
    if (auto s = call(admin.WhoAmI(Ctx().get(), {}, &resp)); !s.ok()) {
      return io.fail(s);
    }
    if (cmd == "login") {
      if (auto s = StoreToken(token); !s.ok()) return io.fail(s);
      std::cerr << "token " << resp.token().id() << " kept in "
                << LoginTokenFile() << "\n";
    }
    if (io.json) {
      std::cout << ToJson(resp) << "\n";
    } else {
      std::cout << resp.user().name() << " (team "
                << (resp.user().team().empty() ? "-" : resp.user().team())
                << ", " << RoleName(resp.user().role()) << ") with token "
                << resp.token().id() << "\n";
    }
    return 0;
  }
  return io.fail(absl::UnimplementedError(cmd));
}

}  // namespace lathe::client
