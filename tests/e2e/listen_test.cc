// The server's safe default: it serves loopback only. A gRPC address beyond
// loopback needs TLS (--tls-cert/--tls-key) or --insecure; a metrics address
// beyond loopback (plain HTTP) needs --insecure. Runs the real lathe-server
// binary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/files.h"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_certs.h"

namespace lathe::testing {
namespace {

using ::testing::HasSubstr;

CommandResult Server(const std::string& data, std::vector<std::string> flags) {
  std::vector<std::string> argv = {BinDir() + "/lathe-server", "--data-dir",
                                   data};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return RunCommand(argv);
}

TEST(ListenTest, AnAddressBeyondLoopbackIsRefusedAndTheFlagIsNamed) {
  TempDir dir;
  auto grpc = Server(
      dir.path(), {"--listen", "0.0.0.0:0", "--metrics-listen", "127.0.0.1:0"});
  EXPECT_NE(grpc.exit_code, 0);
  EXPECT_THAT(grpc.err, HasSubstr("--listen 0.0.0.0:0 is not a loopback"));
  EXPECT_THAT(grpc.err, HasSubstr("--tls-cert/--tls-key"));
  EXPECT_THAT(grpc.err, HasSubstr("--insecure"));

  auto metrics = Server(
      dir.path(), {"--listen", "127.0.0.1:0", "--metrics-listen", "[::]:0"});
  EXPECT_NE(metrics.exit_code, 0);
  EXPECT_THAT(metrics.err, HasSubstr("--metrics-listen [::]:0"));
  EXPECT_THAT(metrics.err, HasSubstr("--insecure"));
  // Refused before anything was written to the data directory.
  EXPECT_FALSE(PathExists(dir.path() + "/lathe.db"));
}

TEST(ListenTest, AnAddressBeyondLoopbackIsServedWithTls) {
  TempDir dir;
  TestCerts certs;
  std::string why;
  ASSERT_TRUE(MakeTestCerts(dir.path() + "/certs", &certs, &why)) << why;
  const std::vector<std::string> tls = {"--tls-cert", certs.a.server_cert,
                                        "--tls-key", certs.a.server_key};

  // The metrics endpoint has no TLS: TLS on gRPC does not open it up.
  std::vector<std::string> flags = {"--listen", "127.0.0.1:0",
                                    "--metrics-listen", "0.0.0.0:0"};
  flags.insert(flags.end(), tls.begin(), tls.end());
  auto metrics = Server(dir.path() + "/refused", flags);
  EXPECT_NE(metrics.exit_code, 0);
  EXPECT_THAT(metrics.err, HasSubstr("--metrics-listen 0.0.0.0:0"));
  EXPECT_THAT(metrics.err, HasSubstr("plain HTTP"));
  EXPECT_THAT(metrics.err, HasSubstr("--insecure"));

  const std::string data = dir.path() + "/served";
  std::vector<std::string> argv = {
      BinDir() + "/lathe-server", "--data-dir", data, "--listen", "0.0.0.0:0",
      "--metrics-listen",         "127.0.0.1:0"};
  argv.insert(argv.end(), tls.begin(), tls.end());
  MakeDirs(data).IgnoreError();
  BackgroundProcess server(argv, dir.path() + "/server.log");
  EXPECT_TRUE(WaitUntil([&] { return PathExists(data + "/server.json"); },
                        std::chrono::seconds(60)))
      << [&] {
           std::ifstream in(dir.path() + "/server.log");
           std::stringstream ss;
           ss << in.rdbuf();
           return ss.str();
         }();
}

}  // namespace
}  // namespace lathe::testing
