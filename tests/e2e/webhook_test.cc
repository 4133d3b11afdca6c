// Webhooks against a receiver on loopback: a job that names one is
// announced when queued, running and succeeded and when a checkpoint becomes
// its best; every request carries a Standard Webhooks signature that the
// receiver checks with its own HMAC; the receiver's first answer is a 500,
// and that delivery is retried under the same webhook-id; each outcome is
// one of the job's log events. URLs the server may not call are refused at
// submit, naming the field.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"

namespace lathe::testing {
namespace {

using ::testing::HasSubstr;

struct Received {
  std::string id, timestamp, signature, body, content_type;
  int answered = 0;
};

// A webhook receiver on 127.0.0.1: answers 500 to its first request and
// 200 to the rest, keeping every request.
class Receiver {
 public:
  Receiver() {
    server_.Post("/hook",
                 [this](const httplib::Request& req, httplib::Response& res) {
                   std::lock_guard<std::mutex> lock(mu_);
                   Received r{req.get_header_value("webhook-id"),
                              req.get_header_value("webhook-timestamp"),
                              req.get_header_value("webhook-signature"),
                              req.body, req.get_header_value("Content-Type")};
                   r.answered = got_.empty() ? 500 : 200;
                   res.status = r.answered;
                   got_.push_back(r);
                 });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::vector<Received> got() {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Received> got_;
};

// The receiver's own check, written from the Standard Webhooks description:
// base64(HMAC-SHA256(key, id "." timestamp "." body)), key = the base64
// after "whsec_".
bool SignatureValid(const std::string& secret, const Received& r) {
  std::string key;
  if (!absl::StartsWith(secret, "whsec_") ||
      !absl::Base64Unescape(secret.substr(6), &key)) {
    return false;
  }
  const std::string signed_content =
      absl::StrCat(r.id, ".", r.timestamp, ".", r.body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(signed_content.data()),
       signed_content.size(), mac, &n);
  const std::string want = absl::StrCat(
      "v1,",
      absl::Base64Escape(std::string(reinterpret_cast<const char*>(mac), n)));
  // The header may list several signatures, space-separated.
  for (absl::string_view s : absl::StrSplit(r.signature, ' ')) {
    if (s == want) return true;
  }
  return false;
}

std::string Rows(int n) {
  std::string rows;
  for (int i = 0; i < n; ++i) {
    const bool pos = i % 2 == 0;
    rows +=
        nlohmann::json{{"text", pos ? "a fine happy day" : "a grim sad day"},
                       {"label", pos ? "pos" : "neg"}}
            .dump() +
        "\n";
  }
  return rows;
}

TEST(WebhookTest, ASignedNoticeForEachStateAndTheBestCheckpointWithARetry) {
  TempDir dir;
  Receiver receiver;
  ServerProcess server(dir.path() + "/data", 1,
                       {"--allow-uri-host", "127.0.0.1"});
  std::string why;
  ASSERT_TRUE(server.Start(&why)) << why;
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/train.jsonl", Rows(64)).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/valid.jsonl", Rows(16)).ok());
  // The query string stands for a receiver's own secret: it must not show
  // in the job's events.
  const std::string url = absl::StrCat("http://127.0.0.1:", receiver.port(),
                                       "/hook?key=do-not-show");
  CommandResult submit = server.Cli(
      {"submit", "--task", "text-classification", "--model", "preset:bert-tiny",
       "--train-data", dir.path() + "/train.jsonl", "--validation-data",
       dir.path() + "/valid.jsonl", "--param", "epochs=2", "--param",
       "batch_size=16", "--param", "eval_steps=2", "--webhook", url, "--output",
       "json"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  const std::string id = nlohmann::json::parse(submit.out)["id"];
  CommandResult wait = server.Cli({"wait", id, "--timeout", "300"});
  ASSERT_EQ(wait.exit_code, 0) << wait.out << wait.err;

  // Deliveries follow the job; wait for the last one.
  std::map<std::string, std::string> delivered;  // webhook-id -> type
  std::vector<Received> got;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    got = receiver.got();
    delivered.clear();
    for (const auto& r : got) {
      auto body = nlohmann::json::parse(r.body, nullptr, false);
      if (r.answered == 200 && body.is_object()) {
        delivered[r.id] = body.value("type", "");
      }
    }
    std::set<std::string> types;
    for (const auto& [msg, type] : delivered) types.insert(type);
    if (types.count("job.queued") && types.count("job.succeeded")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const std::string secret = std::string(absl::StripAsciiWhitespace(
      ReadFile(server.data_dir() + "/webhook.secret").value_or("")));
  ASSERT_TRUE(absl::StartsWith(secret, "whsec_"));
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::multiset<std::string> types;
  int64_t best_step = -1;
  for (const auto& r : got) {
    EXPECT_TRUE(SignatureValid(secret, r)) << r.id << " " << r.signature;
    EXPECT_LE(std::abs(now - std::stoll(r.timestamp)), 600) << r.timestamp;
    EXPECT_EQ(r.content_type, "application/json");
    auto body = nlohmann::json::parse(r.body);
    EXPECT_EQ(body["data"]["job"]["id"], id);
    if (r.answered == 200) types.insert(body["type"].get<std::string>());
    if (body["type"] == "checkpoint.best") {
      best_step =
          std::stoll(body["data"]["checkpoint"]["step"].get<std::string>());
    }
  }
  // A signature over other bytes does not pass the receiver's check.
  Received forged = got.front();
  forged.body += " ";
  EXPECT_FALSE(SignatureValid(secret, forged));

  // Each notice arrived once (the retried one is counted once).
  EXPECT_EQ(types.count("job.queued"), 1u);
  EXPECT_EQ(types.count("job.running"), 1u);
  EXPECT_EQ(types.count("job.succeeded"), 1u);
  EXPECT_GE(types.count("checkpoint.best"), 1u);
  EXPECT_EQ(types.count("job.failed") + types.count("job.cancelled"), 0u);
  // The first answer was a 500; the same message came again and was taken.
  ASSERT_GE(got.size(), 2u);
  EXPECT_EQ(got[0].answered, 500);
  int same_id = 0;
  for (const auto& r : got) same_id += r.id == got[0].id;
  EXPECT_EQ(same_id, 2);
  EXPECT_TRUE(delivered.count(got[0].id));
  // The best checkpoint announced is the job's best.
  CommandResult cps = server.Cli({"checkpoints", id, "--output", "json"});
  ASSERT_EQ(cps.exit_code, 0) << cps.err;
  auto listing = nlohmann::json::parse(cps.out);
  EXPECT_EQ(best_step, std::stoll(listing.value("best_step", std::string("0"))))
      << cps.out;

  // The deliveries are recorded as the job's events, without the query
  // (the spec itself keeps the URL as the team submitted it).
  CommandResult watch = server.Cli({"watch", id, "--output", "json"});
  ASSERT_EQ(watch.exit_code, 0) << watch.err;
  CommandResult events;
  for (absl::string_view line : absl::StrSplit(watch.out, '\n')) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("event")) {
      events.out += j["event"].value("message", "") + "\n";
    }
  }
  EXPECT_THAT(events.out,
              HasSubstr(absl::StrCat(
                  "webhook job.queued to http://127.0.0.1:", receiver.port(),
                  "/hook: attempt 1 failed (HTTP 500)")));
  EXPECT_THAT(events.out, HasSubstr("delivered (HTTP 200, attempt 2)"));
  EXPECT_THAT(events.out,
              HasSubstr("webhook job.succeeded to http://127.0.0.1:"));
  EXPECT_EQ(events.out.find("do-not-show"), std::string::npos);
  EXPECT_EQ(server.Stop(), 0);
}

TEST(WebhookTest, UrlsTheServerMayNotCallAreRefusedAtSubmit) {
  TempDir dir;
  ServerProcess server(
      dir.path() + "/data", 0,
      {"--allow-uri-host", "127.0.0.1", "--allow-uri-host", "*.hooks.example"});
  std::string why;
  ASSERT_TRUE(server.Start(&why)) << why;
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/train.jsonl", Rows(8)).ok());
  auto submit = [&](const std::string& url) {
    return server.Cli({"submit", "--task", "text-classification", "--model",
                       "preset:bert-tiny", "--train-data",
                       dir.path() + "/train.jsonl", "--webhook", url});
  };
  struct Case {
    std::string url, words;
  };
  for (const Case& c : std::vector<Case>{
           {"http://169.254.169.254/latest/meta-data",
            "host 169.254.169.254 is not allowed"},
           {"http://localhost:8080/hook", "host localhost is not allowed"},
           {"http://[::1]:8080/hook", "host ::1 is not allowed"},
           {"https://evil.example/hook", "host evil.example is not allowed"},
           {"ftp://127.0.0.1/hook", "must be an http:// or https:// URL"},
           {"http://user:pw@127.0.0.1/hook", "must not carry a user name"}}) {
    CommandResult r = submit(c.url);
    EXPECT_NE(r.exit_code, 0) << c.url;
    EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT")) << c.url;
    EXPECT_THAT(r.err, HasSubstr("spec.webhooks[0]")) << c.url;
    EXPECT_THAT(r.err, HasSubstr(c.words)) << c.url;
  }
  // Allowed: the loopback literal named exactly, a subdomain of a pattern.
  EXPECT_EQ(submit("http://127.0.0.1:9/hook").exit_code, 0);
  EXPECT_EQ(submit("https://a.hooks.example/x").exit_code, 0);
  EXPECT_EQ(server.Stop(), 0);
}

TEST(WebhookTest, WithoutAllowedHostsNoWebhookIsAccepted) {
  TempDir dir;
  ServerProcess server(dir.path() + "/data", 0, {});
  std::string why;
  ASSERT_TRUE(server.Start(&why)) << why;
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/train.jsonl", Rows(8)).ok());
  CommandResult r = server.Cli({"submit", "--task", "text-classification",
                                "--model", "preset:bert-tiny", "--train-data",
                                dir.path() + "/train.jsonl", "--webhook",
                                "https://hooks.example/x"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("allows no outbound URLs"));
  EXPECT_EQ(server.Stop(), 0);
}

}  // namespace
}  // namespace lathe::testing
