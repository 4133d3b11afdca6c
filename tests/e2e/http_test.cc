// The HTTP listener as curl and wget use it, against the real lathe-server
// with a local worker: a dataset uploaded and a job submitted over the JSON
// API, its events followed as server-sent events until it ends, and its
// checkpoint fetched in ranges and resumed, verified against the SHA-256 the
// server lists. Also: HTTPS with the gRPC listener's certificate, and the
// loopback rule for --http-listen.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

#include "absl/strings/str_split.h"
#include "common/files.h"
#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_certs.h"

namespace lathe::testing {
namespace {

using ::testing::HasSubstr;

// The token in `token_file`, without its line end.
std::string TokenIn(const std::string& token_file) {
  std::string t = ReadFile(token_file).value_or("");
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t;
}

// curl with the token of `token_file`, failing on HTTP errors.
CommandResult Curl(const std::string& token_file,
                   std::vector<std::string> args) {
  std::vector<std::string> argv = {
      "/usr/bin/curl", "-sS", "--fail-with-body", "-H",
      "Authorization: Bearer " + TokenIn(token_file)};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

nlohmann::json Json(const CommandResult& r) {
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
  return j;
}

std::string TrainRows() {
  std::string rows;
  const char* good[] = {"good", "great", "fine", "lovely"};
  const char* bad[] = {"bad", "awful", "poor", "grim"};
  for (int i = 0; i < 160; ++i) {
    const bool pos = i % 2 == 0;
    rows += nlohmann::json{{"text", std::string("this is ") +
                                        (pos ? good : bad)[i % 4] + " stuff"},
                           {"label", pos ? "pos" : "neg"}}
                .dump() +
            "\n";
  }
  return rows;
}

TEST(HttpTest, AJobOverHttpStreamsItsEventsAndItsCheckpointResumesWithCurl) {
  TempDir dir;
  ServerProcess server(dir.path() + "/data", 1,
                       {"--http-listen", "127.0.0.1:0"});
  std::string why;
  ASSERT_TRUE(server.Start(&why)) << why;
  ASSERT_FALSE(server.http_address().empty());
  const std::string base = "http://" + server.http_address();
  const std::string token = server.admin_token_file();

  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/train.jsonl", TrainRows()).ok());
  auto up = Curl(token, {"--data-binary", "@" + dir.path() + "/train.jsonl",
                         base + "/v1/datasets?name=train.jsonl"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  const std::string ref = Json(up)["dataset"]["ref"];

  nlohmann::json spec = {
      {"spec",
       {{"task", "text-classification"},
        {"model", "preset:bert-tiny"},
        {"train_data", ref},
        {"params", {{"epochs", "2"}, {"batch_size", "16"}}}}}};
  auto sub = Curl(token, {"-X", "POST", "-H", "Content-Type: application/json",
                          "-d", spec.dump(), base + "/v1/jobs"});
  ASSERT_EQ(sub.exit_code, 0) << sub.out << sub.err;
  const std::string id = Json(sub)["job"]["id"];
  EXPECT_EQ(Json(sub)["job"]["state"], "QUEUED");

  // The stream ends by itself when the job is final.
  auto events = Curl(
      token, {"-N", "--max-time", "600", base + "/v1/jobs/" + id + "/events"});
  ASSERT_EQ(events.exit_code, 0) << events.err;
  int train_events = 0;
  int64_t last_id = -1;
  std::string last_state;
  const std::vector<std::string> lines = absl::StrSplit(events.out, '\n');
  for (const std::string& line : lines) {
    if (line.substr(0, 4) == "id: ") {
      const int64_t seq = std::stoll(std::string(line.substr(4)));
      EXPECT_GE(seq, last_id) << "event ids go forward";
      last_id = seq;
    } else if (line.substr(0, 6) == "data: ") {
      auto msg = nlohmann::json::parse(std::string_view(line).substr(6),
                                       nullptr, false);
      ASSERT_FALSE(msg.is_discarded()) << line;
      last_state = msg["job"].value("state", "");
      if (msg.contains("event") &&
          msg["event"].value("type", "") == "EVENT_TYPE_TRAIN_METRICS") {
        ++train_events;
        EXPECT_TRUE(msg["event"]["train"].contains("loss"));
      }
    }
  }
  EXPECT_EQ(last_state, "SUCCEEDED") << events.out.substr(0, 2000);
  EXPECT_GE(train_events, 1);
  // Reconnecting after the last event gives the job and nothing more.
  auto tail =
      Curl(token, {"-N", "-H", "Last-Event-ID: " + std::to_string(last_id),
                   base + "/v1/jobs/" + id + "/events"});
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_EQ(std::count(tail.out.begin(), tail.out.end(), '\n'), 3) << tail.out;

  auto cps = Curl(token, {base + "/v1/jobs/" + id + "/checkpoints"});
  ASSERT_EQ(cps.exit_code, 0) << cps.err;
  std::string sha;
  int64_t size = 0;
  const nlohmann::json listing = Json(cps);
  for (const auto& f : listing["checkpoints"].back()["files"]) {
    if (f["name"] == "model.safetensors") {
      sha = f["sha256"];
      size = std::stoll(f["size"].get<std::string>());
    }
  }
  ASSERT_FALSE(sha.empty()) << cps.out;
  ASSERT_GT(size, 200000);
  const std::string url =
      base + "/v1/jobs/" + id + "/checkpoints/best/files/model.safetensors";

  // curl: the first 100,000 bytes, then the rest resumed from where it
  // stopped.
  const std::string part = dir.path() + "/curl.safetensors";
  auto first = Curl(token, {"--range", "0-99999", "-o", part, "-D", "-", url});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_THAT(first.out, HasSubstr("206 Partial Content"));
  EXPECT_THAT(first.out, HasSubstr("ETag: \"" + sha + "\""));
  EXPECT_EQ(FileSize(part).value_or(-1), 100000);
  auto rest = Curl(token, {"-C", "-", "-o", part, url});
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_EQ(Sha256File(part).value_or(""), sha);

  // wget: continuing a partial file the same way.
  const std::string wpart = dir.path() + "/wget.safetensors";
  ASSERT_TRUE(WriteFileAtomic(wpart, ReadFile(part)->substr(0, 12345)).ok());
  auto wget =
      RunCommand({"/usr/bin/wget", "-q", "--continue", "--header",
                  "Authorization: Bearer " + TokenIn(token), "-O", wpart, url});
  ASSERT_EQ(wget.exit_code, 0) << wget.err;
  EXPECT_EQ(Sha256File(wpart).value_or(""), sha);

  // lathe download takes the HTTP listener the server names, and verifies
  // every file as over gRPC.
  auto cli = server.Cli(
      {"download", id, "--checkpoint", "best", "--dest", dir.path() + "/cli"});
  ASSERT_EQ(cli.exit_code, 0) << cli.out << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("over HTTP"));
  EXPECT_EQ(Sha256File(dir.path() + "/cli/model.safetensors").value_or(""),
            sha);

  // A range past the end, and a file the checkpoint does not have.
  auto past = Curl(token, {"-o", "/dev/null", "-w", "%{http_code}", "--range",
                           std::to_string(size + 10) + "-", url});
  EXPECT_EQ(past.out, "416");
  auto missing =
      Curl(token, {base + "/v1/jobs/" + id + "/checkpoints/best/files/nope"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_EQ(Json(missing)["error"]["code"], "NOT_FOUND");
  EXPECT_EQ(server.Stop(), 0);
}

TEST(HttpTest, TheHttpListenerKeepsToLoopbackOrServesHttps) {
  TempDir dir;
  auto refused = RunCommand({BinDir() + "/lathe-server", "--data-dir",
                             dir.path() + "/refused", "--listen", "127.0.0.1:0",
                             "--metrics-listen", "127.0.0.1:0", "--http-listen",
                             "0.0.0.0:0"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err,
              HasSubstr("--http-listen 0.0.0.0:0 is not a loopback"));
  EXPECT_THAT(refused.err, HasSubstr("--tls-cert/--tls-key"));

  TestCerts certs;
  std::string why;
  ASSERT_TRUE(MakeTestCerts(dir.path() + "/certs", &certs, &why)) << why;
  // The gRPC listener's certificate serves HTTPS too.
  const std::string data = dir.path() + "/data";
  ASSERT_TRUE(MakeDirs(data).ok());
  BackgroundProcess server(
      {BinDir() + "/lathe-server", "--data-dir", data, "--listen",
       "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen",
       "0.0.0.0:0", "--tls-cert", certs.a.server_cert, "--tls-key",
       certs.a.server_key},
      dir.path() + "/server.log");
  ASSERT_TRUE(WaitUntil([&] { return PathExists(data + "/server.json"); },
                        std::chrono::seconds(60)))
      << ReadFile(dir.path() + "/server.log").value_or("");
  auto info = nlohmann::json::parse(*ReadFile(data + "/server.json"));
  EXPECT_EQ(info.value("http_url", "").substr(0, 8), "https://");
  const std::string http = info.value("http", "");
  const std::string token = data + "/admin.token";
  const std::string port = http.substr(http.rfind(':') + 1);
  auto ok = Curl(token, {"--cacert", certs.a.ca,
                         "https://127.0.0.1:" + port + "/v1/whoami"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(Json(ok)["user"]["name"], "admin");
  // A client that does not trust the CA, and plain HTTP, get nothing.
  auto untrusted = Curl(token, {"--cacert", certs.b.ca,
                                "https://127.0.0.1:" + port + "/v1/whoami"});
  EXPECT_NE(untrusted.exit_code, 0);
  auto plain = Curl(
      token, {"--max-time", "5", "http://127.0.0.1:" + port + "/v1/whoami"});
  EXPECT_NE(plain.exit_code, 0);
}

}  // namespace
}  // namespace lathe::testing
