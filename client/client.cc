#include "client/client.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/file_stream.h"
#include "client/http_download.h"
#include "common/files.h"
#include "common/redact.h"
#include "common/status.h"
#include "common/tar.h"

namespace lathe::client {

absl::Status FromGrpc(const ::grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(
    const std::string& target, const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  // A gRPC download (a server without an HTTP listener) takes its 1 MiB
  // chunks in large frames and keeps a deep receive window.
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, (16 << 20) - 1);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 20);
  ASSIGN_OR_RETURN(auto channel, MakeChannel(target, options, args));
  return std::make_unique<Client>(target, std::move(channel), options);
}

Client::Client(std::string target, std::shared_ptr<grpc::Channel> channel,
               ChannelOptions options)
    : target_(std::move(target)),
      options_(std::move(options)),
      channel_(std::move(channel)) {
  jobs_ = lathe::v1::JobService::NewStub(channel_);
  datasets_ = lathe::v1::DatasetService::NewStub(channel_);
  models_ = lathe::v1::ModelService::NewStub(channel_);
  admin_ = lathe::v1::AdminService::NewStub(channel_);
}

absl::Status Client::CheckConnected(int64_t timeout_ms) {
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms);
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        state == GRPC_CHANNEL_SHUTDOWN) {
      return absl::UnavailableError(absl::StrCat(
          "cannot reach the server at ", target_, " (connection failed)"));
    }
    if (!channel_->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(
          absl::StrCat("cannot reach the server at ", target_,
                       " (no connection within ", timeout_ms, " ms)"));
    }
    state = channel_->GetState(/*try_to_connect=*/true);
  }
  return absl::OkStatus();
}

absl::StatusOr<lathe::v1::PushModelResponse> Client::PushModel(
    const std::string& dir, const std::string& name, bool replace,
    const std::function<void(const std::string&, int64_t, int64_t)>& progress) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, " is not a directory"));
  }
  // Relative paths, sorted, with their sizes and digests.
  std::vector<lathe::v1::ModelFile> files;
  int64_t total = 0;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const std::string rel = fs::relative(it->path(), dir).generic_string();
    if (rel == "trainer_state.json" || rel == "training_state.safetensors" ||
        absl::StartsWith(rel, "runs/")) {
      continue;  // a checkpoint's training state and log are not model
    }
    lathe::v1::ModelFile f;
    f.set_path(rel);
    ASSIGN_OR_RETURN(int64_t size, FileSize(it->path().string()));
    ASSIGN_OR_RETURN(std::string sha, Sha256File(it->path().string()));
    f.set_size(size);
    f.set_sha256(sha);
    total += size;
    files.push_back(std::move(f));
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list ", dir, ": ", ec.message()));
  }
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.path() < b.path(); });
  grpc::ClientContext ctx;
  lathe::v1::PushModelResponse resp;
  auto writer = models_->PushModel(&ctx, &resp);
  lathe::v1::PushModelRequest msg;
  msg.set_name(name);
  msg.set_replace(replace);
  bool open = writer->Write(msg);
  std::string buf(1 << 20, '\0');
  int64_t sent = 0;
  for (const auto& f : files) {
    if (!open) break;
    std::ifstream in(dir + "/" + f.path(), std::ios::binary);
    if (!in) {
      ctx.TryCancel();
      return absl::NotFoundError(absl::StrCat("cannot open ", f.path()));
    }
    bool first = true;
    while (open && (first || in)) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      lathe::v1::PushModelRequest chunk;
      if (first) *chunk.mutable_file() = f;
      first = false;
      chunk.set_chunk(buf.data(), static_cast<size_t>(in.gcount()));
      sent += in.gcount();
      open = writer->Write(chunk);
      if (progress) progress(f.path(), sent, total);
    }
  }
  writer->WritesDone();
  RETURN_IF_ERROR(FromGrpc(writer->Finish()));
  return resp;
}

