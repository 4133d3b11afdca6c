// Transport security, whole system: the real lathe-server with --tls-*
// flags, the real `lathe` CLI and real `lathe-worker` agents on loopback,
// with certificates made by `openssl` for each test. Checks that clients
// verify the server against the CA they are given, that --tls-client-ca
// turns client certificates on and refuses callers without one, that
// certificates replaced on disk are served without a restart, and that the
// flags' mistakes are named before anything is served.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "common/channel.h"
#include "common/files.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_certs.h"

namespace lathe::testing {
namespace {

using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;

// The file's bytes; empty when it cannot be read (not written yet).
std::string Slurp(const std::string& path) {
  return ReadFile(path).value_or("");
}

// A lathe-server with TLS flags, on loopback ports the kernel picks. Start()
// waits for server.json, then for a SERVING health check over a channel
// with `probe`'s credentials. Stopped (SIGTERM) when destroyed.
class TlsServer {
 public:
  TlsServer(std::string data_dir, std::vector<std::string> flags)
      : data_dir_(std::move(data_dir)), flags_(std::move(flags)) {}

  bool Start(const TlsFiles& probe, std::string* why) {
    std::filesystem::create_directories(data_dir_);
    std::vector<std::string> argv = {BinDir() + "/lathe-server",
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--metrics-listen",
                                     "127.0.0.1:0",
                                     "--data-dir",
                                     data_dir_};
    argv.insert(argv.end(), flags_.begin(), flags_.end());
    process_ = std::make_unique<BackgroundProcess>(argv, log());
    nlohmann::json info;
    if (!WaitUntil(
            [&] {
              info = nlohmann::json::parse(Slurp(data_dir_ + "/server.json"),
                                           nullptr, false);
              return !info.is_discarded() && info.contains("grpc");
            },
            seconds(60))) {
      *why = "no server.json; the server said: " + Slurp(log());
      return false;
    }
    grpc_ = info.value("grpc", "");
    metrics_ = info.value("metrics", "");
    auto creds = ClientCredentials(probe);
    if (!creds.ok()) {
      *why = creds.status().ToString();
      return false;
    }
    grpc::ChannelArguments args;
    if (!probe_name_.empty()) args.SetSslTargetNameOverride(probe_name_);
    auto health = grpc::health::v1::Health::NewStub(
        grpc::CreateCustomChannel(grpc_, *creds, args));
    if (!WaitUntil(
            [&] {
              grpc::ClientContext ctx;
              ctx.set_deadline(std::chrono::system_clock::now() + seconds(2));
              grpc::health::v1::HealthCheckRequest req;
              grpc::health::v1::HealthCheckResponse resp;
              return health->Check(&ctx, req, &resp).ok() &&
                     resp.status() ==
                         grpc::health::v1::HealthCheckResponse::SERVING;
            },
            seconds(30), std::chrono::milliseconds(200))) {
      *why = "health check over TLS never said SERVING; the server said: " +
             Slurp(log());
      return false;
    }
    return true;
  }

  // `lathe --server ADDR --token-file ADMIN_TOKEN tls... args...`: as the
  // first admin, whose token the server wrote at its first start.
  CommandResult Cli(const std::vector<std::string>& tls,
                    const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {BinDir() + "/lathe", "--server", grpc_,
                                     "--token-file", admin_token_file()};
    argv.insert(argv.end(), tls.begin(), tls.end());
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  // A new worker-role user and a token for it, in a file (mode 0600) whose
  // path is returned; the CLI reaches the server with `tls`. "" (and a
  // failed test) when a call fails.
  std::string WorkerToken(const std::vector<std::string>& tls) const {
    CommandResult made = Cli(
        tls, {"users", "create", "agent", "--team", "ops", "--role", "worker"});
    if (made.exit_code != 0) {
      ADD_FAILURE() << "users create: " << made.err;
      return "";
    }
    CommandResult r =
        Cli(tls, {"tokens", "create", "--user", "agent", "--output", "json"});
    auto parsed = nlohmann::json::parse(r.out, nullptr, false);
    if (r.exit_code != 0 || parsed.is_discarded() ||
        !parsed.contains("token")) {
      ADD_FAILURE() << "tokens create: " << r.err;
      return "";
    }
    const std::string path = data_dir_ + "/worker.token";
    {
      std::ofstream out(path);
      out << parsed["token"].get<std::string>() << "\n";
    }
    std::filesystem::permissions(path, std::filesystem::perms::owner_read |
                                           std::filesystem::perms::owner_write);
    return path;
  }

  std::string admin_token_file() const { return data_dir_ + "/admin.token"; }

  // Waits until the server counts `n` registered workers.
  bool WaitForWorkers(int n) const {
    const std::string line = "lathe_workers " + std::to_string(n) + "\n";
    return WaitUntil(
        [&] {
          return HttpGet(metrics_, "/metrics").find(line) != std::string::npos;
        },
        seconds(30), std::chrono::milliseconds(100));
  }

  // The name Start()'s probe checks the certificate against, when not the
  // address it dials.
  void SetProbeName(std::string name) { probe_name_ = std::move(name); }
  const std::string& grpc_address() const { return grpc_; }
  std::string log() const { return data_dir_ + "/server.log"; }

 private:
  std::string data_dir_;
  std::vector<std::string> flags_;
  std::unique_ptr<BackgroundProcess> process_;
  std::string probe_name_;
  std::string grpc_;
  std::string metrics_;
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(MakeTestCerts(dir_.path() + "/certs", &certs_, &why)) << why;
  }

