// Authentication and authorization, whole system: the real lathe-server on
// loopback, the real `lathe` CLI and a real `lathe-worker`, with bearer
// tokens in files. Checks the first admin token a new data directory gets,
// that teams cannot see each other's jobs, that roles limit what a token may
// do, that revoked, expired, disabled and malformed tokens are refused at
// once, that `lathe login` and LATHE_TOKEN hand the CLI its token, that the
// audit log records refusals, and that no secret (a token or a credential in
// a URL) is ever written to a log, a metric or an answer.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/files.h"
#include "lathe/v1/lathe.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/support/system_fixture.h"
#include "tests/support/temp_dir.h"

namespace lathe::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;

// The file's bytes; empty when it cannot be read (not written yet).
std::string Slurp(const std::string& path) {
  return ReadFile(path).value_or("");
}

// The first line of a token file: the secret it holds.
std::string Secret(const std::string& token_file) {
  std::ifstream in(token_file);
  std::string line;
  std::getline(in, line);
  return line;
}

unsigned Mode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Writes `content` to `path` with `mode`.
void WriteFile(const std::string& path, const std::string& content,
               unsigned mode = 0600) {
  {
    std::ofstream out(path, std::ios::trunc);
    out << content;
  }
  std::filesystem::permissions(path, static_cast<std::filesystem::perms>(mode));
}

