// The server's safe default: it serves loopback only, and refuses an address
// beyond loopback (gRPC or metrics) unless --insecure says so, because it has
// no TLS and no authentication. Runs the real lathe-server binary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/files.h"
#include "tests/support/system.h"
#include "tests/support/temp_dir.h"

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
  EXPECT_THAT(grpc.err, HasSubstr("--insecure"));

  auto metrics = Server(
      dir.path(), {"--listen", "127.0.0.1:0", "--metrics-listen", "[::]:0"});
  EXPECT_NE(metrics.exit_code, 0);
  EXPECT_THAT(metrics.err, HasSubstr("--metrics-listen [::]:0"));
  // Refused before anything was written to the data directory.
  EXPECT_FALSE(PathExists(dir.path() + "/lathe.db"));
}

}  // namespace
}  // namespace lathe::testing
