// Webhook signatures against the example the Standard Webhooks
// specification publishes (secret, message id, timestamp and body with
// their expected signature), so that receivers using its libraries accept
// Lathe's deliveries.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "server/webhooks/signature.h"
#include "tests/support/temp_dir.h"

namespace lathe::server {
namespace {

TEST(WebhookSignatureTest, MatchesThePublishedExample) {
  auto key = WebhookKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(SignWebhook(*key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                        "{\"test\": 2432232314}"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  // Any change to the signed content changes the signature.
  EXPECT_NE(SignWebhook(*key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331,
                        "{\"test\": 2432232314}"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

TEST(WebhookSignatureTest, SecretsAreCheckedAndCreatedPrivate) {
  EXPECT_FALSE(WebhookKey("whsec_short").ok());
  EXPECT_FALSE(WebhookKey("whsec_not base64!").ok());
  const std::string made = NewWebhookSecret();
  ASSERT_TRUE(WebhookKey(made).ok());
  EXPECT_EQ(WebhookKey(made)->size(), 32u);
  lathe::TempDir dir;
  const std::string path = dir.path() + "/webhook.secret";
  auto first = LoadOrCreateWebhookSecret(path);
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = LoadOrCreateWebhookSecret(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*first, *again);  // kept across restarts
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ::chmod(path.c_str(), 0644);
  auto exposed = LoadOrCreateWebhookSecret(path);
  EXPECT_FALSE(exposed.ok());
  EXPECT_NE(exposed.status().message().find("other users"), std::string::npos);
}

}  // namespace
}  // namespace lathe::server
