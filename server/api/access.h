// The one place where the server decides whether a caller may make a call.
// Every RPC handler reaches the core only through an RpcScope
// (services.cc), which asks AccessPolicy::Check before it hands the core
// out, so no handler can skip the check. The table in access.cc names a rule
// for every method of lathe.v1; a method without one is refused, and
// tests/server/access_test.cc fails for it.
//
// Today every caller is the one trusted user of a loopback server, so every
// rule admits every caller; the rules already say which audience a method
// serves and whether it changes anything, which is what identities and
// roles will be checked against.
//
// Thread safety: immutable; Check may be called concurrently.
#ifndef LATHE_SERVER_API_ACCESS_H_
#define LATHE_SERVER_API_ACCESS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace lathe::server {

// Who is calling, as the transport tells it.
struct Caller {
  // "ipv4:127.0.0.1:5555", as gRPC names peers.
  std::string peer;
};

// Who a method serves.
enum class Audience {
  kClient,  // JobService, DatasetService, ModelService: people and pipelines
  kWorker,  // WorkerService: worker agents
};

struct AccessRule {
  Audience audience;
  // Changes state (submits, cancels, uploads, reports); read-only otherwise.
  bool mutating;
};

class AccessPolicy {
 public:
  // The rule for a method by its full name ("lathe.v1.JobService.GetJob"),
  // or null when the table has none.
  static const AccessRule* RuleFor(std::string_view method);
  // OK when `caller` may call `method`; PERMISSION_DENIED for a method
  // without a rule.
  absl::Status Check(std::string_view method, const Caller& caller) const;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_API_ACCESS_H_
