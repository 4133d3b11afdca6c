#include "server/api/limits.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace lathe::server {

absl::Status Limits::TakeSubmit(const std::string& token_id, absl::Time now) {
  if (options_.submit_rate <= 0) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  auto [it, fresh] = buckets_.try_emplace(token_id);
  Bucket& b = it->second;
  if (fresh) {
    b.tokens = options_.submit_burst;
  } else {
    const double refill =
        absl::ToDoubleSeconds(now - b.updated) * options_.submit_rate;
    b.tokens =
        std::min(options_.submit_burst, b.tokens + std::max(0.0, refill));
  }
  b.updated = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return absl::OkStatus();
  }
  const int64_t retry_ms = static_cast<int64_t>(
      std::ceil((1 - b.tokens) / options_.submit_rate * 1000));
  return absl::ResourceExhaustedError(absl::StrCat(
      "more than ", options_.submit_rate, " submits per second with token ",
      token_id, " (the server's --submit-rate); retry in ", retry_ms, " ms"));
}

absl::Status Limits::OpenStream(const std::string& user) {
  if (options_.max_streams <= 0) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  int& n = streams_[user];
  if (n >= options_.max_streams) {
    return absl::ResourceExhaustedError(
        absl::StrCat(user, " already has ", n,
                     " open watches, downloads and uploads (the server's "
                     "--max-streams-per-user); close one and retry"));
  }
  ++n;
  return absl::OkStatus();
}

void Limits::CloseStream(const std::string& user) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(user);
  if (it == streams_.end()) return;
  if (--it->second <= 0) streams_.erase(it);
}

int Limits::open_streams(const std::string& user) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(user);
  return it == streams_.end() ? 0 : it->second;
}

}  // namespace lathe::server
