#include "server/core/identities.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status.h"

namespace lathe::server {

using lathe::v1::ApiToken;
using lathe::v1::Role;
using lathe::v1::User;

namespace {

constexpr char kPrefix[] = "lt_";
constexpr size_t kIdHex = 12;
constexpr size_t kSecretHex = 64;

absl::StatusOr<std::string> RandomHex(size_t hex_digits) {
  std::string bytes(hex_digits / 2, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()),
                 static_cast<int>(bytes.size())) != 1) {
    return absl::InternalError("the random number generator failed");
  }
  return absl::BytesToHexString(bytes);
}

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(c) || absl::ascii_isupper(c)) return false;
  }
  return true;
}

}  // namespace

bool Identities::ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_islower(c) || absl::ascii_isdigit(c) ||
                    (i > 0 && (c == '.' || c == '_' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<Identities>> Identities::Open(Store* store) {
  auto ids = std::unique_ptr<Identities>(new Identities(store));
  ASSIGN_OR_RETURN(auto users, store->Users());
  ASSIGN_OR_RETURN(auto tokens, store->Tokens());
  absl::MutexLock lock(&ids->mu_);
  for (auto& u : users) ids->users_[u.name()] = std::move(u);
  for (auto& t : tokens) {
    const std::string id = t.token.id();
    ids->tokens_[id] = TokenEntry{std::move(t.token), std::move(t.hash)};
  }
  return ids;
}

absl::StatusOr<Principal> Identities::Authenticate(std::string_view header) {
  if (header.empty()) return absl::UnauthenticatedError(kNoTokenHint);
  constexpr std::string_view kBearer = "Bearer ";
  if (header.substr(0, kBearer.size()) != kBearer) {
    return absl::UnauthenticatedError(
        "malformed authorization header: expected \"Bearer TOKEN\"");
  }
  const std::string_view token = header.substr(kBearer.size());
  // lt_<id>_<secret>
  const size_t want = sizeof(kPrefix) - 1 + kIdHex + 1 + kSecretHex;
  if (token.size() != want || token.substr(0, 3) != kPrefix ||
      token[sizeof(kPrefix) - 1 + kIdHex] != '_' ||
      !IsHex(token.substr(sizeof(kPrefix) - 1, kIdHex)) ||
      !IsHex(token.substr(sizeof(kPrefix) + kIdHex))) {
    return absl::UnauthenticatedError("malformed token");
  }
  const std::string id(token.substr(0, sizeof(kPrefix) - 1 + kIdHex));
  const std::string hash = Sha256Hex(token);
  const int64_t now = NowMs();
  absl::MutexLock lock(&mu_);
  auto it = tokens_.find(id);
  // The same answer for an unknown id and a wrong secret.
  if (it == tokens_.end() || it->second.hash.size() != hash.size() ||
      CRYPTO_memcmp(it->second.hash.data(), hash.data(), hash.size()) != 0) {
    return absl::UnauthenticatedError(
        absl::StrCat("token ", id, " is not known to this server"));
  }
  ApiToken& t = it->second.token;
  if (t.revoke_time_ms() != 0) {
    return absl::UnauthenticatedError(
        absl::StrCat("token ", id, " was revoked"));
  }
  if (t.expire_time_ms() != 0 && t.expire_time_ms() <= now) {
    return absl::UnauthenticatedError(
        absl::StrCat("token ", id, " has expired"));
  }
  auto u = users_.find(t.user());
  if (u == users_.end() || u->second.disabled()) {
    return absl::UnauthenticatedError(
        absl::StrCat("the user of token ", id, " is disabled"));
  }
  // Last use to the second is enough, and spares a write per call.
  if (now - t.last_used_time_ms() >= 1000) {
    t.set_last_used_time_ms(now);
    it->second.dirty = true;
  }
  return Principal{u->second.name(), u->second.team(), u->second.role(), id};
}

bool Identities::HasUsers() {
  absl::MutexLock lock(&mu_);
  return !users_.empty();
}

absl::StatusOr<User> Identities::CreateUser(const std::string& name,
                                            const std::string& team,
                                            Role role) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        "name: must be 1 to 64 of a-z, 0-9 and . _ - (starting with a letter "
        "or digit)");
  }
  if (role != lathe::v1::ROLE_WORKER && !ValidName(team)) {
    return absl::InvalidArgumentError(
        "team: must be 1 to 64 of a-z, 0-9 and . _ - (starting with a letter "
        "or digit)");
  }
  if (role == lathe::v1::ROLE_UNSPECIFIED) role = lathe::v1::ROLE_MEMBER;
  if (!lathe::v1::Role_IsValid(role)) {
    return absl::InvalidArgumentError("role: unknown role");
  }
  User user;
  user.set_name(name);
  user.set_team(team);
  user.set_role(role);
  user.set_create_time_ms(NowMs());
  absl::MutexLock lock(&mu_);
  if (users_.count(name) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("name: user ", name, " already exists"));
  }
  RETURN_IF_ERROR(store_->PutUser(user));
  users_[name] = user;
  return user;
}

