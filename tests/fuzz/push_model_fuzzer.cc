// Feeds: PushModel streams to the model store (ModelStore::StartPush, then
// ModelPush::BeginFile, Append and Finish; server/core/models.h) on a real
// SQLite store and artifact store in a scratch directory, with small limits
// (4 KiB per model, 8 files) so that both can be reached. The input is
// lines, one step each, as the PushModel handler (server/api/services.cc)
// would make them from the stream's messages:
//   as USER TEAM [admin]     the caller from now on (default: the system)
//   push NAME [replace]      StartPush: the first message's name and replace
//   file PATH SIZE SHA256    BeginFile; SIZE `*` is the length of the chunk
//                            lines up to the next file, finish or push, and
//                            SHA256 `*` their SHA-256
//   chunk BYTES              Append of the rest of the line
//   finish                   Finish: the end of the stream
//   delete NAME              ModelStore::Delete
// Lines other than chunks that are not UTF-8 are skipped (the protobuf
// runtime refuses such strings). As in the handler, the first error ends
// the push: its further file,
// chunk and finish lines are skipped. Every input starts from an empty
// model store (the models of earlier inputs are deleted).
//
// Checks: no crash or sanitizer report. StartPush accepts exactly the names
// CheckModelName accepts. BeginFile accepts only clean relative paths of at
// most 512 bytes (no '/' at the start, no empty, "." or ".." component, no
// backslash or control character), no pickle, a lower-case hex SHA-256 and
// a size of at least 0. Errors have the documented codes. A finished push
// stores a model named as pushed whose files are exactly those begun, sorted,
// with config.json and the weights, the declared sizes and SHA-256s, a
// digest equal to ModelDigest, the caller's team and a blob on disk holding
// exactly those bytes; Get returns it. A delete by another team (not an
// admin) is NOT_FOUND and leaves the model. After every step every stored
// model's blobs are still on disk.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "server/core/models.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using lathe::server::ArtifactStore;
using lathe::server::Metrics;
using lathe::server::ModelPush;
using lathe::server::ModelStore;
using lathe::server::ModelStoreOptions;
using lathe::server::Principal;
using lathe::server::Store;
using lathe::v1::Model;
using lathe::v1::ModelFile;

constexpr int64_t kMaxModelBytes = 4096;
constexpr int kMaxFiles = 8;
// The fixture is rebuilt after this many inputs: abandoned pushes leave
// blobs nothing refers to, and the database grows.
constexpr int kRunsPerFixture = 2000;

class Fixture {
 public:
  Fixture() {
    dir_ = lathe::fuzz::ScratchDir() + "/push_model";
    lathe::fuzz::RemoveAll(dir_);
    std::filesystem::create_directories(dir_);
    auto store = Store::Open(dir_ + "/lathe.db");
    auto artifacts = ArtifactStore::Open(dir_ + "/artifacts");
    if (!store.ok() || !artifacts.ok()) {
      std::fprintf(stderr, "fixture: cannot open the stores in %s\n",
                   dir_.c_str());
      std::abort();
    }
    store_ = *std::move(store);
    artifacts_ = *std::move(artifacts);
    ModelStoreOptions opts;
    opts.max_model_bytes = kMaxModelBytes;
    opts.max_files = kMaxFiles;
    models_ =
        std::make_unique<ModelStore>(opts, store_.get(), artifacts_.get(),
                                     &metrics_, [this] { return ++now_; });
  }
  ~Fixture() {
    models_.reset();
    store_.reset();
    artifacts_.reset();
    lathe::fuzz::RemoveAll(dir_);
  }

  ModelStore* models() { return models_.get(); }
  ArtifactStore* artifacts() { return artifacts_.get(); }

 private:
  std::string dir_;
  Metrics metrics_;
  int64_t now_ = 1700000000000;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<ModelStore> models_;
};

Fixture& TheFixture() {
  static std::unique_ptr<Fixture> fixture;
  static int runs = 0;
  if (fixture == nullptr || ++runs % kRunsPerFixture == 0) {
    fixture.reset();
    fixture = std::make_unique<Fixture>();
  }
  return *fixture;
}

struct Step {
  enum Kind { kAs, kPush, kFile, kChunk, kFinish, kDelete } kind;
  std::string a, b, c;  // the step's words; a chunk's bytes in `a`
  bool flag = false;    // replace; admin
};

