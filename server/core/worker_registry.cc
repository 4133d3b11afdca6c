#include "server/core/worker_registry.h"

#include <algorithm>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace lathe::server {

absl::Status WorkerRegistry::Validate(
    const std::string& name, const std::vector<lathe::v1::Device>& devices) {
  if (name.empty() || name.size() > 128) {
    return Invalid("name", "must have 1 to 128 characters");
  }
  if (devices.empty() || devices.size() > 64) {
    return Invalid("devices", "must list 1 to 64 devices");
  }
  static const std::regex kDevice("cpu|cuda:[0-9]{1,2}");
  for (const auto& d : devices) {
    if (!std::regex_match(d.name(), kDevice) || d.memory_mb() < 0) {
      return Invalid("devices", absl::StrCat("\"", d.name().substr(0, 64),
                                             "\" is not cpu or cuda:N"));
    }
  }
  return absl::OkStatus();
}

void WorkerRegistry::Add(const std::string& id, const std::string& name,
                         const std::vector<lathe::v1::Device>& devices,
                         const std::string& owner) {
  absl::MutexLock lock(&mu_);
  Entry& e = workers_[id];
  e.info.id = id;
  e.info.name = name;
  e.info.devices = devices;
  e.info.owner = owner;
  e.last_seen_ms = clock_();
  PublishLocked();
}

void WorkerRegistry::AddPlaceholder(const std::string& id,
                                    const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  Entry& e = workers_[id];
  e.info.id = id;
  e.info.name = "(reconnecting)";
  e.info.jobs.insert(job_id);
  e.last_seen_ms = clock_();
  PublishLocked();
}

absl::Status WorkerRegistry::CheckOwner(const std::string& id,
                                        const std::string& user) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker ", id, " is not registered"));
  }
  std::string& owner = it->second.info.owner;
  if (owner.empty()) owner = user;
  if (owner != user) {
    return absl::PermissionDeniedError(absl::StrCat(
        "worker ", id, " was registered with another worker credential"));
  }
  return absl::OkStatus();
}

std::set<std::string> WorkerRegistry::JobsOf(const std::string& user) const {
  absl::MutexLock lock(&mu_);
  std::set<std::string> out;
  for (const auto& [id, e] : workers_) {
    if (e.info.owner == user)
      out.insert(e.info.jobs.begin(), e.info.jobs.end());
  }
  return out;
}

absl::StatusOr<WorkerInfo> WorkerRegistry::Touch(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker ", id, " is not registered"));
  }
  it->second.last_seen_ms = clock_();
  return it->second.info;
}

void WorkerRegistry::AddJob(const std::string& id, const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it != workers_.end()) it->second.info.jobs.insert(job_id);
}

void WorkerRegistry::RemoveJob(const std::string& id,
                               const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it != workers_.end()) it->second.info.jobs.erase(job_id);
}

bool WorkerRegistry::OwnedBy(const std::string& id,
                             const std::string& user) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  return it != workers_.end() && !it->second.info.owner.empty() &&
         it->second.info.owner == user;
}

std::vector<WorkerInfo> WorkerRegistry::Expire(int64_t timeout_ms) {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_();
  std::vector<WorkerInfo> gone;
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (now - it->second.last_seen_ms <= timeout_ms) {
      ++it;
      continue;
    }
    gone.push_back(std::move(it->second.info));
    it = workers_.erase(it);
  }
  PublishLocked();
  return gone;
}

std::vector<std::pair<WorkerInfo, int64_t>> WorkerRegistry::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<WorkerInfo, int64_t>> out;
  for (const auto& [id, e] : workers_) out.emplace_back(e.info, e.last_seen_ms);
  return out;
}

size_t WorkerRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return workers_.size();
}

void WorkerRegistry::PublishLocked() {
  metrics_->SetWorkers(static_cast<double>(workers_.size()));
}

bool WorkerRegistry::Fits(const std::vector<lathe::v1::Device>& devices,
                          const lathe::v1::Resources& res) {
  return Matching(devices, res) >= std::max(1, res.device_count());
}

WorkerRegistry::Capacity WorkerRegistry::CapacityFor(
    const lathe::v1::Resources& res) const {
  absl::MutexLock lock(&mu_);
  Capacity c;
  for (const auto& [id, e] : workers_) {
    const int n = Matching(e.info.devices, res);
    c.most_on_one = std::max(c.most_on_one, n);
    c.total += n;
  }
  return c;
}

int WorkerRegistry::Matching(const std::vector<lathe::v1::Device>& devices,
                             const lathe::v1::Resources& res) {
  const std::string kind =
      res.device_kind().empty() ? "cpu" : res.device_kind();
  int matching = 0;
  for (const auto& d : devices) {
    const std::string dkind =
        absl::StartsWith(d.name(), "cuda") ? "cuda" : "cpu";
    if (dkind != kind) continue;
    if (res.min_device_memory_mb() > 0 &&
        d.memory_mb() < res.min_device_memory_mb()) {
      continue;
    }
    ++matching;
  }
  return matching;
}

}  // namespace lathe::server
