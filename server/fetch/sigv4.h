// AWS Signature Version 4 for S3 GET requests: the Authorization header
// value for a request, computed from the secret key, the time, the region
// and the request's method, path, query and signed headers. Requests to an
// S3-compatible store (s3:// datasets) are signed with it.
#ifndef LATHE_SERVER_FETCH_SIGV4_H_
#define LATHE_SERVER_FETCH_SIGV4_H_

#include <map>
#include <string>

namespace lathe::server {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  // Temporary credentials only; sent as x-amz-security-token.
  std::string session_token;

  bool empty() const { return access_key_id.empty(); }
};

// The request as it is sent. `canonical_path` and `canonical_query` are
// already in canonical form (S3UriEncode; query parameters sorted, each
// name and value encoded, "a=1&b=2"). `headers` are the headers to sign,
// names in lower case, "host" and "x-amz-date" among them.
struct SigV4Request {
  std::string method = "GET";
  std::string canonical_path = "/";
  std::string canonical_query;
  std::map<std::string, std::string> headers;
  // Hex SHA-256 of the body, or "UNSIGNED-PAYLOAD".
  std::string payload_sha256;
};

// The SHA-256 of an empty body, in hex.
extern const char kEmptyPayloadSha256[];

// RFC 3986 percent-encoding as S3 wants it: unreserved characters kept,
// every other byte as %XX (upper case); '/' kept when `keep_slash`.
std::string S3UriEncode(const std::string& s, bool keep_slash);

// "20130524T000000Z" for a Unix time in seconds.
std::string AmzDate(long long unix_seconds);

// The canonical request and string to sign, exposed for tests.
std::string CanonicalRequest(const SigV4Request& request);
std::string StringToSign(const SigV4Request& request, const std::string& region,
                         const std::string& service);

// "AWS4-HMAC-SHA256 Credential=.../DATE/REGION/SERVICE/aws4_request,
// SignedHeaders=...,Signature=..." for `request`, whose x-amz-date header
// gives the time.
std::string SigV4Authorization(const SigV4Request& request,
                               const AwsCredentials& credentials,
                               const std::string& region,
                               const std::string& service);

}  // namespace lathe::server

#endif  // LATHE_SERVER_FETCH_SIGV4_H_
