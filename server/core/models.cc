#include "server/core/models.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/status.h"

namespace lathe::server {
namespace {

using lathe::v1::Model;
using lathe::v1::ModelFile;

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

bool HasFile(const std::vector<ModelFile>& files, const std::string& path) {
  for (const ModelFile& f : files) {
    if (f.path() == path) return true;
  }
  return false;
}

}  // namespace

const std::vector<lathe::v1::ModelPreset>& ModelPresets() {
  static const auto* presets = [] {
    auto* v = new std::vector<lathe::v1::ModelPreset>();
    for (const auto& [name, description] :
         std::vector<std::pair<const char*, const char*>>{
             {"preset:bert-tiny",
              "BERT, 2 layers, hidden 128, bert-base-uncased WordPiece"},
             {"preset:bert-mini",
              "BERT, 4 layers, hidden 256, bert-base-uncased WordPiece"},
             {"preset:gpt2-tiny", "GPT-2, tiny, GPT-2 byte-level BPE"},
             {"preset:llama-tiny", "Llama, tiny, Llama 2 tokenizer"},
             {"preset:llama-mini",
              "Llama, 4 layers, hidden 256, Llama 2 tokenizer"},
             {"preset:vit-tiny",
              "ViT, 32x32 images, 8x8 patches, 2 layers, hidden 64"},
             {"preset:cnn-small",
              "Lathe CNN, 32x32 images, 3 conv blocks, no tokenizer"},
             {"preset:wav2vec2-tiny",
              "Wav2Vec2, 16 kHz audio, 2 layers, hidden 64, no tokenizer"}}) {
      lathe::v1::ModelPreset p;
      p.set_name(name);
      p.set_description(description);
      v->push_back(std::move(p));
    }
    return v;
  }();
  return *presets;
}

absl::Status CheckModelPath(const std::string& path, const std::string& field) {
  if (path.empty()) return Invalid(field, "is empty");
  if (path.size() > kMaxModelPathBytes) {
    return Invalid(
        field, absl::StrCat("is longer than ", kMaxModelPathBytes, " bytes"));
  }
  const std::string shown = absl::StrCat("\"", path.substr(0, 128), "\"");
  if (path[0] == '/') {
    return Invalid(field, absl::StrCat(shown,
                                       " is absolute; paths are "
                                       "relative to the model "
                                       "directory"));
  }
  for (char c : path) {
    if (c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Invalid(field, absl::StrCat(shown,
                                         " has a backslash or a control "
                                         "character"));
    }
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return Invalid(field, absl::StrCat(shown,
                                         " is not a clean relative path (no "
                                         "empty, \".\" or \"..\" "
                                         "components)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckModelName(const std::string& name, const std::string& field) {
  if (name.empty()) return Invalid(field, "is required");
  if (name.size() > kMaxModelNameBytes) {
    return Invalid(field, absl::StrCat("is longer than ", kMaxModelNameBytes,
                                       " characters"));
  }
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
  };
  bool ok = alnum(name[0]);
  for (char c : name) ok &= alnum(c) || c == '.' || c == '_' || c == '-';
  if (!ok) {
    return Invalid(field, absl::StrCat("\"", name.substr(0, 64),
                                       "\" is not a model name "
                                       "([A-Za-z0-9][A-Za-z0-9._-]*)"));
  }
  return absl::OkStatus();
}

bool IsPickleFile(const std::string& path) {
  for (const char* ext : {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}) {
    if (absl::EndsWithIgnoreCase(path, ext)) return true;
  }
  return false;
}

std::string ModelDigest(const std::vector<ModelFile>& files) {
  std::vector<const ModelFile*> sorted;
  for (const ModelFile& f : files) sorted.push_back(&f);
  std::sort(sorted.begin(), sorted.end(),
            [](const ModelFile* a, const ModelFile* b) {
              return a->path() < b->path();
            });
  Sha256 hash;
  for (const ModelFile* f : sorted) {
    hash.Update(
        absl::StrCat(f->sha256(), " ", f->size(), " ", f->path(), "\n"));
  }
  return hash.Hex();
}

// ---- ModelPush ----

absl::Status ModelPush::EndFile() {
  if (writer_ == nullptr) return absl::OkStatus();
  const ModelFile& f = files_.back();
  if (writer_->size() != f.size()) {
    return absl::DataLossError(absl::StrCat(f.path(), ": received ",
                                            writer_->size(),
                                            " bytes, expected ", f.size()));
  }
  RETURN_IF_ERROR(writer_->Commit(f.sha256()).status());
  writer_.reset();
  return absl::OkStatus();
}

absl::Status ModelPush::BeginFile(const ModelFile& file) {
  RETURN_IF_ERROR(EndFile());
  RETURN_IF_ERROR(CheckModelPath(file.path(), "file.path"));
  if (IsPickleFile(file.path())) {
    return Invalid("file.path",
                   absl::StrCat("\"", file.path().substr(0, 128),
                                "\" is a pickle file, which Lathe never "
                                "stores or loads; convert the weights to "
                                "safetensors (model.safetensors) and push "
                                "again"));
  }
  if (!paths_.insert(file.path()).second) {
    return Invalid("file.path", absl::StrCat("\"", file.path().substr(0, 128),
                                             "\" appears twice"));
  }
  if (!IsSha256Hex(file.sha256())) {
    return Invalid("file.sha256", "is not a lower-case hex SHA-256");
  }
  if (file.size() < 0) return Invalid("file.size", "is negative");
  const ModelStoreOptions& opts = store_->options();
  if (static_cast<int>(files_.size()) >= opts.max_files) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a model may have at most ", opts.max_files, " files"));
  }
  if (file.size() > opts.max_model_bytes - total_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the model exceeds the server's limit of ",
                     opts.max_model_bytes >> 20, " MiB (--max-model-mb)"));
  }
  total_ += file.size();
  ModelFile f;
  f.set_path(file.path());
  f.set_size(file.size());
  f.set_sha256(file.sha256());
  files_.push_back(std::move(f));
  ASSIGN_OR_RETURN(writer_, store_->artifacts_->NewWriter(file.size()));
  return absl::OkStatus();
}