// How often `needle` occurs in `hay`.
int Count(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos;
       at = hay.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// Expects that the call failed with `code` named on stderr.
::testing::AssertionResult Refused(const CommandResult& r,
                                   const std::string& code) {
  if (r.exit_code != 0 && r.err.find(code) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected a refusal with " << code << "; exit " << r.exit_code
         << ", stdout: " << r.out << ", stderr: " << r.err;
}

::testing::AssertionResult Succeeded(const CommandResult& r) {
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "exit " << r.exit_code << ", stdout: " << r.out
         << ", stderr: " << r.err;
}

// A token in `lt_<12 hex>_<64 hex>` form.
const std::regex kTokenForm("lt_[0-9a-f]{12}_[0-9a-f]{64}");

// The 64-hex secret part of a token (what must never be shown).
std::string SecretPart(const std::string& token) {
  return token.size() > 16 ? token.substr(16) : token;
}

// A small text-classification job that a worker finishes in seconds.
SubmitArgs SmallJob(const std::string& train) {
  return {"text-classification",
          "preset:bert-tiny",
          train,
          "",
          {"epochs=1", "batch_size=16", "max_seq_length=16", "warmup_ratio=0",
           "logging_steps=1", "eval_steps=0"}};
}

// Shares one server without workers (jobs stay QUEUED) between the tests
// of teams, roles and tokens; each test makes the users it needs.
class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    server_ = new ServerProcess(dir_->path() + "/server", 0);
    std::string why;
    if (!server_->Start(&why)) start_error_ = new std::string(why);
    WriteSentimentData(dir_->path() + "/train.jsonl", 32, 0);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete dir_;
    dir_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(start_error_ == nullptr)
        << "lathe-server did not start: " << *start_error_;
    // The CLI must see only the token each test hands it.
    ::unsetenv("LATHE_TOKEN");
  }

  static std::string Path(const std::string& name) {
    return dir_->path() + "/" + name;
  }

  // Submits the small job as the token in `token_file`; its id.
  static std::string Submit(const std::string& token_file) {
    CommandResult r = server_->CliAs(
        token_file, SubmitCommand(SmallJob(Path("train.jsonl"))));
    EXPECT_TRUE(Succeeded(r));
    json job = ParseJson(r);
    return job.is_object() ? job.value("id", "") : "";
  }

  // `lathe` with no --token-file, no LATHE_TOKEN and a config directory of
  // its own (`config`), so that only what a test puts there is found.
  static CommandResult CliWithConfig(const std::string& config,
                                     const std::vector<std::string>& args) {
    std::vector<std::string> argv = {
        "/usr/bin/env",   "-u",
        "LATHE_TOKEN",    "XDG_CONFIG_HOME=" + config,
        "HOME=" + config, BinDir() + "/lathe",
        "--server",       server_->grpc_address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  static TempDir* dir_;
  static ServerProcess* server_;
  static std::string* start_error_;
};

TempDir* AuthTest::dir_ = nullptr;
ServerProcess* AuthTest::server_ = nullptr;
std::string* AuthTest::start_error_ = nullptr;

TEST(AuthFirstStartTest, WritesTheAdminTokenOnceWithoutLoggingIt) {
  TempDir dir;
  const std::string data = dir.path() + "/server";
  const std::string log = data + "/logs/server.log";
  std::string token;
  {
    ServerProcess server(data, 0);
    ASSERT_TRUE(Started(server));
    EXPECT_EQ(Mode(data), 0700u);
    ASSERT_TRUE(std::filesystem::exists(server.admin_token_file()));
    EXPECT_EQ(Mode(server.admin_token_file()), 0600u);
    token = Secret(server.admin_token_file());
    EXPECT_TRUE(std::regex_match(token, kTokenForm)) << token;
    const std::string said = Slurp(log);
    EXPECT_THAT(said, HasSubstr(server.admin_token_file()));
    EXPECT_THAT(said, HasSubstr(token.substr(0, 15)));  // lt_<12 hex>
    EXPECT_THAT(said, Not(HasSubstr(SecretPart(token))));
    // The token works.
    CommandResult who = server.Cli({"whoami"});
    EXPECT_TRUE(Succeeded(who));
    EXPECT_THAT(who.out, HasSubstr("admin"));
    EXPECT_EQ(server.Stop(), 0);
  }
  const auto written = std::filesystem::last_write_time(data + "/admin.token");
  const int announced = Count(Slurp(log), "admin.token");
  EXPECT_EQ(announced, 1);
  {
    ServerProcess again(data, 0);
    ASSERT_TRUE(Started(again));
    EXPECT_EQ(Secret(again.admin_token_file()), token);
    EXPECT_EQ(std::filesystem::last_write_time(data + "/admin.token"), written);
    EXPECT_TRUE(Succeeded(again.Cli({"whoami"})));
    EXPECT_EQ(again.Stop(), 0);
  }
  const std::string said = Slurp(log);
  EXPECT_EQ(Count(said, "admin.token"), announced) << said;
  EXPECT_EQ(Count(said, "new data directory"), 1) << said;
  EXPECT_THAT(said, Not(HasSubstr(SecretPart(token))));
}

TEST_F(AuthTest, TeamsDoNotSeeEachOthersJobs) {
  // One token made through the CLI itself, the others with NewToken.
  ASSERT_TRUE(
      Succeeded(server_->Cli({"users", "create", "alice", "--team", "red",
                              "--role", "member", "--output", "json"})));
  CommandResult made = server_->Cli({"tokens", "create", "--user", "alice",
                                     "--name", "laptop", "--output", "json"});
  ASSERT_TRUE(Succeeded(made));
  const json minted = ParseJson(made);
  ASSERT_TRUE(minted.contains("token"));
  const std::string alice_secret = minted["token"].get<std::string>();
  EXPECT_TRUE(std::regex_match(alice_secret, kTokenForm)) << alice_secret;
  EXPECT_EQ(minted["info"].value("user", ""), "alice");
  EXPECT_EQ(minted["info"].value("id", ""), alice_secret.substr(0, 15));
  const std::string alice = Path("alice.token");
  WriteFile(alice, alice_secret + "\n");
  const std::string bob = server_->NewToken("bob", "blue", "member");
  const std::string vic = server_->NewToken("vic", "red", "viewer");
  ASSERT_FALSE(bob.empty());
  ASSERT_FALSE(vic.empty());

  const std::string bobs = Submit(bob);
  ASSERT_FALSE(bobs.empty());
  const std::string alices = Submit(alice);
  ASSERT_FALSE(alices.empty());

  // To alice, bob's job does not exist.
  EXPECT_TRUE(Refused(server_->CliAs(alice, {"get", bobs}), "NOT_FOUND"));
  EXPECT_TRUE(Refused(server_->CliAs(alice, {"cancel", bobs}), "NOT_FOUND"));
  EXPECT_TRUE(Refused(server_->CliAs(alice, {"watch", bobs}), "NOT_FOUND"));
  EXPECT_TRUE(
      Refused(server_->CliAs(alice, {"checkpoints", bobs}), "NOT_FOUND"));
  EXPECT_TRUE(Refused(
      server_->CliAs(alice, {"download", bobs, "--dest", Path("stolen")}),
      "NOT_FOUND"));
  EXPECT_TRUE(!std::filesystem::exists(Path("stolen")) ||
              std::filesystem::is_empty(Path("stolen")));
  SubmitArgs on_bobs = SmallJob(Path("train.jsonl"));
  on_bobs.model = "job:" + bobs;
  EXPECT_TRUE(
      Refused(server_->CliAs(alice, SubmitCommand(on_bobs)), "NOT_FOUND"));
  CommandResult listed = server_->CliAs(alice, {"list", "--output", "json"});
  ASSERT_TRUE(Succeeded(listed));
  EXPECT_THAT(listed.out, HasSubstr(alices));
  EXPECT_THAT(listed.out, Not(HasSubstr(bobs)));
  // Nor does alice's job to bob.
  EXPECT_TRUE(Refused(server_->CliAs(bob, {"get", alices}), "NOT_FOUND"));
  EXPECT_THAT(server_->CliAs(bob, {"list", "--output", "json"}).out,
              Not(HasSubstr(alices)));

  // The admin sees both.
  EXPECT_TRUE(Succeeded(server_->Cli({"get", bobs})));
  CommandResult all = server_->Cli({"list", "--output", "json"});
  ASSERT_TRUE(Succeeded(all));
  EXPECT_THAT(all.out, HasSubstr(bobs));
  EXPECT_THAT(all.out, HasSubstr(alices));

  // The owner is the token's user, and a member cannot claim another's name.
  const json got =
      ParseJson(server_->CliAs(alice, {"get", alices, "--output", "json"}));
  ASSERT_TRUE(got.is_object());
  EXPECT_EQ(got["spec"].value("owner", ""), "alice") << got.dump();
  SubmitArgs as_bob = SmallJob(Path("train.jsonl"));
  as_bob.flags = {"--owner", "bob"};
  EXPECT_TRUE(Refused(server_->CliAs(alice, SubmitCommand(as_bob)),
                      "PERMISSION_DENIED"));

  // A viewer of alice's team reads her job but may not cancel it; she may.
  CommandResult seen = server_->CliAs(vic, {"get", alices, "--output", "json"});
  EXPECT_TRUE(Succeeded(seen));
  EXPECT_EQ(ParseJson(seen).value("id", ""), alices);
  EXPECT_TRUE(
      Refused(server_->CliAs(vic, {"cancel", alices}), "PERMISSION_DENIED"));
  EXPECT_TRUE(
      Refused(server_->CliAs(vic, SubmitCommand(SmallJob(Path("train.jsonl")))),
              "PERMISSION_DENIED"));
  EXPECT_TRUE(Succeeded(server_->CliAs(alice, {"cancel", alices})));
  EXPECT_EQ(ParseJson(server_->Cli({"get", alices, "--output", "json"}))
                .value("state", ""),
            "CANCELLED");
  // bob's job is untouched by all this.
  EXPECT_EQ(ParseJson(server_->Cli({"get", bobs, "--output", "json"}))
                .value("state", ""),
            "QUEUED");
}

TEST_F(AuthTest, RevokedExpiredDisabledAndMalformedTokensAreRefused) {
  // No token at all: the message says how to give one.
  const std::string empty = Path("no-config");
  std::filesystem::create_directories(empty);
  CommandResult none = CliWithConfig(empty, {"list"});
  EXPECT_TRUE(Refused(none, "UNAUTHENTICATED"));
  EXPECT_THAT(none.err, HasSubstr("--token-file"));
  EXPECT_THAT(none.err, HasSubstr("LATHE_TOKEN"));
  EXPECT_THAT(none.err, HasSubstr("lathe login"));
  // Something that is not a token.
  WriteFile(Path("nope.token"), "nope\n");
  EXPECT_TRUE(
      Refused(server_->CliAs(Path("nope.token"), {"list"}), "UNAUTHENTICATED"));
  // A token file others may read is refused before it is sent.
  const std::string carol = server_->NewToken("carol", "green", "member");
  ASSERT_FALSE(carol.empty());
  WriteFile(Path("carol-shared.token"), Secret(carol) + "\n", 0644);
  EXPECT_TRUE(Refused(server_->CliAs(Path("carol-shared.token"), {"whoami"}),
                      "INVALID_ARGUMENT"));

  // Revoked: refused on the very next call.
  CommandResult who = server_->CliAs(carol, {"whoami"});
  ASSERT_TRUE(Succeeded(who));
  EXPECT_THAT(who.out, HasSubstr("carol"));
  const std::string carol_id = Secret(carol).substr(0, 15);
  ASSERT_TRUE(Succeeded(server_->Cli({"tokens", "revoke", carol_id})));
  EXPECT_TRUE(Refused(server_->CliAs(carol, {"whoami"}), "UNAUTHENTICATED"));
  EXPECT_TRUE(Refused(server_->CliAs(carol, {"list"}), "UNAUTHENTICATED"));

  // Expiring: valid at first, refused once its 2 s are over.
  CommandResult brief = server_->Cli({"tokens", "create", "--user", "carol",
                                      "--expires", "2s", "--output", "json"});
  ASSERT_TRUE(Succeeded(brief));
  const json brief_json = ParseJson(brief);
  ASSERT_TRUE(brief_json.contains("token"));
  EXPECT_NE(brief_json["info"].value("expire_time_ms", "0"), "0");
  WriteFile(Path("brief.token"), brief_json["token"].get<std::string>());
  const auto minted = std::chrono::steady_clock::now();
  EXPECT_TRUE(Succeeded(server_->CliAs(Path("brief.token"), {"whoami"})));
  CommandResult late;
  EXPECT_TRUE(WaitUntil(
      [&] {
        late = server_->CliAs(Path("brief.token"), {"whoami"});
        return late.exit_code != 0;
      },
      seconds(15), milliseconds(250)));
  EXPECT_TRUE(Refused(late, "UNAUTHENTICATED"));
  EXPECT_GE(std::chrono::steady_clock::now() - minted, milliseconds(1500));

  // A disabled user's tokens are refused.
  const std::string dave = server_->NewToken("dave", "green", "member");
  ASSERT_FALSE(dave.empty());
  ASSERT_TRUE(Succeeded(server_->CliAs(dave, {"whoami"})));
  ASSERT_TRUE(Succeeded(server_->Cli({"users", "disable", "dave"})));
  CommandResult disabled = server_->CliAs(dave, {"whoami"});
  EXPECT_TRUE(Refused(disabled, "UNAUTHENTICATED"));

  // A member cannot make users.
  const std::string erin = server_->NewToken("erin", "green", "member");
  ASSERT_FALSE(erin.empty());
  EXPECT_TRUE(Refused(server_->CliAs(erin, {"users", "create", "eve", "--team",
                                            "admin", "--role", "admin"}),
                      "PERMISSION_DENIED"));
  EXPECT_THAT(server_->Cli({"users", "list", "--output", "json"}).out,
              Not(HasSubstr("\"eve\"")));

  // tokens list shows ids, never secrets; last use appears once used.
  const std::string fresh = server_->NewToken("erin", "green", "member");
  const std::string fresh_id = Secret(fresh).substr(0, 15);
  auto last_used = [&](const std::string& id) {
    CommandResult r = server_->Cli({"tokens", "list", "--output", "json"});
    const json j = ParseJson(r);
    if (!j.is_object()) return std::string("?");
    for (const json& t : j.value("tokens", json::array())) {
      if (t.value("id", "") == id) return t.value("last_used_time_ms", "0");
    }
    return std::string("missing");
  };
  EXPECT_EQ(last_used(fresh_id), "0");
  ASSERT_TRUE(Succeeded(server_->CliAs(fresh, {"whoami"})));
  EXPECT_TRUE(WaitUntil([&] { return last_used(fresh_id) != "0"; }, seconds(5),
                        milliseconds(200)))
      << last_used(fresh_id);
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"tokens", "list"},
           {"tokens", "list", "--output", "json"},
           {"tokens", "list", "--user", "erin", "--output", "json"}}) {
    CommandResult r = server_->Cli(args);
    ASSERT_TRUE(Succeeded(r));
    EXPECT_THAT(r.out, HasSubstr(fresh_id));
    if (args.size() < 4 || args[2] != "--user") {
      EXPECT_THAT(r.out, HasSubstr(carol_id));
    } else {
      EXPECT_THAT(r.out, Not(HasSubstr(carol_id)));
    }
    EXPECT_FALSE(std::regex_search(r.out, std::regex("[0-9a-f]{64}"))) << r.out;
    for (const std::string& f :
         {fresh, erin, carol, dave, server_->admin_token_file()}) {
      EXPECT_THAT(r.out, Not(HasSubstr(SecretPart(Secret(f)))));
    }
  }
  // A member lists its own tokens only.
  CommandResult own = server_->CliAs(fresh, {"tokens", "list"});
  ASSERT_TRUE(Succeeded(own));
  EXPECT_THAT(own.out, HasSubstr(fresh_id));
  EXPECT_THAT(own.out, Not(HasSubstr(carol_id)));
}