  std::vector<std::string> ServeA() const {
    return {"--tls-cert", certs_.a.server_cert, "--tls-key",
            certs_.a.server_key};
  }

  // A remote worker agent dialing `server` with `tls` flags and the worker
  // token in `token_file`.
  std::unique_ptr<BackgroundProcess> Worker(
      const TlsServer& server, const std::string& name,
      const std::string& token_file,
      const std::vector<std::string>& tls) const {
    std::vector<std::string> argv = {BinDir() + "/lathe-worker",
                                     "--server",
                                     server.grpc_address(),
                                     "--name",
                                     name,
                                     "--work-dir",
                                     dir_.path() + "/" + name,
                                     "--token-file",
                                     token_file};
    argv.insert(argv.end(), tls.begin(), tls.end());
    return std::make_unique<BackgroundProcess>(argv, WorkerLog(name));
  }
  std::string WorkerLog(const std::string& name) const {
    return dir_.path() + "/" + name + ".log";
  }

  TempDir dir_;
  TestCerts certs_;
};

TEST_F(TlsTest, TheCliVerifiesTheServerAgainstTheCaItIsGiven) {
  TlsServer server(dir_.path() + "/data", ServeA());
  std::string why;
  ASSERT_TRUE(server.Start({certs_.a.ca, "", ""}, &why)) << why;

  auto right = server.Cli({"--tls-ca", certs_.a.ca}, {"models", "list"});
  EXPECT_EQ(right.exit_code, 0) << right.err;

  // $LATHE_TLS_CA when the flag is absent.
  auto env =
      RunCommand({"/usr/bin/env", "LATHE_TLS_CA=" + certs_.a.ca,
                  BinDir() + "/lathe", "--server", server.grpc_address(),
                  "--token-file", server.admin_token_file(), "models", "list"});
  EXPECT_EQ(env.exit_code, 0) << env.err;

  auto wrong = server.Cli({"--tls-ca", certs_.b.ca}, {"models", "list"});
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_THAT(wrong.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(wrong.err, HasSubstr("handshake failed"));

  auto plain = server.Cli({}, {"models", "list"});
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_THAT(plain.err, HasSubstr("UNAVAILABLE"));

  const std::string missing = dir_.path() + "/no-such-ca.pem";
  auto unreadable = server.Cli({"--tls-ca", missing}, {"models", "list"});
  EXPECT_NE(unreadable.exit_code, 0);
  EXPECT_THAT(unreadable.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(unreadable.err, HasSubstr(missing));
}

TEST_F(TlsTest, ARemoteWorkerRegistersOnlyWhenItTrustsTheServer) {
  TlsServer server(dir_.path() + "/data", ServeA());
  std::string why;
  ASSERT_TRUE(server.Start({certs_.a.ca, "", ""}, &why)) << why;

  const std::string token = server.WorkerToken({"--tls-ca", certs_.a.ca});
  ASSERT_FALSE(token.empty());

  // The same token: the CA alone decides.
  auto wrong = Worker(server, "wrong", token, {"--tls-ca", certs_.b.ca});
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Slurp(WorkerLog("wrong")).find("cannot register with") !=
               std::string::npos;
      },
      seconds(30)))
      << Slurp(WorkerLog("wrong"));
  EXPECT_THAT(Slurp(WorkerLog("wrong")), HasSubstr("handshake failed"));
  EXPECT_TRUE(server.WaitForWorkers(0));