absl::Status ModelPush::Append(std::string_view chunk) {
  if (chunk.empty()) return absl::OkStatus();
  if (writer_ == nullptr) {
    return Invalid("chunk", "bytes arrived before any file");
  }
  if (writer_->size() + static_cast<int64_t>(chunk.size()) >
      files_.back().size()) {
    return absl::DataLossError(absl::StrCat(files_.back().path(),
                                            ": more bytes than its size ",
                                            files_.back().size()));
  }
  return writer_->Append(chunk);
}

absl::StatusOr<PushResult> ModelPush::Finish() {
  RETURN_IF_ERROR(EndFile());
  if (!HasFile(files_, "config.json") ||
      !(HasFile(files_, "model.safetensors") ||
        HasFile(files_, "model.safetensors.index.json"))) {
    return Invalid("files",
                   "a model directory needs config.json and "
                   "model.safetensors (or model.safetensors.index.json) at "
                   "its top level");
  }
  return store_->Commit(name_, replace_, who_, std::move(files_), total_);
}

// ---- ModelStore ----

ModelStore::ModelStore(ModelStoreOptions options, Store* store,
                       ArtifactStore* artifacts, Metrics* metrics,
                       std::function<int64_t()> clock)
    : options_(options),
      store_(store),
      artifacts_(artifacts),
      metrics_(metrics),
      clock_(std::move(clock)) {}

absl::StatusOr<std::unique_ptr<ModelPush>> ModelStore::StartPush(
    const std::string& name, bool replace, const Principal& who) {
  RETURN_IF_ERROR(CheckModelName(name, "name"));
  return std::unique_ptr<ModelPush>(new ModelPush(this, name, replace, who));
}