std::vector<Step> Decode(absl::string_view input) {
  std::vector<Step> steps;
  for (absl::string_view line : absl::StrSplit(input, '\n')) {
    Step s;
    if (absl::ConsumePrefix(&line, "chunk ")) {
      s.kind = Step::kChunk;
      s.a = std::string(line);
      steps.push_back(std::move(s));
      continue;
    }
    // Names, paths and digests are protobuf strings, which are UTF-8.
    if (!lathe::fuzz::IsValidUtf8({line.data(), line.size()})) continue;
    std::vector<std::string> w = absl::StrSplit(line, ' ');
    const std::string& op = w[0];
    auto word = [&w](size_t i) { return i < w.size() ? w[i] : std::string(); };
    if (op == "as") {
      s.kind = Step::kAs;
      s.a = word(1);
      s.b = word(2);
      s.flag = word(3) == "admin";
    } else if (op == "push") {
      s.kind = Step::kPush;
      s.a = word(1);
      s.flag = word(2) == "replace";
    } else if (op == "file" && w.size() >= 4) {
      // The last two words are the size and the digest; the path, which
      // may hold spaces, is the rest.
      s.kind = Step::kFile;
      s.c = w.back();
      w.pop_back();
      s.b = w.back();
      w.pop_back();
      std::vector<std::string> path(w.begin() + 1, w.end());
      s.a = absl::StrJoin(path, " ");
    } else if (op == "finish") {
      s.kind = Step::kFinish;
    } else if (op == "delete") {
      s.kind = Step::kDelete;
      s.a = word(1);
    } else {
      continue;
    }
    steps.push_back(std::move(s));
  }
  return steps;
}

// The bytes of the chunk lines after step `i`, up to the next step that is
// not a chunk or an `as`.
std::string ChunksAfter(const std::vector<Step>& steps, size_t i) {
  std::string bytes;
  for (size_t j = i + 1; j < steps.size(); ++j) {
    if (steps[j].kind == Step::kChunk) {
      bytes += steps[j].a;
    } else if (steps[j].kind != Step::kAs) {
      break;
    }
  }
  return bytes;
}