TEST_F(AuthTest, LoginKeepsTheTokenAndLatheTokenIsUsed) {
  const std::string frank = server_->NewToken("frank", "red", "member");
  ASSERT_FALSE(frank.empty());
  const std::string config = Path("login-config");
  std::filesystem::create_directories(config);
  const std::string kept = config + "/lathe/token";

  // A missing file, or a token the server refuses, is not kept.
  EXPECT_NE(CliWithConfig(config, {"login", "--token-file", Path("absent")})
                .exit_code,
            0);
  WriteFile(Path("nope-login.token"), "nope\n");
  EXPECT_TRUE(Refused(CliWithConfig(config, {"login", "--token-file",
                                             Path("nope-login.token")}),
                      "UNAUTHENTICATED"));
  EXPECT_FALSE(std::filesystem::exists(kept));

  // login --token-file keeps it; later commands use it on their own.
  ASSERT_TRUE(
      Succeeded(CliWithConfig(config, {"login", "--token-file", frank})));
  ASSERT_TRUE(std::filesystem::exists(kept));
  EXPECT_EQ(Mode(kept), 0600u);
  EXPECT_EQ(Secret(kept), Secret(frank));
  CommandResult who = CliWithConfig(config, {"whoami"});
  ASSERT_TRUE(Succeeded(who));
  EXPECT_THAT(who.out, HasSubstr("frank"));
  EXPECT_THAT(who.out, HasSubstr("red"));

  // login from standard input, into another config directory.
  const std::string piped = Path("login-stdin");
  std::filesystem::create_directories(piped);
  CommandResult in =
      RunCommand({"/usr/bin/env", "-u", "LATHE_TOKEN",
                  "XDG_CONFIG_HOME=" + piped, "HOME=" + piped, "/bin/sh", "-c",
                  "exec \"$0\" --server \"$1\" login < \"$2\"",
                  BinDir() + "/lathe", server_->grpc_address(), frank});
  ASSERT_TRUE(Succeeded(in));
  EXPECT_EQ(Mode(piped + "/lathe/token"), 0600u);
  EXPECT_EQ(Secret(piped + "/lathe/token"), Secret(frank));
  EXPECT_THAT(CliWithConfig(piped, {"whoami"}).out, HasSubstr("frank"));

  // LATHE_TOKEN, without a file; --token-file wins over it.
  ::setenv("LATHE_TOKEN", Secret(frank).c_str(), 1);
  CommandResult env =
      RunCommand({"/usr/bin/env", "XDG_CONFIG_HOME=" + Path("no-config"),
                  "HOME=" + Path("no-config"), BinDir() + "/lathe", "--server",
                  server_->grpc_address(), "whoami"});
  CommandResult both = server_->Cli({"whoami"});
  ::unsetenv("LATHE_TOKEN");
  ASSERT_TRUE(Succeeded(env));
  EXPECT_THAT(env.out, HasSubstr("frank"));
  ASSERT_TRUE(Succeeded(both));
  EXPECT_THAT(both.out, HasSubstr("admin"));
  EXPECT_THAT(both.out, Not(HasSubstr("frank")));
}

