#include "server/api/stream_watchdog.h"

namespace lathe::server {

StreamWatchdog::Watch::Watch(StreamWatchdog* dog, grpc::ServerContext* ctx)
    : dog_(dog) {
  absl::MutexLock lock(&dog_->mu_);
  id_ = dog_->next_++;
  dog_->calls_[id_] = Entry{ctx, absl::Now()};
}

StreamWatchdog::Watch::~Watch() {
  absl::MutexLock lock(&dog_->mu_);
  dog_->calls_.erase(id_);
}

void StreamWatchdog::Watch::Touch() {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&dog_->mu_);
  auto it = dog_->calls_.find(id_);
  if (it != dog_->calls_.end()) it->second.last = now;
}

int StreamWatchdog::Sweep(absl::Time now) {
  if (idle_timeout_ <= absl::ZeroDuration()) return 0;
  int cancelled = 0;
  absl::MutexLock lock(&mu_);
  for (auto& [id, e] : calls_) {
    if (e.cancelled || now - e.last <= idle_timeout_) continue;
    // The call stays registered until its handler returns (its Watch is
    // destroyed), so the context is alive here.
    e.ctx->TryCancel();
    e.cancelled = true;
    ++cancelled;
  }
  return cancelled;
}

}  // namespace lathe::server
