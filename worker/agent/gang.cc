// A worker's part in a gang: a job spread over several workers (see
// server/core/lifecycle_gang.cc for how the server places one). Rank 0's
// member runs RunJob as for a job on one worker, with the gang's world
// size; every other member runs its ranks here. They report nothing while
// they train: the first of them to fail ends the attempt for the whole gang,
// and when the attempt ends otherwise (rank 0 finished, failed, paused or
// was cancelled) they stop with it.
#include <algorithm>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "worker/agent/agent.h"
#include "worker/agent/agent_util.h"
#include "worker/agent/child.h"

namespace lathe::worker {

using lathe::v1::Assignment;
using nlohmann::json;

int Agent::GangWorldSize(const Assignment& a) {
  int world = 1;
  for (const auto& m : a.gang()) {
    world = std::max(world, m.first_rank() + m.device_count());
  }
  return world;
}

absl::StatusOr<std::string> Agent::JoinGang(const Assignment& a,
                                            const std::string& store_address) {
  const absl::Time deadline = absl::Now() + options_.gang_join_timeout;
  while (true) {
    if (cancel_ || pause_ || stop_) {
      return absl::CancelledError(
          "the attempt was stopped before its gang assembled");
    }
    lathe::v1::JoinGangRequest req;
    req.set_worker_id(WorkerId());
    req.set_job_id(a.job_id());
    req.set_attempt(a.attempt());
    req.set_store_address(store_address);
    req.set_wait_ms(2000);
    lathe::v1::JoinGangResponse resp;
    auto ctx = Ctx(absl::Seconds(10));
    grpc::Status s = stub_->JoinGang(ctx.get(), req, &resp);
    if (s.ok() && !resp.store_address().empty()) return resp.store_address();
    if (!s.ok() && s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return FromGrpc(s);
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the gang of ", a.gang_size(), " workers did not assemble within ",
          absl::FormatDuration(options_.gang_join_timeout)));
    }
    if (!s.ok()) absl::SleepFor(absl::Seconds(1));
  }
}