absl::StatusOr<lathe::v1::Dataset> Client::UploadDataset(
    const std::string& path, const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  grpc::ClientContext ctx;
  lathe::v1::UploadDatasetResponse resp;
  auto writer = datasets_->UploadDataset(&ctx, &resp);
  std::string buf(1 << 20, '\0');
  bool first = true;
  while (first || in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    lathe::v1::UploadDatasetRequest msg;
    if (first) msg.set_name(name);
    first = false;
    msg.set_chunk(buf.data(), static_cast<size_t>(in.gcount()));
    if (!writer->Write(msg)) break;
  }
  writer->WritesDone();
  RETURN_IF_ERROR(FromGrpc(writer->Finish()));
  return resp.dataset();
}

bool IsServerDataRef(const std::string& arg) {
  for (const char* prefix :
       {"dataset:", "file://", "https://", "s3://", "http://"}) {
    if (absl::StartsWith(arg, prefix)) return true;
  }
  return false;
}

absl::StatusOr<std::string> Client::ResolveData(const std::string& arg) {
  if (arg.empty() || IsServerDataRef(arg)) return arg;
  if (!PathExists(arg)) {
    return absl::NotFoundError(
        absl::StrCat("\"", RedactSecrets(arg),
                     "\" is neither a local file, a dataset: reference nor a "
                     "file://, https:// or s3:// URI"));
  }
  std::string trimmed = arg;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  std::string name = trimmed.substr(trimmed.rfind('/') + 1);
  if (std::filesystem::is_directory(trimmed)) {
    // A folder dataset (one sub-folder per class) travels as one archive;
    // the worker unpacks it again.
    char tmpl[] = "/tmp/lathe-folder-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      return absl::InternalError("cannot create a temporary directory");
    }
    const std::string tar = std::string(tmpl) + "/" + name + ".tar";
    absl::Status s = WriteTar(trimmed, tar);
    absl::StatusOr<lathe::v1::Dataset> ds =
        s.ok() ? UploadDataset(tar, name + ".tar")
               : absl::StatusOr<lathe::v1::Dataset>(s);
    std::error_code ec;
    std::filesystem::remove_all(tmpl, ec);
    RETURN_IF_ERROR(ds.status());
    return ds->ref();
  }
  ASSIGN_OR_RETURN(auto ds, UploadDataset(arg, name));
  return ds.ref();
}

namespace {
// Percent-encodes all but unreserved characters and '/' (a file name may
// name a sub-folder).
std::string UrlEscape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        c == '/') {
      out += static_cast<char>(c);
    } else {
      absl::StrAppend(&out, absl::StrFormat("%%%02X", c));
    }
  }
  return out;
}
}  // namespace

