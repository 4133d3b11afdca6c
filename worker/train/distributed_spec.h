// Where a training process stands in a data-parallel gang: the spec's
// "distributed" object (see distributed.h for what the ranks do). No
// LibTorch in this header.
#ifndef LATHE_WORKER_TRAIN_DISTRIBUTED_SPEC_H_
#define LATHE_WORKER_TRAIN_DISTRIBUTED_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lathe {

// Where a rank stands in its gang, as the spec's "distributed" object says.
struct DistributedSpec {
  int world_size = 1;
  int rank = 0;
  // Rank 0's TCPStore: the host it listens on (every rank dials it) and its
  // port.
  std::string store_host = "127.0.0.1";
  int store_port = 0;
  // Prefixes every key in the store, so that keys of an earlier attempt can
  // never match (the agent or server sets job id and attempt).
  std::string store_prefix;
  // How long a rendezvous or collective may wait for the slowest rank.
  int timeout_seconds = 600;
  // Ranks on this machine (0: world_size): CPU ranks split the cores
  // between them unless params[num_threads] says otherwise.
  int local_ranks = 0;

  // INVALID_ARGUMENT naming the field. A missing object is one rank alone.
  static absl::StatusOr<DistributedSpec> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;
};

}  // namespace lathe

#endif  // LATHE_WORKER_TRAIN_DISTRIBUTED_SPEC_H_