absl::StatusOr<PushResult> ModelStore::Commit(const std::string& name,
                                              bool replace,
                                              const Principal& who,
                                              std::vector<ModelFile> files,
                                              int64_t total) {
  std::sort(files.begin(), files.end(),
            [](const ModelFile& a, const ModelFile& b) {
              return a.path() < b.path();
            });
  Model model;
  model.set_name(name);
  model.set_digest(ModelDigest(files));
  model.set_size(total);
  model.set_owner(who.user);
  model.set_team(who.team);
  for (ModelFile& f : files) *model.add_files() = std::move(f);
  absl::MutexLock lock(&pin_mu_);
  // A collection may have removed a blob this push wrote but had not yet
  // referenced.
  for (const ModelFile& f : model.files()) {
    if (!artifacts_->Has(f.sha256(), f.size())) {
      return absl::AbortedError(absl::StrCat(
          f.path(), " was removed by a concurrent delete; push again"));
    }
  }
  ASSIGN_OR_RETURN(auto existing, store_->GetModel(name));
  if (existing.has_value() && !who.Sees(existing->team())) {
    return absl::AlreadyExistsError(
        absl::StrCat("name: the name ", name, " is taken; choose another"));
  }
  if (existing.has_value()) {
    if (existing->digest() == model.digest()) {
      return PushResult{*existing, false};
    }
    if (!replace) {
      return absl::AlreadyExistsError(absl::StrCat(
          "name: model ", name, " already holds other content (digest ",
          existing->digest(),
          "); push with replace (--replace) to replace it"));
    }
  }
  model.set_create_time_ms(clock_());
  RETURN_IF_ERROR(store_->PutModel(model));
  if (existing.has_value()) {
    std::vector<std::string> old;
    for (const ModelFile& f : existing->files()) old.push_back(f.sha256());
    Collect(old);
  }
  PublishStoredBytes();
  return PushResult{std::move(model), true};
}

absl::StatusOr<std::vector<Model>> ModelStore::List() {
  return store_->ListModels();
}

absl::StatusOr<Model> ModelStore::Get(const std::string& name) {
  RETURN_IF_ERROR(CheckModelName(name, "name"));
  ASSIGN_OR_RETURN(auto model, store_->GetModel(name));
  if (!model.has_value()) {
    return absl::NotFoundError(absl::StrCat("model ", name, " not found"));
  }
  return *model;
}

absl::StatusOr<Model> ModelStore::Delete(const std::string& name,
                                         const Principal& who) {
  RETURN_IF_ERROR(CheckModelName(name, "name"));
  absl::MutexLock lock(&pin_mu_);
  ASSIGN_OR_RETURN(auto model, store_->GetModel(name));
  if (!model.has_value() || !who.Sees(model->team())) {
    return absl::NotFoundError(absl::StrCat("model ", name, " not found"));
  }
  RETURN_IF_ERROR(store_->DeleteModel(name));
  std::vector<std::string> shas;
  for (const ModelFile& f : model->files()) shas.push_back(f.sha256());
  Collect(shas);
  PublishStoredBytes();
  return *model;
}

absl::StatusOr<std::string> ModelStore::FilePath(const std::string& sha256) {
  if (!IsSha256Hex(sha256)) {
    return Invalid("sha256", "is not a lower-case hex SHA-256");
  }
  ASSIGN_OR_RETURN(bool referenced, store_->ModelBlobReferenced(sha256));
  if (!referenced) {
    return absl::NotFoundError(
        absl::StrCat("no stored or pinned model has a file ", sha256));
  }
  return artifacts_->PathFor(sha256);
}

void ModelStore::Collect(const std::vector<std::string>& sha256s) {
  std::set<std::string> unique(sha256s.begin(), sha256s.end());
  for (const std::string& sha : unique) {
    auto referenced = store_->BlobReferenced(sha);
    if (referenced.ok() && !*referenced) artifacts_->Remove(sha);
  }
}

void ModelStore::PublishStoredBytes() {
  auto bytes = store_->StoredBytes();
  if (bytes.ok()) metrics_->SetStoredBytes(static_cast<double>(*bytes));
}

}  // namespace lathe::server