  auto right = Worker(server, "right", token, {"--tls-ca", certs_.a.ca});
  EXPECT_TRUE(server.WaitForWorkers(1)) << Slurp(WorkerLog("right"));
  EXPECT_THAT(Slurp(WorkerLog("right")), HasSubstr("registered with"));
  // The other one is still refused.
  EXPECT_THAT(Slurp(WorkerLog("wrong")), Not(HasSubstr("registered with")));
}

TEST_F(TlsTest, WithAClientCaEveryCallerNeedsACertificateFromIt) {
  std::vector<std::string> flags = ServeA();
  flags.insert(flags.end(), {"--tls-client-ca", certs_.a.ca});
  TlsServer server(dir_.path() + "/data", flags);
  std::string why;
  ASSERT_TRUE(server.Start(
      {certs_.a.ca, certs_.a.client_cert, certs_.a.client_key}, &why))
      << why;

  auto none = server.Cli({"--tls-ca", certs_.a.ca}, {"models", "list"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_THAT(none.err, HasSubstr("UNAVAILABLE"));

  auto stranger =
      server.Cli({"--tls-ca", certs_.a.ca, "--tls-cert", certs_.b.client_cert,
                  "--tls-key", certs_.b.client_key},
                 {"models", "list"});
  EXPECT_NE(stranger.exit_code, 0);
  EXPECT_THAT(stranger.err, HasSubstr("UNAVAILABLE"));

  auto member =
      server.Cli({"--tls-ca", certs_.a.ca, "--tls-cert", certs_.a.client_cert,
                  "--tls-key", certs_.a.client_key},
                 {"models", "list"});
  EXPECT_EQ(member.exit_code, 0) << member.err;

  const std::vector<std::string> member_tls = {
      "--tls-ca",           certs_.a.ca, "--tls-cert",
      certs_.a.client_cert, "--tls-key", certs_.a.client_key};
  const std::string token = server.WorkerToken(member_tls);
  ASSERT_FALSE(token.empty());
  auto worker = Worker(server, "w", token, member_tls);
  EXPECT_TRUE(server.WaitForWorkers(1)) << Slurp(WorkerLog("w"));
}

TEST_F(TlsTest, ACertificateReplacedOnDiskIsServedWithoutARestart) {
  const std::string live = dir_.path() + "/live";
  std::filesystem::create_directories(live);
  std::filesystem::copy_file(certs_.a.server_cert, live + "/server.pem");
  std::filesystem::copy_file(certs_.a.server_key, live + "/server.key");
  TlsServer server(dir_.path() + "/data", {"--tls-cert", live + "/server.pem",
                                           "--tls-key", live + "/server.key"});
  std::string why;
  ASSERT_TRUE(server.Start({certs_.a.ca, "", ""}, &why)) << why;
  auto before = server.Cli({"--tls-ca", certs_.b.ca}, {"models", "list"});
  EXPECT_NE(before.exit_code, 0);

  // Each file written whole beside the live one, then renamed over it.
  std::filesystem::copy_file(certs_.b.server_key, live + "/server.key.new");
  std::filesystem::copy_file(certs_.b.server_cert, live + "/server.pem.new");
  std::filesystem::rename(live + "/server.key.new", live + "/server.key");
  std::filesystem::rename(live + "/server.pem.new", live + "/server.pem");

  // A new CLI process each time: a new connection, a new handshake.
  CommandResult after;
  EXPECT_TRUE(WaitUntil(
      [&] {
        after = server.Cli({"--tls-ca", certs_.b.ca}, {"models", "list"});
        return after.exit_code == 0;
      },
      seconds(15), std::chrono::milliseconds(200)))
      << after.err << "\nserver log:\n"
      << Slurp(server.log());
  auto old = server.Cli({"--tls-ca", certs_.a.ca}, {"models", "list"});
  EXPECT_NE(old.exit_code, 0);
  EXPECT_THAT(old.err, HasSubstr("UNAVAILABLE"));
}

// Local workers trust --tls-local-ca, by default the --tls-cert file itself
// (gRPC takes the certificate there as a trust anchor even when a CA signed
// it).
TEST_F(TlsTest, LocalWorkersDialTheServerOverTls) {
  for (const bool local_ca : {false, true}) {
    SCOPED_TRACE(local_ca ? "--tls-local-ca" : "the certificate as CA");
    const std::string data =
        dir_.path() + (local_ca ? "/data-local-ca" : "/data-default");
    std::vector<std::string> flags = ServeA();
    flags.insert(flags.end(), {"--local-workers", "1"});
    if (local_ca) flags.insert(flags.end(), {"--tls-local-ca", certs_.a.ca});
    TlsServer server(data, flags);
    std::string why;
    ASSERT_TRUE(server.Start({certs_.a.ca, "", ""}, &why)) << why;
    EXPECT_TRUE(server.WaitForWorkers(1)) << Slurp(data + "/logs/worker-0.log");
  }
}

// A certificate that names only the server's public host name: the local
// workers dial a loopback address but check the certificate against that
// name, which the server reads from the certificate.
TEST_F(TlsTest, LocalWorkersCheckTheCertificatesNameNotTheLoopbackAddress) {
  const std::string cert = dir_.path() + "/public.pem";
  const std::string key = dir_.path() + "/public.key";
  ASSERT_EQ(RunCommand({"/usr/bin/env",
                        "openssl",
                        "req",
                        "-x509",
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:prime256v1",
                        "-nodes",
                        "-keyout",
                        key,
                        "-out",
                        cert,
                        "-days",
                        "2",
                        "-subj",
                        "/CN=lathe.test",
                        "-CA",
                        certs_.a.ca,
                        "-CAkey",
                        certs_.a.ca_key,
                        "-addext",
                        "subjectAltName=DNS:lathe.test",
                        "-addext",
                        "extendedKeyUsage=serverAuth"})
                .exit_code,
            0);
  TlsServer server(dir_.path() + "/data",
                   {"--tls-cert", cert, "--tls-key", key, "--tls-local-ca",
                    certs_.a.ca, "--local-workers", "1"});
  server.SetProbeName("lathe.test");
  std::string why;
  ASSERT_TRUE(server.Start({certs_.a.ca, "", ""}, &why)) << why;
  EXPECT_TRUE(server.WaitForWorkers(1))
      << Slurp(dir_.path() + "/data/logs/worker-0.log");
  // Dialed by its loopback address, the certificate does not verify.
  auto cli = server.Cli({"--tls-ca", certs_.a.ca}, {"models", "list"});
  EXPECT_NE(cli.exit_code, 0);
}

// The flags' mistakes, each refused before the server opens its database.
TEST_F(TlsTest, FlagMistakesAreNamedBeforeServing) {
  const std::string data = dir_.path() + "/data";
  auto serve = [&](std::vector<std::string> flags) {
    std::vector<std::string> argv = {BinDir() + "/lathe-server",
                                     "--data-dir",
                                     data,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--metrics-listen",
                                     "127.0.0.1:0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return RunCommand(argv);
  };
  const std::string missing = dir_.path() + "/missing.pem";
  const std::string locked = dir_.path() + "/locked.key";
  ASSERT_EQ(
      RunCommand({"/usr/bin/env", "openssl", "pkey", "-in", certs_.a.server_key,
                  "-aes256", "-passout", "pass:secret", "-out", locked})
          .exit_code,
      0);
  struct Case {
    std::vector<std::string> flags;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--tls-cert", certs_.a.server_cert}, "--tls-cert needs --tls-key"},
      {{"--tls-key", certs_.a.server_key}, "--tls-key needs --tls-cert"},
      {{"--tls-cert", missing, "--tls-key", certs_.a.server_key},
       "--tls-cert " + missing + ": cannot read"},
      {{"--tls-cert", certs_.a.server_cert, "--tls-key", missing},
       "--tls-key " + missing + ": cannot read"},
      {{"--tls-cert", certs_.a.server_cert, "--tls-key", certs_.b.server_key},
       "--tls-key " + certs_.b.server_key + ": is not the private key"},
      {{"--tls-cert", certs_.a.server_cert, "--tls-key", locked},
       "--tls-key " + locked +
           ": holds no PEM private key (or one with a "
           "passphrase"},
      {{"--tls-cert", certs_.a.server_key, "--tls-key", certs_.a.server_key},
       "holds no PEM certificate"},
      {{"--tls-cert", certs_.a.server_cert, "--tls-key", certs_.a.server_key,
        "--tls-client-ca", missing},
       "--tls-client-ca " + missing + ": cannot read"},
      {{"--tls-client-ca", certs_.a.ca}, "--tls-client-ca needs --tls-cert"},
      {{"--tls-cert", certs_.a.server_cert, "--tls-key", certs_.a.server_key,
        "--tls-client-ca", certs_.a.ca, "--local-workers", "1"},
       "--local-workers cannot be combined with --tls-client-ca"},
      {{"--tls-cert", certs_.a.server_cert, "--tls-key", certs_.a.server_key,
        "--tls-local-ca", missing},
       "--tls-local-ca " + missing + ": cannot read"},
  };
  for (const Case& c : cases) {
    auto r = serve(c.flags);
    EXPECT_NE(r.exit_code, 0) << c.says;
    EXPECT_THAT(r.err, HasSubstr(c.says));
  }
  EXPECT_FALSE(PathExists(data + "/lathe.db"));
}

}  // namespace
}  // namespace lathe::testing
