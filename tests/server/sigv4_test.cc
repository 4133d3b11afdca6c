// Signature Version 4 against AWS's published examples: the S3 GET Object
// example of the S3 API reference (with its Range header), and requests of
// AWS's SigV4 test suite (credential AKIDEXAMPLE, service "service").
#include "server/fetch/sigv4.h"

#include <gtest/gtest.h>

namespace lathe::server {
namespace {

SigV4Request SuiteRequest(const std::string& path, const std::string& query) {
  SigV4Request r;
  r.canonical_path = path;
  r.canonical_query = query;
  r.headers["host"] = "example.amazonaws.com";
  r.headers["x-amz-date"] = "20150830T123600Z";
  r.payload_sha256 = kEmptyPayloadSha256;
  return r;
}

AwsCredentials SuiteCredentials() {
  return {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
}

std::string SignatureOf(const std::string& authorization) {
  return authorization.substr(authorization.rfind('=') + 1);
}

TEST(SigV4Test, S3GetObjectExample) {
  SigV4Request r;
  r.canonical_path = "/test.txt";
  r.headers["host"] = "examplebucket.s3.amazonaws.com";
  r.headers["range"] = "bytes=0-9";
  r.headers["x-amz-content-sha256"] = kEmptyPayloadSha256;
  r.headers["x-amz-date"] = "20130524T000000Z";
  r.payload_sha256 = kEmptyPayloadSha256;
  const AwsCredentials creds{"AKIAIOSFODNN7EXAMPLE",
                             "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
  EXPECT_EQ(StringToSign(r, "us-east-1", "s3"),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n"
            "20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(SigV4Authorization(r, creds, "us-east-1", "s3"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/"
            "us-east-1/s3/aws4_request,SignedHeaders=host;range;"
            "x-amz-content-sha256;x-amz-date,Signature="
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4Test, SuiteGetVanilla) {
  EXPECT_EQ(
      SignatureOf(SigV4Authorization(SuiteRequest("/", ""), SuiteCredentials(),
                                     "us-east-1", "service")),
      "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4Test, SuiteQueryParameter) {
  EXPECT_EQ(SignatureOf(SigV4Authorization(SuiteRequest("/", "Param1=value1"),
                                           SuiteCredentials(), "us-east-1",
                                           "service")),
            "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb");
}

TEST(SigV4Test, SuiteUtf8PathIsPercentEncoded) {
  const std::string path = S3UriEncode("/\xE1\x88\xB4", /*keep_slash=*/true);
  EXPECT_EQ(path, "/%E1%88%B4");
  EXPECT_EQ(
      SignatureOf(SigV4Authorization(SuiteRequest(path, ""), SuiteCredentials(),
                                     "us-east-1", "service")),
      "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85");
}

TEST(SigV4Test, HeaderValuesAreTrimmedAndSpacesFolded) {
  SigV4Request r = SuiteRequest("/", "");
  r.headers["my-header1"] = " value1";
  r.headers["my-header2"] = "\"a   b   c\"";
  EXPECT_EQ(CanonicalRequest(r),
            "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\n"
            "my-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\n"
            "host;my-header1;my-header2;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(SigV4Test, S3KeysKeepSlashesAndEncodeTheRest) {
  EXPECT_EQ(S3UriEncode("data/train set+1.jsonl", true),
            "data/train%20set%2B1.jsonl");
  EXPECT_EQ(S3UriEncode("a/b", false), "a%2Fb");
  EXPECT_EQ(S3UriEncode("A-z_0.9~", true), "A-z_0.9~");
}

TEST(SigV4Test, AmzDateIsUtc) {
  EXPECT_EQ(AmzDate(1369353600), "20130524T000000Z");
}

}  // namespace
}  // namespace lathe::server