absl::Status Client::DownloadFile(const std::string& job_id,
                                  const std::string& selector,
                                  const lathe::v1::FileInfo& file,
                                  const std::string& dest, int http_port,
                                  bool http_tls) {
  const std::string path = dest + "/" + file.name();
  const std::string part = path + ".part";
  // The server checked the name is relative and clean; it may name a
  // sub-folder (a LoRA checkpoint's merged/ model).
  RETURN_IF_ERROR(MakeDirs(path.substr(0, path.rfind('/'))));
  // A file already complete and correct needs no transfer.
  if (auto sha = Sha256File(path); sha.ok() && *sha == file.sha256()) {
    return absl::OkStatus();
  }
  int64_t offset = 0;
  if (auto size = FileSize(part); size.ok() && *size <= file.size()) {
    offset = *size;
  } else {
    ::unlink(part.c_str());
  }
  // A complete part file only needs its check.
  bool fetched = offset == file.size() && file.size() > 0;
  // Never send the token over plain HTTP to a server dialed with TLS.
  const bool use_http = http_port > 0 && (http_tls || !options_.tls.enabled());
  if (use_http && !fetched) {
    std::ofstream out(part, std::ios::binary | std::ios::app);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", part));
    int64_t written = 0;
    absl::Status s = HttpDownload(
        target_, http_port, http_tls, options_,
        absl::StrCat("/v1/jobs/", UrlEscape(job_id), "/checkpoints/",
                     UrlEscape(selector), "/files/", UrlEscape(file.name())),
        offset, out, &written);
    out.close();
    offset += written;
    // A listener this client cannot reach (a tunnel to the gRPC port
    // only, say): the same bytes come over gRPC.
    if (!absl::IsUnavailable(s)) RETURN_IF_ERROR(s);
    fetched = s.ok();
    if (fetched) transport_ = "HTTP";
  }
  if (!fetched) {
    transport_ = "gRPC";
    std::ofstream out(part, std::ios::binary | std::ios::app);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", part));
    lathe::v1::DownloadCheckpointFileRequest req;
    req.set_job_id(job_id);
    req.set_checkpoint(selector);
    req.set_file(file.name());
    req.set_offset(offset);
    grpc::ClientContext ctx;
    // The chunks are written from the slices gRPC received them in, not
    // parsed into messages first (ReadFileStream checks their order).
    absl::Status s = ReadFileStream(
        channel_,
        absl::StrCat("/", lathe::v1::JobService::service_full_name(),
                     "/DownloadCheckpointFile"),
        req, &ctx, offset, [&](absl::string_view data) {
          out.write(data.data(), static_cast<std::streamsize>(data.size()));
          if (!out) {
            return absl::InternalError(absl::StrCat("cannot write ", part));
          }
          return absl::OkStatus();
        });
    out.close();
    RETURN_IF_ERROR(s);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", part));
  }
  ASSIGN_OR_RETURN(std::string sha, Sha256File(part));
  if (sha != file.sha256()) {
    ::unlink(part.c_str());
    return absl::DataLossError(absl::StrCat(file.name(), ": SHA-256 ", sha,
                                            " does not match ", file.sha256()));
  }
  if (::rename(part.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", part));
  }
  return absl::OkStatus();
}

absl::StatusOr<lathe::v1::Checkpoint> Client::DownloadCheckpoint(
    const std::string& job_id, const std::string& selector,
    const std::string& dest,
    const std::function<void(const lathe::v1::FileInfo&)>& progress) {
  lathe::v1::ListCheckpointsRequest req;
  req.set_job_id(job_id);
  lathe::v1::ListCheckpointsResponse resp;
  grpc::ClientContext ctx;
  RETURN_IF_ERROR(FromGrpc(jobs_->ListCheckpoints(&ctx, req, &resp)));
  if (resp.checkpoints().empty()) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " has no checkpoints"));
  }
  int64_t step = 0;
  if (selector.empty() || selector == "latest") {
    step = resp.checkpoints().rbegin()->step();
  } else if (selector == "best") {
    step = resp.best_step() ? resp.best_step()
                            : resp.checkpoints().rbegin()->step();
  } else {
    char* end = nullptr;
    step = std::strtoll(selector.c_str(), &end, 10);
    if (end == selector.c_str() || *end != '\0') {
      return absl::InvalidArgumentError(
          "--checkpoint must be latest, best or a step number");
    }
  }
  const lathe::v1::Checkpoint* chosen = nullptr;
  for (const auto& c : resp.checkpoints()) {
    if (c.step() == step) chosen = &c;
  }
  if (chosen == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("job ", job_id, " has no checkpoint at step ", step));
  }
  RETURN_IF_ERROR(MakeDirs(dest));
  // Ask for the exact step so that a newer checkpoint arriving meanwhile
  // cannot mix files of two steps.
  const std::string exact = absl::StrCat(chosen->step());
  for (const auto& f : chosen->files()) {
    // Relative and clean ("merged/model.safetensors" is fine): never trust
    // a name to stay inside `dest` without checking.
    bool clean = !f.name().empty() && f.name()[0] != '/' &&
                 f.name().find('\\') == std::string::npos;
    for (absl::string_view part : absl::StrSplit(f.name(), '/')) {
      clean = clean && !part.empty() && part != "." && part != "..";
    }
    if (!clean) {
      return absl::DataLossError(absl::StrCat("unsafe file name ", f.name()));
    }
    RETURN_IF_ERROR(DownloadFile(job_id, exact, f, dest, resp.http_port(),
                                 resp.http_tls()));
    if (progress) progress(f);
  }
  return *chosen;
}

}  // namespace lathe::client
