// Who a call acts for, once its token was checked (identities.h): what the
// core needs to decide ownership and visibility. No gRPC.
#ifndef LATHE_SERVER_CORE_PRINCIPAL_H_
#define LATHE_SERVER_CORE_PRINCIPAL_H_

#include <string>

#include "lathe/v1/lathe.pb.h"

namespace lathe::server {

struct Principal {
  std::string user;
  std::string team;
  lathe::v1::Role role = lathe::v1::ROLE_UNSPECIFIED;
  // The token's non-secret id, for the audit log.
  std::string token_id;

  bool admin() const { return role == lathe::v1::ROLE_ADMIN; }
  // Whether this principal may see a resource of `team`: admins see every
  // team's; everyone else only their own.
  bool Sees(const std::string& resource_team) const {
    return admin() || (!team.empty() && team == resource_team);
  }
  // The server itself and core tests: an admin.
  static Principal System() {
    return Principal{"system", "", lathe::v1::ROLE_ADMIN, ""};
  }
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_PRINCIPAL_H_