bool CleanPath(const std::string& path) {
  if (path.empty() || path.size() > 512 || path[0] == '/') return false;
  for (char c : path) {
    if (c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return false;
    }
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

bool LowerHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void CheckBlob(Fixture& fx, const ModelFile& f) {
  FUZZ_CHECK(fx.artifacts()->Has(f.sha256(), f.size()));
  auto bytes = lathe::ReadFile(fx.artifacts()->PathFor(f.sha256()));
  FUZZ_CHECK(bytes.ok());
  FUZZ_CHECK(static_cast<int64_t>(bytes->size()) == f.size());
  FUZZ_CHECK(lathe::Sha256Hex(*bytes) == f.sha256());
}

// Every stored model's files are on disk.
void CheckStore(Fixture& fx) {
  auto models = fx.models()->List();
  FUZZ_CHECK(models.ok());
  for (const Model& m : *models) {
    for (const ModelFile& f : m.files()) {
      FUZZ_CHECK(fx.artifacts()->Has(f.sha256(), f.size()));
    }
  }
}

// The push in progress and what the fuzzer knows of it.
struct Push {
  std::unique_ptr<ModelPush> push;
  std::string name;
  Principal who;
  std::map<std::string, ModelFile> begun;  // by path
  int64_t total = 0;
};

void CheckFinished(Fixture& fx, const Push& p,
                   const absl::StatusOr<lathe::server::PushResult>& result) {
  if (!result.ok()) {
    const absl::Status& s = result.status();
    FUZZ_CHECK(
        absl::IsDataLoss(s) ||
        (absl::IsInvalidArgument(s) &&
         absl::StartsWith(s.message(), "files:")) ||
        (absl::IsAlreadyExists(s) && absl::StartsWith(s.message(), "name:")));
    return;
  }
  const Model& m = result->model;
  FUZZ_CHECK(m.name() == p.name);
  FUZZ_CHECK(m.files_size() == static_cast<int>(p.begun.size()));
  FUZZ_CHECK(p.begun.count("config.json") == 1);
  FUZZ_CHECK(p.begun.count("model.safetensors") == 1 ||
             p.begun.count("model.safetensors.index.json") == 1);
  std::vector<ModelFile> files(m.files().begin(), m.files().end());
  int64_t total = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    const ModelFile& f = files[i];
    if (i > 0) FUZZ_CHECK(files[i - 1].path() < f.path());
    auto it = p.begun.find(f.path());
    FUZZ_CHECK(it != p.begun.end());
    FUZZ_CHECK(it->second.size() == f.size());
    FUZZ_CHECK(it->second.sha256() == f.sha256());
    CheckBlob(fx, f);
    total += f.size();
  }
  FUZZ_CHECK(m.size() == total && total <= kMaxModelBytes);
  FUZZ_CHECK(m.digest() == lathe::server::ModelDigest(files));
  if (result->created) {
    FUZZ_CHECK(m.team() == p.who.team && m.owner() == p.who.user);
  } else {
    FUZZ_CHECK(p.who.Sees(m.team()));
  }
  auto got = fx.models()->Get(p.name);
  FUZZ_CHECK(got.ok() && got->digest() == m.digest());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& fx = TheFixture();
  // Start from an empty model store.
  auto left = fx.models()->List();
  FUZZ_CHECK(left.ok());
  for (const Model& m : *left) FUZZ_CHECK(fx.models()->Delete(m.name()).ok());

  const std::vector<Step> steps =
      Decode(absl::string_view(reinterpret_cast<const char*>(data), size));
  Principal who = Principal::System();
  Push p;  // p.push is null when no push is in progress
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    switch (s.kind) {
      case Step::kAs:
        who = Principal{
            s.a.empty() ? "alice" : s.a, s.b.empty() ? "team-a" : s.b,
            s.flag ? lathe::v1::ROLE_ADMIN : lathe::v1::ROLE_MEMBER, ""};
        break;
      case Step::kPush: {
        p = Push();
        auto started = fx.models()->StartPush(s.a, s.flag, who);
        FUZZ_CHECK(started.ok() ==
                   lathe::server::CheckModelName(s.a, "name").ok());
        if (!started.ok()) {
          FUZZ_CHECK(absl::IsInvalidArgument(started.status()));
          FUZZ_CHECK(absl::StartsWith(started.status().message(), "name: "));
          break;
        }
        p.push = *std::move(started);
        p.name = s.a;
        p.who = who;
        break;
      }
      case Step::kFile: {
        if (p.push == nullptr) break;
        ModelFile f;
        f.set_path(s.a);
        const std::string bytes = ChunksAfter(steps, i);
        int64_t declared = 0;
        if (s.b == "*") {
          f.set_size(static_cast<int64_t>(bytes.size()));
        } else if (absl::SimpleAtoi(s.b, &declared)) {
          f.set_size(declared);
        }
        f.set_sha256(s.c == "*" ? lathe::Sha256Hex(bytes) : s.c);
        const absl::Status begun = p.push->BeginFile(f);
        if (!begun.ok()) {
          FUZZ_CHECK(absl::IsDataLoss(begun) ||
                     absl::IsResourceExhausted(begun) ||
                     (absl::IsInvalidArgument(begun) &&
                      absl::StartsWith(begun.message(), "file.")));
          p.push.reset();
          break;
        }
        FUZZ_CHECK(CleanPath(f.path()));
        FUZZ_CHECK(!lathe::server::IsPickleFile(f.path()));
        FUZZ_CHECK(LowerHex64(f.sha256()));
        FUZZ_CHECK(f.size() >= 0);
        FUZZ_CHECK(p.begun.count(f.path()) == 0);
        FUZZ_CHECK(static_cast<int>(p.begun.size()) < kMaxFiles);
        p.total += f.size();
        FUZZ_CHECK(p.total <= kMaxModelBytes);
        p.begun[f.path()] = f;
        break;
      }
      case Step::kChunk: {
        if (p.push == nullptr) break;
        const absl::Status appended = p.push->Append(s.a);
        if (!appended.ok()) {
          FUZZ_CHECK(absl::IsDataLoss(appended) ||
                     absl::IsResourceExhausted(appended) ||
                     (absl::IsInvalidArgument(appended) &&
                      absl::StartsWith(appended.message(), "chunk:")));
          p.push.reset();
        }
        break;
      }
      case Step::kFinish: {
        if (p.push == nullptr) break;
        CheckFinished(fx, p, p.push->Finish());
        p.push.reset();
        break;
      }
      case Step::kDelete: {
        auto before = fx.models()->Get(s.a);
        auto deleted = fx.models()->Delete(s.a, who);
        if (deleted.ok()) {
          FUZZ_CHECK(before.ok() && who.Sees(before->team()));
          FUZZ_CHECK(deleted->digest() == before->digest());
          FUZZ_CHECK(absl::IsNotFound(fx.models()->Get(s.a).status()));
        } else {
          FUZZ_CHECK(absl::IsNotFound(deleted.status()) ||
                     absl::IsInvalidArgument(deleted.status()));
          if (before.ok()) {
            FUZZ_CHECK(!who.Sees(before->team()));
            auto after = fx.models()->Get(s.a);
            FUZZ_CHECK(after.ok() && after->digest() == before->digest());
          }
        }
        break;
      }
    }
    CheckStore(fx);
  }
  return 0;
}
