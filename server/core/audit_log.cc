#include "server/core/audit_log.h"

#include <utility>

#include "common/status.h"

namespace lathe::server {

void AuditLog::Record(lathe::v1::AuditEntry entry) {
  entry.set_time_ms(NowMs());
  absl::MutexLock lock(&mu_);
  if (pending_.size() >= kMaxPending) {
    ++dropped_;
    return;
  }
  pending_.push_back(std::move(entry));
}

absl::Status AuditLog::Flush() {
  absl::MutexLock order(&flush_mu_);
  std::vector<lathe::v1::AuditEntry> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(pending_);
  }
  if (batch.empty()) return absl::OkStatus();
  const int64_t keep_after = NowMs() - absl::ToInt64Milliseconds(retention_);
  return store_->AppendAudit(&batch, keep_after, max_rows_);
}

absl::StatusOr<std::vector<lathe::v1::AuditEntry>> AuditLog::List(
    int limit, int64_t before_seq) {
  RETURN_IF_ERROR(Flush());
  return store_->Audit(limit, before_seq);
}

int64_t AuditLog::dropped() {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

}  // namespace lathe::server