std::vector<User> Identities::ListUsers() {
  absl::MutexLock lock(&mu_);
  std::vector<User> out;
  for (const auto& [name, u] : users_) out.push_back(u);
  return out;
}

absl::StatusOr<User> Identities::GetUser(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = users_.find(name);
  if (it == users_.end()) {
    return absl::NotFoundError(absl::StrCat("user ", name, " not found"));
  }
  return it->second;
}

absl::StatusOr<User> Identities::DisableUser(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = users_.find(name);
  if (it == users_.end()) {
    return absl::NotFoundError(absl::StrCat("user ", name, " not found"));
  }
  User u = it->second;
  u.set_disabled(true);
  RETURN_IF_ERROR(store_->PutUser(u));
  it->second = u;
  return u;
}

absl::StatusOr<Identities::NewToken> Identities::CreateToken(
    const std::string& user, const std::string& label, absl::Duration ttl) {
  if (label.size() > 128) {
    return absl::InvalidArgumentError("name: at most 128 characters");
  }
  if (ttl < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("expires_in_s: must be >= 0");
  }
  ASSIGN_OR_RETURN(std::string id_hex, RandomHex(kIdHex));
  ASSIGN_OR_RETURN(std::string secret_hex, RandomHex(kSecretHex));
  NewToken out;
  const std::string id = absl::StrCat(kPrefix, id_hex);
  out.secret = absl::StrCat(id, "_", secret_hex);
  ApiToken& t = out.token;
  t.set_id(id);
  t.set_user(user);
  t.set_name(label);
  t.set_create_time_ms(NowMs());
  if (ttl > absl::ZeroDuration()) {
    t.set_expire_time_ms(t.create_time_ms() + absl::ToInt64Milliseconds(ttl));
  }
  const std::string hash = Sha256Hex(out.secret);
  absl::MutexLock lock(&mu_);
  auto u = users_.find(user);
  if (u == users_.end()) {
    return absl::NotFoundError(absl::StrCat("user ", user, " not found"));
  }
  if (u->second.disabled()) {
    return absl::FailedPreconditionError(
        absl::StrCat("user ", user, " is disabled"));
  }
  if (tokens_.count(id) > 0) {
    return absl::AbortedError("token id collision; try again");
  }
  RETURN_IF_ERROR(store_->PutToken(t, hash));
  tokens_[id] = TokenEntry{t, hash};
  return out;
}

std::vector<ApiToken> Identities::ListTokens(const std::string& user) {
  absl::MutexLock lock(&mu_);
  std::vector<ApiToken> out;
  for (const auto& [id, e] : tokens_) {
    if (user.empty() || e.token.user() == user) out.push_back(e.token);
  }
  return out;
}

absl::StatusOr<ApiToken> Identities::GetToken(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = tokens_.find(id);
  if (it == tokens_.end()) {
    return absl::NotFoundError(absl::StrCat("token ", id, " not found"));
  }
  return it->second.token;
}

absl::StatusOr<ApiToken> Identities::RevokeToken(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = tokens_.find(id);
  if (it == tokens_.end()) {
    return absl::NotFoundError(absl::StrCat("token ", id, " not found"));
  }
  ApiToken t = it->second.token;
  if (t.revoke_time_ms() == 0) {
    t.set_revoke_time_ms(NowMs());
    RETURN_IF_ERROR(store_->UpdateToken(t));
    it->second.token = t;
    it->second.dirty = false;
  }
  return t;
}

absl::Status Identities::FlushLastUsed() {
  // Under the lock, so that a revocation written meanwhile is never
  // overwritten by an older copy of the row.
  absl::MutexLock lock(&mu_);
  for (auto& [id, e] : tokens_) {
    if (!e.dirty) continue;
    RETURN_IF_ERROR(store_->UpdateToken(e.token));
    e.dirty = false;
  }
  return absl::OkStatus();
}

}  // namespace lathe::server
