// A checkpoint file download that arrived over HTTP: admitted by the same
// access rule as JobService.DownloadCheckpointFile (it is that call, audited
// and counted as one), resolved by the same core function, and read from the
// artifact store by the HTTP listener without going through gRPC messages.
#ifndef LATHE_SERVER_API_CHECKPOINT_DOWNLOAD_H_
#define LATHE_SERVER_API_CHECKPOINT_DOWNLOAD_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "lathe/v1/lathe.pb.h"
#include "server/api/services.h"

namespace lathe::server {

class CheckpointDownload {
 public:
  // Authenticates `authorization` (an HTTP Authorization header), checks
  // the caller may see the job, and resolves `checkpoint` ("latest", "best"
  // or a step) and `file`. status() says why not when it cannot.
  static std::unique_ptr<CheckpointDownload> Open(
      Gate* gate, std::string_view authorization, std::string peer,
      const std::string& job_id, const std::string& checkpoint,
      const std::string& file);
  ~CheckpointDownload();

  const absl::Status& status() const { return status_; }
  // The blob on disk and its name, size and SHA-256; when status() is OK.
  const std::string& path() const { return path_; }
  const lathe::v1::FileInfo& info() const { return info_; }

  // Records the outcome (metrics, audit) and gives the caller's stream slot
  // back; the destructor does it with CANCELLED if nobody did.
  void Finish(const absl::Status& outcome);

 private:
  struct Scope;
  CheckpointDownload() = default;
  std::unique_ptr<Scope> scope_;
  absl::Status status_;
  std::string path_;
  lathe::v1::FileInfo info_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_API_CHECKPOINT_DOWNLOAD_H_
