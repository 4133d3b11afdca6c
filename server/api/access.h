// The one place where the server decides whether a caller may make a call.
// Every RPC handler reaches the core only through an RpcScope
// (services.cc), which authenticates the call's bearer token and asks
// AccessPolicy::Check before it hands the core out, so no handler can skip
// the check. The table in access.cc names a rule for every method of
// lathe.v1; a method without one is refused, and tests/server/access_test.cc
// fails for it.
//
// The rule decides by role; which team's jobs, datasets and models a caller
// may touch is decided by the core and the handlers from Principal::Sees.
//
// Thread safety: immutable; Check may be called concurrently.
#ifndef LATHE_SERVER_API_ACCESS_H_
#define LATHE_SERVER_API_ACCESS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "server/core/principal.h"

namespace lathe::server {

// Who a method serves.
enum class Audience {
  kClient,   // JobService, DatasetService, ModelService: people, pipelines
  kWorker,   // WorkerService: worker agents
  kAdmin,    // users and the audit log: admins
  kAccount,  // a caller's own tokens: admins, members and viewers
  kAnyone,   // any valid token (WhoAmI)
};

struct AccessRule {
  Audience audience;
  // Changes state (submits, cancels, uploads, reports); read-only otherwise.
  // Viewers may make only calls that change nothing.
  bool mutating;
  // Goes to the audit log when admitted. Every refused call does too; the
  // worker's frequent calls (heartbeats, events, fetches) do not.
  bool audited;
};

class AccessPolicy {
 public:
  // The rule for a method by its full name ("lathe.v1.JobService.GetJob"),
  // or null when the table has none.
  static const AccessRule* RuleFor(std::string_view method);
  // Every method the table names.
  static std::vector<std::string> Methods();
  // OK when `who` may call `method`; PERMISSION_DENIED, naming the role,
  // otherwise and for a method without a rule.
  absl::Status Check(std::string_view method, const Principal& who) const;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_API_ACCESS_H_