TEST_F(AuthTest, WorkerTokensAndClientTokensDoNotMix) {
  const std::string worker = server_->NewToken("agent", "ops", "worker");
  const std::string member = server_->NewToken("gus", "red", "member");
  ASSERT_FALSE(worker.empty());
  ASSERT_FALSE(member.empty());
  EXPECT_TRUE(Refused(server_->CliAs(worker, {"list"}), "PERMISSION_DENIED"));
  EXPECT_TRUE(Refused(server_->CliAs(worker, {"get", "no-such-job"}),
                      "PERMISSION_DENIED"));
  EXPECT_TRUE(Refused(
      server_->CliAs(worker, SubmitCommand(SmallJob(Path("train.jsonl")))),
      "PERMISSION_DENIED"));

  // An agent run with a member's or the admin's token never registers: it
  // says why, with the code, and exits non-zero instead of retrying a
  // credential that stays refused.
  for (const auto& [name, token] :
       std::vector<std::pair<std::string, std::string>>{
           {"member-agent", member},
           {"admin-agent", server_->admin_token_file()}}) {
    CommandResult r = testing::RunCommand(
        {"/usr/bin/timeout", "60", BinDir() + "/lathe-worker", "--server",
         server_->grpc_address(), "--name", name, "--work-dir", Path(name),
         "--token-file", token});
    EXPECT_EQ(r.exit_code, 1) << name << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("cannot register")) << name;
    EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED")) << name;
    EXPECT_THAT(r.err, HasSubstr("may not call")) << name;
  }
  EXPECT_THAT(HttpGet(server_->metrics_address(), "/metrics"),
              HasSubstr("\nlathe_workers 0\n"));
  // The audit log names the refusals.
  const json audit =
      ParseJson(server_->Cli({"audit", "--limit", "200", "--output", "json"}));
  int refused_registrations = 0;
  for (const json& e : audit.value("entries", json::array())) {
    if (e.value("method", "") == "WorkerService.RegisterWorker" &&
        e.value("code", "") == "PERMISSION_DENIED" &&
        (e.value("user", "") == "gus" || e.value("user", "") == "admin")) {
      ++refused_registrations;
    }
  }
  EXPECT_GE(refused_registrations, 2) << audit.dump();
}

