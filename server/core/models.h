// The server's model store: Hugging Face-format model directories pushed by
// name, every file content-addressed in the artifact store, the model as a
// whole addressed by the digest of its sorted manifest. Jobs pin the files of
// the model they resolved (Store::InsertJob), so deleting or replacing a name
// never takes files from under a job that has not finished.
//
// Thread safety: all methods may be called concurrently. Blob collection
// takes pin_mutex() exclusively; whoever resolves a model reference and pins
// it holds it shared, so a collection cannot run between the two.
#ifndef LATHE_SERVER_CORE_MODELS_H_
#define LATHE_SERVER_CORE_MODELS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lathe/v1/lathe.pb.h"
#include "server/core/artifacts.h"
#include "server/core/metrics.h"
#include "server/core/principal.h"
#include "server/core/store.h"

namespace lathe::server {

struct ModelStoreOptions {
  // Largest model accepted, all files together, in bytes (20 GiB).
  int64_t max_model_bytes = int64_t{20480} << 20;
  // Most files one model may have.
  int max_files = 10000;
};

// Longest ModelFile.path accepted, in bytes.
inline constexpr size_t kMaxModelPathBytes = 512;
// Longest model name.
inline constexpr size_t kMaxModelNameBytes = 128;

// The presets a job may name ("preset:bert-tiny", ...), with descriptions.
// The one list the server validates against and `lathe models list` shows.
const std::vector<lathe::v1::ModelPreset>& ModelPresets();

// OK for a relative, clean path: no leading '/', no empty, "." or ".."
// components, no backslash or control characters, at most
// kMaxModelPathBytes. INVALID_ARGUMENT naming `field` otherwise.
absl::Status CheckModelPath(const std::string& path, const std::string& field);
// OK for [A-Za-z0-9][A-Za-z0-9._-]*, at most kMaxModelNameBytes.
absl::Status CheckModelName(const std::string& name, const std::string& field);
// True for file names that are (or usually are) Python pickles: *.bin,
// *.pt, *.pth, *.ckpt, *.pkl, *.pickle. Lathe never stores or loads them.
bool IsPickleFile(const std::string& path);
// Lower-case hex SHA-256 of the lines "<sha256> <size> <path>\n" of `files`
// sorted by path (bytewise); the order of `files` does not matter.
std::string ModelDigest(const std::vector<lathe::v1::ModelFile>& files);

struct PushResult {
  lathe::v1::Model model;
  // False when the same content was already stored under the name.
  bool created = false;
};

class ModelStore;

// One push in progress: BeginFile, then Append its bytes, for every file;
// then Finish. Not thread-safe; one caller drives it. Abandoning a push
// leaves only complete, verified blobs that nothing refers to yet.
class ModelPush {
 public:
  ModelPush(const ModelPush&) = delete;
  ModelPush& operator=(const ModelPush&) = delete;
  // Ends the previous file (DATA_LOSS when its bytes disagree with its size
  // or SHA-256) and starts `file`. INVALID_ARGUMENT for an unsafe or
  // repeated path, a pickle file, a bad sha256 or size;
  // RESOURCE_EXHAUSTED past the size or file-count limit.
  absl::Status BeginFile(const lathe::v1::ModelFile& file);
  // Bytes of the current file. INVALID_ARGUMENT before any file; DATA_LOSS
  // past the file's declared size.
  absl::Status Append(std::string_view chunk);
  // Ends the last file, checks that the model has config.json and
  // model.safetensors (or model.safetensors.index.json) and stores it.
  absl::StatusOr<PushResult> Finish();

 private:
  friend class ModelStore;
  ModelPush(ModelStore* store, std::string name, bool replace, Principal who)
      : store_(store),
        name_(std::move(name)),
        replace_(replace),
        who_(std::move(who)) {}
  absl::Status EndFile();

  ModelStore* store_;
  std::string name_;
  bool replace_;
  Principal who_;
  std::vector<lathe::v1::ModelFile> files_;
  std::set<std::string> paths_;
  int64_t total_ = 0;
  std::unique_ptr<BlobWriter> writer_;
};

class ModelStore {
 public:
  // `store`, `artifacts` and `metrics` must outlive the model store.
  // `clock` gives milliseconds since the epoch.
  ModelStore(ModelStoreOptions options, Store* store, ArtifactStore* artifacts,
             Metrics* metrics, std::function<int64_t()> clock);

  // INVALID_ARGUMENT ("name: ...") for a bad name. The model belongs to
  // `who` and their team; a name another team holds is ALREADY_EXISTS to
  // anyone but an admin, whatever its content.
  absl::StatusOr<std::unique_ptr<ModelPush>> StartPush(
      const std::string& name, bool replace,
      const Principal& who = Principal::System());
  // Sorted by name.
  absl::StatusOr<std::vector<lathe::v1::Model>> List();
  // NOT_FOUND for an unknown name.
  absl::StatusOr<lathe::v1::Model> Get(const std::string& name);
  // Removes the name and collects the files nothing else refers to.
  // Returns the model as it was; NOT_FOUND for an unknown name and for
  // another team's model unless `who` is an admin.
  absl::StatusOr<lathe::v1::Model> Delete(
      const std::string& name, const Principal& who = Principal::System());
  // Path of a blob that a stored model or a job's pinned model refers to.
  // INVALID_ARGUMENT for a malformed digest, NOT_FOUND otherwise.
  absl::StatusOr<std::string> FilePath(const std::string& sha256);
  // Removes the blobs among `sha256s` that nothing refers to any more.
  // Callers that do not hold pin_mutex() may race a push, which then fails
  // with ABORTED and is simply repeated.
  void Collect(const std::vector<std::string>& sha256s);

  absl::Mutex* pin_mutex() { return &pin_mu_; }
  const ModelStoreOptions& options() const { return options_; }

 private:
  friend class ModelPush;
  absl::StatusOr<PushResult> Commit(const std::string& name, bool replace,
                                    const Principal& who,
                                    std::vector<lathe::v1::ModelFile> files,
                                    int64_t total);
  void PublishStoredBytes();

  const ModelStoreOptions options_;
  Store* const store_;
  ArtifactStore* const artifacts_;
  Metrics* const metrics_;
  const std::function<int64_t()> clock_;
  absl::Mutex pin_mu_;
};

}  // namespace lathe::server

#endif  // LATHE_SERVER_CORE_MODELS_H_
