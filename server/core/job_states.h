// Facts about jobs that every part of the server core shares: which states
// are final or hold a worker, the event a transition writes, the error that
// names a request field, and the clock the parts are given.
#ifndef LATHE_SERVER_CORE_JOB_STATES_H_
#define LATHE_SERVER_CORE_JOB_STATES_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "lathe/v1/lathe.pb.h"

namespace lathe::server {

class Metrics;
class Store;

// Milliseconds since the epoch; tests hand in a fake.
using Clock = std::function<int64_t()>;

// SUCCEEDED, FAILED or CANCELLED: the job never changes again.
bool IsFinal(lathe::v1::JobState state);
// RUNNING, CANCELLING or PAUSING: an attempt holds a worker.
bool HoldsWorker(lathe::v1::JobState state);

lathe::v1::Event StateEvent(lathe::v1::JobState state,
                            const std::string& message);

// INVALID_ARGUMENT "FIELD: WHAT", the shape every validation error has.
absl::Status Invalid(const std::string& field, const std::string& what);

// `prefix` followed by 12 random hex digits.
std::string RandomId(const char* prefix);

// Sets the stored-bytes gauge from the store (errors leave it as it was).
void PublishStoredBytes(Store* store, Metrics* metrics);

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_JOB_STATES_H_