TEST_F(AuthTest, AuditShowsSubmitsAndRefusalsToAdminsOnly) {
  const std::string hal = server_->NewToken("hal", "red", "member");
  ASSERT_FALSE(hal.empty());
  const std::string job = Submit(hal);
  ASSERT_FALSE(job.empty());
  EXPECT_TRUE(
      Refused(server_->CliAs(hal, {"users", "list"}), "PERMISSION_DENIED"));
  WriteFile(Path("junk.token"), "lt_000000000000_" + std::string(64, '0'));
  EXPECT_TRUE(
      Refused(server_->CliAs(Path("junk.token"), {"list"}), "UNAUTHENTICATED"));

  CommandResult r =
      server_->Cli({"audit", "--limit", "100", "--output", "json"});
  ASSERT_TRUE(Succeeded(r));
  const json audit = ParseJson(r);
  bool submitted = false, denied = false, unauthenticated = false;
  for (const json& e : audit.value("entries", json::array())) {
    const std::string method = e.value("method", "");
    const std::string code = e.value("code", "");
    if (method == "JobService.SubmitJob" && e.value("user", "") == "hal" &&
        code == "OK" && e.value("resource", "") == job) {
      submitted = true;
    }
    if (method == "AdminService.ListUsers" && e.value("user", "") == "hal" &&
        code == "PERMISSION_DENIED") {
      denied = true;
    }
    if (method == "JobService.ListJobs" && code == "UNAUTHENTICATED") {
      unauthenticated = true;
    }
  }
  EXPECT_TRUE(submitted) << r.out;
  EXPECT_TRUE(denied) << r.out;
  EXPECT_TRUE(unauthenticated) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr(std::string(64, '0'))));
  EXPECT_THAT(r.out, Not(HasSubstr(SecretPart(Secret(hal)))));

  EXPECT_TRUE(Refused(server_->CliAs(hal, {"audit", "--output", "json"}),
                      "PERMISSION_DENIED"));
}

