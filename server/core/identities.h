// Users, their teams and roles, and API tokens: who a call is from.
//
// A token reads "lt_" + 12 hex digits (its id, not secret, shown in
// listings and the audit log) + "_" + 64 hex digits (256 random bits from
// the operating system's CSPRNG). The store keeps only the SHA-256 of the
// whole token; the secret is returned once, by CreateToken. Users and tokens
// are held in memory as well as in the store, so a check costs no query and
// a revocation or a disabled user takes effect on the very next call.
// Last-use times are kept in memory and written by FlushLastUsed.
//
// Thread safety: every method may be called from any thread.
#ifndef LATHE_SERVER_CORE_IDENTITIES_H_
#define LATHE_SERVER_CORE_IDENTITIES_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/principal.h"
#include "server/core/store.h"

namespace lathe::server {

class Identities {
 public:
  static absl::StatusOr<std::unique_ptr<Identities>> Open(Store* store);

  // The principal of an `authorization` header value ("Bearer TOKEN").
  // UNAUTHENTICATED, saying which, for a missing or malformed header and an
  // unknown, expired or revoked token or a disabled user.
  absl::StatusOr<Principal> Authenticate(std::string_view header);

  bool HasUsers();
  // INVALID_ARGUMENT naming the field; ALREADY_EXISTS for a taken name.
  absl::StatusOr<lathe::v1::User> CreateUser(const std::string& name,
                                             const std::string& team,
                                             lathe::v1::Role role);
  std::vector<lathe::v1::User> ListUsers();
  absl::StatusOr<lathe::v1::User> DisableUser(const std::string& name);
  absl::StatusOr<lathe::v1::User> GetUser(const std::string& name);

  struct NewToken {
    lathe::v1::ApiToken token;
    std::string secret;  // The whole token, shown once.
  };
  // `ttl` zero: never expires. NOT_FOUND for an unknown user.
  absl::StatusOr<NewToken> CreateToken(const std::string& user,
                                       const std::string& label,
                                       absl::Duration ttl);
  // Every token, or `user`'s when not empty; by id.
  std::vector<lathe::v1::ApiToken> ListTokens(const std::string& user);
  absl::StatusOr<lathe::v1::ApiToken> GetToken(const std::string& id);
  // NOT_FOUND for an unknown id; revoking twice keeps the first time.
  absl::StatusOr<lathe::v1::ApiToken> RevokeToken(const std::string& id);
  // Writes the last-use times that changed since the last flush.
  absl::Status FlushLastUsed();

  // [a-z0-9][a-z0-9._-]*, 1 to 64 characters: user and team names.
  static bool ValidName(std::string_view name);

 private:
  explicit Identities(Store* store) : store_(store) {}
  struct TokenEntry {
    lathe::v1::ApiToken token;
    std::string hash;
    bool dirty = false;  // last_used_time_ms not yet written
  };

  Store* const store_;
  absl::Mutex mu_;
  std::map<std::string, lathe::v1::User> users_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, TokenEntry> tokens_ ABSL_GUARDED_BY(mu_);
};

// The error text a token check gives for a missing credential, naming how to
// supply one.
inline constexpr char kNoTokenHint[] =
    "no token: pass --token-file FILE, set LATHE_TOKEN, or run `lathe "
    "login`";

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_IDENTITIES_H_