void Agent::RunGangMember(const Assignment& a) {
  // Rank 0's worker runs a prediction alone.
  if (a.spec().kind() == lathe::v1::JOB_KIND_PREDICT) return;
  const lathe::v1::GangMember& me = a.gang(a.gang_member());
  const std::string dir = absl::StrCat(options_.work_dir, "/jobs/", a.job_id(),
                                       "/attempt-", a.attempt());
  auto fail = [&](const std::string& error, lathe::v1::FailureKind kind) {
    Log(absl::StrCat("job ", a.job_id(), " attempt ", a.attempt(),
                     " failed here: ", error));
    Finish(a, lathe::v1::FAILED, error, kind);
  };
  json spec;
  absl::Status s = PrepareSpec(a, dir, &spec);
  const std::vector<std::string> devices = Devices();
  if (s.ok() && me.device_count() > static_cast<int>(devices.size())) {
    s = absl::FailedPreconditionError(
        absl::StrCat("the gang gives this worker ", me.device_count(),
                     " ranks; it has ", devices.size(), " devices"));
  }
  std::string store;
  if (s.ok()) {
    auto joined = JoinGang(a, "");
    if (absl::IsFailedPrecondition(joined.status())) {
      return;  // The attempt ended while this worker prepared.
    }
    if (joined.ok()) {
      store = *joined;
    } else {
      s = joined.status();
    }
  }
  std::string host;
  int port = 0;
  if (s.ok()) {
    const size_t colon = store.rfind(':');
    host = store.substr(0, colon);
    if (colon == std::string::npos ||
        !absl::SimpleAtoi(store.substr(colon + 1), &port)) {
      s = absl::InvalidArgumentError(
          absl::StrCat("rank 0's store address \"", store, "\" is malformed"));
    }
  }
  if (absl::IsCancelled(s)) {
    if (stop_ && !cancel_ && !pause_) {
      Finish(a, lathe::v1::QUEUED, "worker is shutting down",
             lathe::v1::FAILURE_KIND_UNSPECIFIED);
    }
    return;
  }
  if (!s.ok()) {
    fail(absl::StrCat("worker ", options_.name,
                      " could not join the gang: ", s.message()),
         lathe::v1::FAILURE_KIND_CRASH);
    return;
  }

  struct Rank {
    int rank = 0;
    std::string device;
    std::unique_ptr<ChildProcess> process;
    std::string error;  // Its "error" event, if any.
    bool exited = false;
    ChildExit exit;
  };
  std::vector<Rank> ranks;
  auto terminate_all = [&] {
    for (Rank& r : ranks) {
      if (r.exited) continue;
      r.process->Terminate(options_.kill_grace);
      r.exited = true;
      r.exit = r.process->Wait();
    }
  };
  for (int i = 0; i < me.device_count(); ++i) {
    const int rank = me.first_rank() + i;
    json rank_spec = spec;
    rank_spec["device"] = devices[static_cast<size_t>(i)];
    rank_spec["distributed"] = {
        {"world_size", GangWorldSize(a)},
        {"rank", rank},
        {"store_host", host},
        {"store_port", port},
        {"store_prefix", absl::StrCat(a.job_id(), "/", a.attempt())},
        {"local_ranks", me.device_count()}};
    const std::string path = absl::StrCat(dir, "/spec-rank", rank, ".json");
    absl::Status written = WriteFileAtomic(path, rank_spec.dump(2));
    auto child = written.ok()
                     ? ChildProcess::Start(
                           {options_.train_binary, "--spec", path, "--out",
                            absl::StrCat(dir, "/output-rank", rank)},
                           absl::StrCat(dir, "/train-rank", rank, ".log"))
                     : absl::StatusOr<std::unique_ptr<ChildProcess>>(written);
    if (!child.ok()) {
      terminate_all();
      fail(absl::StrCat("cannot start rank ", rank, " on worker ",
                        options_.name, ": ", child.status().message()),
           lathe::v1::FAILURE_KIND_CRASH);
      return;
    }
    ranks.push_back(Rank{rank, devices[static_cast<size_t>(i)],
                         *std::move(child), "", false, ChildExit{}});
  }
  Log(absl::StrCat("job ", a.job_id(), " attempt ", a.attempt(), ": ranks ",
                   me.first_rank(), "-",
                   me.first_rank() + me.device_count() - 1, " of ",
                   GangWorldSize(a), " started, store at ", store));

  std::string gang_error;
  lathe::v1::FailureKind kind = lathe::v1::FAILURE_KIND_CRASH;
  // Paused or cancelled: rank 0 stops the training (after its checkpoint
  // when pausing) and these ranks end with it; their end is not a failure.
  bool told_to_stop = false;
  absl::Time stop_deadline = absl::InfiniteFuture();
  absl::Time next_probe = absl::Now() + absl::Seconds(2);
  while (true) {
    bool all_exited = true;
    for (Rank& r : ranks) {
      if (r.exited) continue;
      while (auto line = r.process->ReadLine(absl::Milliseconds(50))) {
        json j = json::parse(*line, nullptr, /*allow_exceptions=*/false);
        if (j.is_object() && j.value("type", "") == "error") {
          r.error = j.value("message", "");
        }
      }
      if (!r.process->eof()) {
        all_exited = false;
        continue;
      }
      r.exited = true;
      r.exit = r.process->Wait();
      if ((r.exit.signaled || r.exit.code != 0) && gang_error.empty() &&
          !told_to_stop) {
        gang_error =
            absl::StrCat("rank ", r.rank, " (", r.device, ") on worker ",
                         options_.name, " ", DescribeExit(r.exit),
                         r.error.empty() ? "" : absl::StrCat(": ", r.error),
                         "; the whole gang stops");
        kind = FailureKindOf(r.exit);
      }
    }
    if (all_exited || !gang_error.empty()) break;
    if (cancel_) break;
    if (stop_ && !pause_) {
      // This worker is going away: give the attempt back at once, and rank
      // 0's worker stops when it next reports.
      terminate_all();
      Finish(a, lathe::v1::QUEUED, "worker is shutting down",
             lathe::v1::FAILURE_KIND_UNSPECIFIED);
      return;
    }
    if (pause_ && !told_to_stop) {
      told_to_stop = true;
      stop_deadline = absl::Now() + options_.drain_timeout;
    }
    if (absl::Now() > stop_deadline) break;
    if (absl::Now() >= next_probe) {
      // The attempt may have ended on rank 0's side; its ranks here would
      // otherwise wait out their collective timeout.
      lathe::v1::JoinGangRequest req;
      req.set_worker_id(WorkerId());
      req.set_job_id(a.job_id());
      req.set_attempt(a.attempt());
      lathe::v1::JoinGangResponse resp;
      auto ctx = Ctx(absl::Seconds(5));
      grpc::Status probe = stub_->JoinGang(ctx.get(), req, &resp);
      if (probe.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        told_to_stop = true;
        break;
      }
      next_probe = absl::Now() + absl::Seconds(2);
    }
  }
  terminate_all();
  if (!gang_error.empty()) {
    fail(gang_error, kind);
    return;
  }
  Log(absl::StrCat("job ", a.job_id(), " attempt ", a.attempt(),
                   ": this worker's ranks ended"));
}

}  // namespace lathe::worker
