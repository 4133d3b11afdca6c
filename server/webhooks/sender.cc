#include "server/webhooks/sender.h"

#include <google/protobuf/util/json_util.h>
#include <httplib.h>

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/redact.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "server/webhooks/signature.h"

namespace lathe::server {
namespace {

nlohmann::json ProtoJson(const google::protobuf::Message& m) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(m, &text, options).ok()) {
    return nlohmann::json::object();
  }
  return nlohmann::json::parse(text, nullptr, false);
}

// The webhook type of a state event, or "" for states that call none.
std::string StateType(lathe::v1::JobState s) {
  switch (s) {
    case lathe::v1::QUEUED:
      return "job.queued";
    case lathe::v1::RUNNING:
      return "job.running";
    case lathe::v1::SUCCEEDED:
      return "job.succeeded";
    case lathe::v1::FAILED:
      return "job.failed";
    case lathe::v1::CANCELLED:
      return "job.cancelled";
    default:
      return "";
  }
}

std::string Shown(const std::string& url) {
  auto parsed = ParseHttpUrl(url, "webhook");
  return parsed.ok() ? parsed->Display() : RedactSecrets(url.substr(0, 64));
}

}  // namespace

absl::StatusOr<std::unique_ptr<WebhookSender>> WebhookSender::Create(
    WebhookOptions options, NoteFn note, BestStepFn best_step) {
  ASSIGN_OR_RETURN(std::string key, WebhookKey(options.secret));
  if (options.max_attempts < 1) options.max_attempts = 1;
  return std::unique_ptr<WebhookSender>(
      new WebhookSender(std::move(options), std::move(key), std::move(note),
                        std::move(best_step)));
}

WebhookSender::WebhookSender(WebhookOptions options, std::string key,
                             NoteFn note, BestStepFn best_step)
    : options_(std::move(options)),
      key_(std::move(key)),
      note_(std::move(note)),
      best_step_(std::move(best_step)) {
  thread_ = std::thread([this] { Loop(); });
}

WebhookSender::~WebhookSender() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void WebhookSender::OnCommit(const lathe::v1::Job& job,
                             const std::vector<lathe::v1::Event>& events) {
  if (job.spec().webhooks().empty()) return;
  std::vector<Delivery> out;
  for (const auto& e : events) {
    std::string type;
    int64_t best = 0;
    if (e.type() == lathe::v1::EVENT_TYPE_STATE) {
      type = StateType(e.state());
    } else if (e.type() == lathe::v1::EVENT_TYPE_CHECKPOINT) {
      type = "checkpoint.best";
      best = e.checkpoint().step();
      if (best <= 0) continue;
    }
    if (type.empty()) continue;
    nlohmann::json data = {{"job", ProtoJson(job)}, {"event", ProtoJson(e)}};
    if (e.has_checkpoint()) data["checkpoint"] = ProtoJson(e.checkpoint());
    const std::string body = nlohmann::json{
        {"type", type},
        {"timestamp",
         absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone())},
        {"data",
         data}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    for (int i = 0; i < job.spec().webhooks_size(); ++i) {
      Delivery d;
      d.job_id = job.id();
      d.url = job.spec().webhooks(i);
      // One id per event and URL, the same for each attempt.
      d.msg_id = absl::StrCat("msg_", job.id(), "_", e.seq(), "_", i);
      d.type = type;
      d.body = body;
      d.best_step = best;
      out.push_back(std::move(d));
    }
  }
  if (out.empty()) return;
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (auto& d : out) {
    if (static_cast<int>(queue_.size()) >= options_.max_pending) break;
    queue_.emplace(now, std::move(d));
  }
}

absl::StatusOr<int> WebhookSender::Post(const Delivery& d) const {
  ASSIGN_OR_RETURN(HttpUrl url, ParseHttpUrl(d.url, "webhook"));
  ASSIGN_OR_RETURN(std::string ip, options_.policy.Resolve(url, "webhook"));
  std::unique_ptr<httplib::ClientImpl> client;
  if (url.scheme == "https") {
    auto ssl = std::make_unique<httplib::SSLClient>(url.host, url.port);
    if (!options_.ca_file.empty()) ssl->set_ca_cert_path(options_.ca_file);
    ssl->enable_server_certificate_verification(true);
    client = std::move(ssl);
  } else {
    client = std::make_unique<httplib::ClientImpl>(url.host, url.port);
  }
  // Connect to the address the policy checked, not to whatever the name
  // resolves to a moment later.
  client->set_hostname_addr_map({{url.host, ip}});
  const auto seconds = absl::ToInt64Seconds(options_.timeout);
  client->set_connection_timeout(seconds, 0);
  client->set_read_timeout(seconds, 0);
  client->set_write_timeout(seconds, 0);
  client->set_follow_location(false);
  const int64_t ts = absl::ToUnixSeconds(absl::Now());
  httplib::Headers headers = {
      {"webhook-id", d.msg_id},
      {"webhook-timestamp", absl::StrCat(ts)},
      {"webhook-signature", SignWebhook(key_, d.msg_id, ts, d.body)},
      {"User-Agent", "lathe-webhooks/1"}};
  auto res = client->Post(url.target, headers, d.body, "application/json");
  if (!res) {
    return absl::UnavailableError(httplib::to_string(res.error()));
  }
  return res->status;
}

void WebhookSender::Loop() {
  while (true) {
    Delivery d;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ ||
               (!queue_.empty() && queue_.begin()->first <= absl::Now());
      };
      while (!ready()) {
        const absl::Time until = queue_.empty() ? absl::Now() + absl::Seconds(1)
                                                : queue_.begin()->first;
        mu_.AwaitWithDeadline(absl::Condition(&ready), until);
      }
      if (stop_) return;
      d = std::move(queue_.begin()->second);
      queue_.erase(queue_.begin());
    }
    if (d.best_step > 0) {
      auto best = best_step_(d.job_id);
      if (!best.ok() || *best != d.best_step) continue;  // not (or no longer)
    }
    ++d.attempt;
    const std::string what =
        absl::StrCat("webhook ", d.type, " to ", Shown(d.url));
    absl::StatusOr<int> status = Post(d);
    if (status.ok() && *status >= 200 && *status < 300) {
      note_(d.job_id, absl::StrCat(what, ": delivered (HTTP ", *status,
                                   ", attempt ", d.attempt, ")"));
      continue;
    }
    const std::string why = status.ok()
                                ? absl::StrCat("HTTP ", *status)
                                : std::string(status.status().message());
    // A URL the policy refuses will not become allowed by waiting.
    const bool refused =
        !status.ok() && absl::IsPermissionDenied(status.status());
    if (refused || d.attempt >= options_.max_attempts) {
      note_(d.job_id, absl::StrCat(what, ": not delivered after ", d.attempt,
                                   d.attempt == 1 ? " attempt" : " attempts",
                                   " (", why, ")"));
      continue;
    }
    const absl::Duration wait = options_.first_retry * (1 << (d.attempt - 1));
    note_(d.job_id,
          absl::StrCat(what, ": attempt ", d.attempt, " failed (", why,
                       "); retrying in ", absl::FormatDuration(wait)));
    absl::MutexLock lock(&mu_);
    queue_.emplace(absl::Now() + wait, std::move(d));
  }
}

}  // namespace lathe::server
