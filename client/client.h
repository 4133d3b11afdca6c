// Client library for Lathe: the calls the CLI and C++ pipelines make, with
// statuses in absl form and file transfers that verify SHA-256.
#ifndef LATHE_CLIENT_CLIENT_H_
#define LATHE_CLIENT_CLIENT_H_

#include <grpcpp/channel.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/channel.h"
#include "lathe/v1/lathe.grpc.pb.h"

namespace lathe::client {

// True for the data arguments the server resolves itself: dataset:<sha256>,
// file://, https:// and s3:// URIs (and http://, which it refuses by name).
// Anything else names a local file or folder, which the client uploads.
bool IsServerDataRef(const std::string& arg);

absl::Status FromGrpc(const ::grpc::Status& s);

class Client {
 public:
  // `options` are kept for checkpoint downloads over HTTP.
  Client(std::string target, std::shared_ptr<grpc::Channel> channel,
         ChannelOptions options = ChannelOptions());

  // `target` is HOST:PORT; `options` carry the token and the TLS files.
  // INVALID_ARGUMENT naming a TLS file that cannot be read.
  static absl::StatusOr<std::unique_ptr<Client>> Create(
      const std::string& target, const ChannelOptions& options);

  // HOST:PORT as given, for messages.
  const std::string& target() const { return target_; }

  // Connects to the server, waiting up to `timeout_ms`: OK, or UNAVAILABLE
  // naming the address as soon as a connection attempt fails (as a call
  // would) or the time is up. Lets a command that uploads first say that
  // the server is down before it starts.
  absl::Status CheckConnected(int64_t timeout_ms);

  lathe::v1::JobService::Stub& jobs() { return *jobs_; }
  lathe::v1::DatasetService::Stub& datasets() { return *datasets_; }
  lathe::v1::ModelService::Stub& models() { return *models_; }
  lathe::v1::AdminService::Stub& admin() { return *admin_; }

  // Streams a local file to the server and returns its dataset reference.
  absl::StatusOr<lathe::v1::Dataset> UploadDataset(const std::string& path,
                                                   const std::string& name);
  // Pushes every regular file under `dir` (recursively; training-state
  // files of a checkpoint, trainer_state.json and training_state.safetensors,
  // and its TensorBoard log, runs/,
  // are left out) to the model store as `name`. Files are hashed, then
  // streamed in 1 MiB chunks; no file is held in memory. `progress` is told
  // (path, bytes sent of the whole model, total bytes) as chunks go out.
  absl::StatusOr<lathe::v1::PushModelResponse> PushModel(
      const std::string& dir, const std::string& name, bool replace,
      const std::function<void(const std::string&, int64_t, int64_t)>&
          progress);
  // Turns a --train-data argument into a reference the server accepts: a
  // local file is uploaded; dataset: refs and file:// URIs pass through.
  absl::StatusOr<std::string> ResolveData(const std::string& arg);
  // Downloads every file of one checkpoint (`selector`: latest, best or a
  // step) into `dest`, resuming partial files, and verifies each SHA-256.
  // Over the server's HTTP listener when it has one and it can be reached
  // (else over gRPC); `progress` is told each file as it completes.
  absl::StatusOr<lathe::v1::Checkpoint> DownloadCheckpoint(
      const std::string& job_id, const std::string& selector,
      const std::string& dest,
      const std::function<void(const lathe::v1::FileInfo&)>& progress);
  // "HTTP" or "gRPC": how the last DownloadCheckpoint fetched its files.
  const std::string& download_transport() const { return transport_; }

 private:
  absl::Status DownloadFile(const std::string& job_id,
                            const std::string& selector,
                            const lathe::v1::FileInfo& file,
                            const std::string& dest, int http_port,
                            bool http_tls);
  std::string target_;
  ChannelOptions options_;
  std::string transport_ = "gRPC";
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<lathe::v1::JobService::Stub> jobs_;
  std::unique_ptr<lathe::v1::DatasetService::Stub> datasets_;
  std::unique_ptr<lathe::v1::ModelService::Stub> models_;
  std::unique_ptr<lathe::v1::AdminService::Stub> admin_;
};

}  // namespace lathe::client

#endif  // LATHE_CLIENT_CLIENT_H_
