// ClientCredentials (common/channel.h): which TLS files make which
// credentials, and the errors that name the file or the missing half of a
// pair before anything is dialed. The handshakes themselves are checked
// with real processes in tests/e2e/tls_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "common/channel.h"
#include "tests/support/temp_dir.h"

namespace lathe {
namespace {

using ::testing::HasSubstr;

std::string Write(const TempDir& dir, const std::string& name,
                  const std::string& text) {
  const std::string path = dir.path() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(TlsCredentialsTest, NoFilesMeansPlainTcp) {
  auto creds = ClientCredentials(TlsFiles{});
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_NE(*creds, nullptr);
}

TEST(TlsCredentialsTest, AKeyWithoutACertificateIsRefused) {
  auto creds = ClientCredentials(TlsFiles{"", "", "/x/client.key"});
  EXPECT_EQ(creds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(creds.status().message(), HasSubstr("/x/client.key"));
}

TEST(TlsCredentialsTest, ACertificateWithoutAKeyIsRefused) {
  auto creds = ClientCredentials(TlsFiles{"", "/x/client.pem", ""});
  EXPECT_EQ(creds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(creds.status().message(), HasSubstr("/x/client.pem"));
}

TEST(TlsCredentialsTest, AnUnreadableOrWrongFileIsNamed) {
  TempDir dir;
  const std::string missing = dir.path() + "/missing.pem";
  auto ca = ClientCredentials(TlsFiles{missing, "", ""});
  EXPECT_EQ(ca.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ca.status().message(), HasSubstr(missing + ": cannot read"));

  const std::string text = Write(dir, "notes.txt", "not a certificate\n");
  auto not_pem = ClientCredentials(TlsFiles{text, "", ""});
  EXPECT_EQ(not_pem.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_pem.status().message(), HasSubstr(text + ": holds no PEM"));

  // The certificate's file in place of the key.
  const std::string cert =
      Write(dir, "client.pem",
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
  auto key = ClientCredentials(TlsFiles{"", cert, cert});
  EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(key.status().message(),
              HasSubstr("TLS client key " + cert + ": holds no PEM"));
}

}  // namespace
}  // namespace lathe