// Every regular file under `dir`, recursively, except those `skip` says.
std::vector<std::string> FilesUnder(
    const std::string& dir,
    const std::function<bool(const std::filesystem::path&)>& skip) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && !skip(e.path())) files.push_back(e.path());
  }
  return files;
}

TEST(AuthSecretsTest, NoSecretIsEverWrittenOrShown) {
  TempDir dir;
  const std::string data = dir.path() + "/server";
  ServerProcess server(data, 1);
  ASSERT_TRUE(Started(server));
  const std::string train = dir.path() + "/train.jsonl";
  WriteSentimentData(train, 32, 0);
  const std::string member = server.NewToken("ivy", "red", "member");
  const std::string revoked = server.NewToken("ivy", "red", "member");
  ASSERT_FALSE(member.empty());
  ASSERT_FALSE(revoked.empty());
  const std::string kCred = "s3cr3t-cred-xyz";
  const std::string url = "https://alice:" + kCred + "@example.com/d.jsonl";
  const std::vector<std::string> secrets = {
      SecretPart(Secret(server.admin_token_file())), SecretPart(Secret(member)),
      SecretPart(Secret(revoked)), kCred};

  // A credential in a URL is refused without being repeated.
  {
    auto jobs = lathe::v1::JobService::NewStub(server.AdminChannel());
    lathe::v1::SubmitJobRequest req;
    req.mutable_spec()->set_task("text-classification");
    req.mutable_spec()->set_model("preset:bert-tiny");
    req.mutable_spec()->set_train_data(url);
    lathe::v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = jobs->SubmitJob(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_THAT(s.error_message(), Not(HasSubstr(kCred)));
    // The server fetches https:// data, and refuses a URL with user info
    // by saying so, without quoting it.
    EXPECT_THAT(s.error_message(),
                HasSubstr("spec.train_data: URL must not carry a user name or "
                          "password"));
  }
  CommandResult by_cli = server.CliAs(
      member, {"submit", "--task", "text-classification", "--model",
               "preset:bert-tiny", "--train-data", url});
  EXPECT_TRUE(Refused(by_cli, "INVALID_ARGUMENT"));
  EXPECT_THAT(by_cli.out + by_cli.err, Not(HasSubstr(kCred)));

  // A revoked token is refused without being repeated.
  ASSERT_TRUE(Succeeded(
      server.Cli({"tokens", "revoke", Secret(revoked).substr(0, 15)})));
  {
    auto jobs = lathe::v1::JobService::NewStub(server.ChannelAs(revoked));
    lathe::v1::ListJobsRequest req;
    lathe::v1::ListJobsResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = jobs->ListJobs(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    for (const std::string& secret : secrets) {
      EXPECT_THAT(s.error_message(), Not(HasSubstr(secret)));
    }
  }
  CommandResult refused = server.CliAs(revoked, {"list"});
  EXPECT_TRUE(Refused(refused, "UNAUTHENTICATED"));

  // One real job, whose log lines travel as events.
  CommandResult submitted =
      server.CliAs(member, SubmitCommand(SmallJob(train)));
  ASSERT_TRUE(Succeeded(submitted));
  const std::string id = ParseJson(submitted).value("id", "");
  ASSERT_FALSE(id.empty());
  CommandResult watch = server.CliAs(member, {"watch", id});
  EXPECT_TRUE(Succeeded(watch));
  EXPECT_FALSE(watch.out.empty());

  std::vector<std::pair<std::string, std::string>> shown = {
      {"refused CLI submit", by_cli.out + by_cli.err},
      {"refused CLI list", refused.out + refused.err},
      {"watch", watch.out + watch.err},
      {"metrics", HttpGet(server.metrics_address(), "/metrics")},
      {"audit",
       server.Cli({"audit", "--limit", "500", "--output", "json"}).out},
      {"list", server.Cli({"list", "--output", "json"}).out},
      {"get", server.Cli({"get", id, "--output", "json"}).out},
      {"member get", server.CliAs(member, {"get", id, "--output", "json"}).out},
      {"events", server.Cli({"watch", id, "--output", "json"}).out},
  };
  EXPECT_THAT(shown[2].second, HasSubstr("SUCCEEDED"));
  EXPECT_THAT(shown[4].second, HasSubstr("ivy"));
  EXPECT_THAT(shown[6].second, HasSubstr(id));
  // Everything the server, its local worker and the training child wrote,
  // logs and database included, but not the token files themselves.
  const std::vector<std::string> files = FilesUnder(data, [&](const auto& p) {
    return p == data + "/admin.token" || p.extension() == ".token";
  });
  int logs = 0;
  for (const std::string& f : files) {
    if (f.find("/logs/") != std::string::npos) ++logs;
    shown.emplace_back(f, Slurp(f));
  }
  EXPECT_GE(logs, 2) << "expected the server's and a worker's log";
  for (const auto& [where, text] : shown) {
    for (const std::string& secret : secrets) {
      EXPECT_THAT(text, Not(HasSubstr(secret))) << "in " << where;
    }
  }
  EXPECT_EQ(server.Stop(), 0);
}

}  // namespace
}  // namespace lathe::testing
