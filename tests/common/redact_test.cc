// RedactSecrets: credentials in URLs and Lathe tokens become "***"; the rest
// of the text, and text without secrets, stays as it was.
#include "common/redact.h"

#include <gtest/gtest.h>

namespace lathe {
namespace {

TEST(RedactTest, UrlCredentialsAreHidden) {
  EXPECT_EQ(
      RedactSecrets("spec.train_data: \"https://alice:s3cret@host/d.jsonl\""
                    " is not a dataset reference"),
      "spec.train_data: \"https://***@host/d.jsonl\" is not a dataset "
      "reference");
  EXPECT_EQ(RedactSecrets("s3://KEY:SECRET@bucket/x and ftp://u@h/"),
            "s3://***@bucket/x and ftp://***@h/");
}

TEST(RedactTest, TokenSecretsAreHiddenButTheirIdsStay) {
  const std::string token = "lt_0123456789ab_" + std::string(64, 'f');
  EXPECT_EQ(RedactSecrets("token " + token + " was refused"),
            "token lt_0123456789ab_*** was refused");
}

TEST(RedactTest, TextWithoutSecretsIsUnchanged) {
  for (const std::string s :
       {"", "job job-1 not found", "file:///data/train.jsonl",
        "https://host/path@v2", "lt_short_abc", "mail me at a@b.c",
        "lt_0123456789ab_"}) {
    EXPECT_EQ(RedactSecrets(s), s);
  }
}

}  // namespace
}  // namespace lathe
