// Small pieces the agent's files share: logging, call deadlines, how a
// training child ended, a free port for a gang's store.
#ifndef LATHE_WORKER_AGENT_AGENT_UTIL_H_
#define LATHE_WORKER_AGENT_AGENT_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lathe/v1/lathe.pb.h"
#include "worker/agent/child.h"

namespace lathe::worker {

absl::Status FromGrpc(const grpc::Status& s);
// One line on stderr, prefixed "lathe-worker: ".
void Log(const std::string& msg);
// A client context whose deadline is `timeout` from now.
std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout);
// A free TCP port, for a gang's store: bound on the loopback, read and
// released; rank 0 binds it again moments later.
absl::StatusOr<int> FreeLoopbackPort();
// How a child's exit counts: exit code 2 is invalid input, 3 out of
// memory, anything else a crash.
lathe::v1::FailureKind FailureKindOf(const ChildExit& exit);
// "killed by signal N" or "exited with code N".
std::string DescribeExit(const ChildExit& exit);

}  // namespace lathe::worker

#endif  // LATHE_WORKER_AGENT_AGENT_UTIL_H_
