// RemoteData over libcurl: https:// datasets, and s3:// datasets from AWS
// or an S3-compatible store (path-style requests to `s3_endpoint`), signed
// with Signature Version 4 (sigv4.h) when credentials are configured.
//
// Each attempt checks the URL's host against the URI policy, resolves it,
// refuses special addresses, and connects to the address it checked.
// Redirects are not followed. A transfer that fails part-way (a dropped
// connection, a stall, a 5xx, 408 or 429) is retried with a doubling wait,
// asking for the rest with a Range header; a source that answers 200 to
// that starts over. Credentials never appear in errors or logs: only
// scheme://host[:port]/path is shown.
//
// Thread safety: Fetch may be called concurrently (one curl handle each).
#ifndef LATHE_SERVER_FETCH_REMOTE_FETCH_H_
#define LATHE_SERVER_FETCH_REMOTE_FETCH_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "common/uri_policy.h"
#include "server/core/remote_data.h"
#include "server/fetch/sigv4.h"

namespace lathe::server {

struct RemoteFetchOptions {
  // The hosts datasets may come from (an S3 endpoint's host included).
  UriPolicy policy;
  // PEM bundle to verify https sources with; empty: the system's.
  std::string ca_file;
  // "http(s)://HOST[:PORT]" of an S3-compatible store; empty: AWS
  // (https://BUCKET.s3.REGION.amazonaws.com).
  std::string s3_endpoint;
  std::string s3_region = "us-east-1";
  // Empty: S3 requests go unsigned (public buckets).
  AwsCredentials credentials;
  int max_attempts = 5;
  absl::Duration first_retry = absl::Milliseconds(500);
  absl::Duration connect_timeout = absl::Seconds(10);
  // An attempt that receives nothing for this long is abandoned (retried).
  absl::Duration stall_timeout = absl::Seconds(30);
  // Progress lines (start, retries, end); may be empty.
  std::function<void(const std::string&)> log;
};

class RemoteFetcher : public RemoteData {
 public:
  // INVALID_ARGUMENT for an endpoint that is not http(s)://HOST[:PORT].
  static absl::StatusOr<std::unique_ptr<RemoteFetcher>> Create(
      RemoteFetchOptions options);
  // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
  static AwsCredentials CredentialsFromEnvironment();
  // AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1.
  static std::string RegionFromEnvironment();

  absl::StatusOr<Fetched> Fetch(const std::string& field,
                                const std::string& uri,
                                ArtifactStore* artifacts,
                                int64_t max_bytes) override;
  absl::StatusOr<std::vector<ModelFileBlob>> FetchModel(
      const std::string& field, const std::string& uri,
      ArtifactStore* artifacts, int64_t max_bytes, int max_files) override;

 private:
  explicit RemoteFetcher(RemoteFetchOptions options, HttpUrl endpoint)
      : options_(std::move(options)), endpoint_(std::move(endpoint)) {}

  const RemoteFetchOptions options_;
  const HttpUrl endpoint_;  // host empty: AWS
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_FETCH_REMOTE_FETCH_H_
