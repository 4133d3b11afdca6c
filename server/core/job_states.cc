#include "server/core/job_states.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/core/metrics.h"
#include "server/core/store.h"

namespace lathe::server {

bool HoldsWorker(lathe::v1::JobState state) {
  return state == lathe::v1::RUNNING || state == lathe::v1::CANCELLING ||
         state == lathe::v1::PAUSING;
}

bool IsFinal(lathe::v1::JobState state) {
  return state == lathe::v1::SUCCEEDED || state == lathe::v1::FAILED ||
         state == lathe::v1::CANCELLED;
}

lathe::v1::Event StateEvent(lathe::v1::JobState state,
                            const std::string& message) {
  lathe::v1::Event e;
  e.set_type(lathe::v1::EVENT_TYPE_STATE);
  e.set_state(state);
  e.set_message(message);
  return e;
}

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

std::string RandomId(const char* prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%s%012x", prefix, rng() & 0xffffffffffffULL);
}

void PublishStoredBytes(Store* store, Metrics* metrics) {
  auto bytes = store->StoredBytes();
  if (bytes.ok()) metrics->SetStoredBytes(static_cast<double>(*bytes));
}

}  // namespace lathe::server
