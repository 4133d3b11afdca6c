#include "server/core/datasets.h"

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/status.h"
#include "server/core/job_states.h"

namespace lathe::server {

namespace {
constexpr char kDatasetPrefix[] = "dataset:";
constexpr char kFilePrefix[] = "file://";
constexpr size_t kMaxText = 4096;
}  // namespace

absl::StatusOr<lathe::v1::Dataset> DatasetCatalogue::Add(
    const std::string& name, const std::string& sha256, int64_t size) {
  lathe::v1::Dataset ds;
  ds.set_ref(absl::StrCat(kDatasetPrefix, sha256));
  ds.set_name(name);
  ds.set_size(size);
  ds.set_sha256(sha256);
  // The same bytes again keep the first upload's name (the format the
  // shared row records) and time; each team's own are in dataset_teams.
  ASSIGN_OR_RETURN(auto before, store_->GetDataset(sha256));
  if (before.has_value()) {
    if (!before->name().empty()) ds.set_name(before->name());
    ds.set_create_time_ms(before->create_time_ms());
  }
  if (ds.create_time_ms() == 0) {
    ds.set_create_time_ms(absl::ToUnixMillis(absl::Now()));
  }
  RETURN_IF_ERROR(store_->PutDataset(ds));
  PublishStoredBytes(store_, metrics_);
  return ds;
}

absl::StatusOr<lathe::v1::Dataset> DatasetCatalogue::Resolve(
    const std::string& field, const std::string& value) {
  if (value.size() > kMaxText) return Invalid(field, "too long");
  if (absl::StartsWith(value, kDatasetPrefix)) {
    const std::string sha = value.substr(strlen(kDatasetPrefix));
    if (!IsSha256Hex(sha)) {
      return Invalid(field, absl::StrCat("\"", value,
                                         "\" is not a dataset reference "
                                         "(dataset:<sha256>)"));
    }
    ASSIGN_OR_RETURN(auto ds, store_->GetDataset(sha));
    if (!ds.has_value() || !artifacts_->Has(sha, ds->size())) {
      return Invalid(field, absl::StrCat("dataset ", value, " does not exist"));
    }
    return *ds;
  }
  if (absl::StartsWith(value, kFilePrefix) || absl::StartsWith(value, "/")) {
    ASSIGN_OR_RETURN(std::string path, roots_->Resolve(field, value));
    auto size = FileSize(path);
    if (!size.ok()) {
      return Invalid(field, absl::StrCat("cannot read \"", value,
                                         "\": ", size.status().message()));
    }
    if (*size > max_bytes_) {
      return Invalid(field, absl::StrCat("\"", value, "\" is larger than ",
                                         max_bytes_, " bytes"));
    }
    ASSIGN_OR_RETURN(auto writer, artifacts_->NewWriter(max_bytes_));
    auto data = ReadFile(path);
    if (!data.ok()) {
      return Invalid(field, absl::StrCat("cannot read \"", value,
                                         "\": ", data.status().message()));
    }
    RETURN_IF_ERROR(writer->Append(*data));
    ASSIGN_OR_RETURN(std::string sha, writer->Commit());
    std::string name = path.substr(path.rfind('/') + 1);
    return Add(name, sha, static_cast<int64_t>(data->size()));
  }
  if (IsRemoteUri(value)) {
    if (remote_ == nullptr) {
      return Invalid(field, "this server does not fetch remote URIs");
    }
    ASSIGN_OR_RETURN(auto fetched,
                     remote_->Fetch(field, value, artifacts_, max_bytes_));
    return Add(fetched.name, fetched.sha256, fetched.size);
  }
  return Invalid(field, absl::StrCat("\"", value,
                                     "\" is not a dataset reference, "
                                     "file:// URI, https:// or s3:// URI "
                                     "(the CLI uploads local files)"));
}

absl::StatusOr<std::string> DatasetCatalogue::Path(const std::string& ref) {
  if (!absl::StartsWith(ref, kDatasetPrefix)) {
    return Invalid("ref", "is not a dataset reference");
  }
  const std::string sha = ref.substr(strlen(kDatasetPrefix));
  if (!IsSha256Hex(sha)) return Invalid("ref", "is not a dataset reference");
  ASSIGN_OR_RETURN(auto ds, store_->GetDataset(sha));
  if (!ds.has_value()) {
    return absl::NotFoundError(absl::StrCat("dataset ", ref, " not found"));
  }
  return artifacts_->PathFor(sha);
}

}  // namespace lathe::server
