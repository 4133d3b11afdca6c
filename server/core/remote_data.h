// Datasets that live outside the server, named by URI (https://HOST/PATH,
// s3://BUCKET/KEY, either with an optional #sha256=HEX the content must
// match): the server fetches them into its blob store when the job is
// submitted, so that every attempt and every worker trains on the same
// bytes, fetched by digest as uploads are. How they are fetched (HTTP,
// signing, retries, which hosts) lives in server/fetch; the core sees only
// this interface.
#ifndef LATHE_SERVER_CORE_REMOTE_DATA_H_
#define LATHE_SERVER_CORE_REMOTE_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "server/core/artifacts.h"

namespace lathe::server {

class RemoteData {
 public:
  struct Fetched {
    std::string sha256;
    int64_t size = 0;
    // The object's file name (the URI's last path segment).
    std::string name;
  };

  struct ModelFileBlob {
    std::string path;  // relative, clean
    std::string sha256;
    int64_t size = 0;
  };

  virtual ~RemoteData() = default;

  // Streams `uri` into a new blob of `artifacts` of at most `max_bytes`.
  // INVALID_ARGUMENT naming `field` for a malformed URI, a host the policy
  // refuses, an answer that will not change on a retry (4xx), a size over
  // the limit or content that does not match the URI's #sha256=;
  // UNAVAILABLE when the source stayed unreachable through the retries.
  virtual absl::StatusOr<Fetched> Fetch(const std::string& field,
                                        const std::string& uri,
                                        ArtifactStore* artifacts,
                                        int64_t max_bytes) = 0;

  // The files of a Hugging Face model directory, `uri` ending in '/': every
  // object under an s3://BUCKET/PREFIX/ (but pickles and runs/), or the
  // usual files of such a directory under https://HOST/PATH/ (config.json
  // required; the shards a model.safetensors.index.json names). Each file
  // becomes a blob. Errors as Fetch, and INVALID_ARGUMENT past `max_bytes`
  // in all or `max_files` files.
  virtual absl::StatusOr<std::vector<ModelFileBlob>> FetchModel(
      const std::string& field, const std::string& uri,
      ArtifactStore* artifacts, int64_t max_bytes, int max_files) = 0;
};

// True for the URI schemes RemoteData handles, and for http://, which it
// refuses by name (plain HTTP is not fetched).
inline bool IsRemoteUri(const std::string& value) {
  return absl::StartsWith(value, "https://") ||
         absl::StartsWith(value, "s3://") || absl::StartsWith(value, "http://");
}

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_REMOTE_DATA_H_
