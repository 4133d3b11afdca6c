// The dataset catalogue: datasets uploaded to the server or imported from
// a local file, each stored once by SHA-256 and named "dataset:<sha256>".
// It owns the mapping from a job's data field to a stored dataset and from a
// dataset reference to its blob for the workers that fetch it.
//
// Thread safety: no state of its own beyond the store and artifact store,
// which are thread-safe; every method may be called concurrently.
#ifndef LATHE_SERVER_CORE_DATASETS_H_
#define LATHE_SERVER_CORE_DATASETS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/allowed_roots.h"
#include "server/core/artifacts.h"
#include "server/core/metrics.h"
#include "server/core/remote_data.h"
#include "server/core/store.h"

namespace lathe::server {

class DatasetCatalogue {
 public:
  // Every pointer must outlive the catalogue. `max_bytes` bounds an
  // imported file or fetched URI. `remote` may be null: https:// and s3://
  // are then refused.
  DatasetCatalogue(const AllowedRoots* roots, Store* store,
                   ArtifactStore* artifacts, Metrics* metrics,
                   int64_t max_bytes, RemoteData* remote = nullptr)
      : roots_(roots),
        store_(store),
        artifacts_(artifacts),
        metrics_(metrics),
        max_bytes_(max_bytes),
        remote_(remote) {}

  // Records an uploaded blob under a display name.
  absl::StatusOr<lathe::v1::Dataset> Add(const std::string& name,
                                         const std::string& sha256,
                                         int64_t size);
  // What a job's data field names: "dataset:<sha256>" (must exist), an
  // absolute path / file:// URI inside the allowed roots, or an https:// or
  // s3:// URI (remote_data.h); the last two are imported so that every
  // worker fetches the same bytes by digest. Errors are INVALID_ARGUMENT
  // naming `field` (UNAVAILABLE for a source that stayed unreachable).
  absl::StatusOr<lathe::v1::Dataset> Resolve(const std::string& field,
                                             const std::string& value);
  // The blob of a stored dataset, for FetchDataset.
  absl::StatusOr<std::string> Path(const std::string& ref);

 private:
  const AllowedRoots* const roots_;
  Store* const store_;
  ArtifactStore* const artifacts_;
  Metrics* const metrics_;
  const int64_t max_bytes_;
  RemoteData* const remote_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_DATASETS_H_
