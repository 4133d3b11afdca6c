#include "worker/train/tensorboard.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status.h"

namespace lathe {
namespace {

constexpr char kFileVersion[] = "brain.Event:2";

std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

template <typename T>
void PutFixed(T v, std::string* out) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86-64 and aarch64: little-endian
  out->append(b, sizeof(T));
}

void PutBytes(int field, const std::string& bytes, std::string* out) {
  PutVarint(static_cast<uint64_t>(field) << 3 | 2, out);
  PutVarint(bytes.size(), out);
  out->append(bytes);
}

// Event{wall_time = 1, step = 2, then `what`}.
std::string EventHeader(int64_t step) {
  std::string e;
  e.push_back(0x09);  // wall_time: double
  PutFixed(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()), &e);
  if (step != 0) {
    e.push_back(0x10);  // step: varint
    PutVarint(static_cast<uint64_t>(step), &e);
  }
  return e;
}

absl::Status CopyFile(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::filesystem::copy_file(
      from, to, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot copy ", from, " to ", to, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

uint32_t Crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = MakeTable();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t MaskedCrc32c(const void* data, size_t n) {
  const uint32_t c = Crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string FrameRecord(const std::string& data) {
  std::string r;
  PutFixed(static_cast<uint64_t>(data.size()), &r);
  PutFixed(MaskedCrc32c(r.data(), 8), &r);
  r.append(data);
  PutFixed(MaskedCrc32c(data.data(), data.size()), &r);
  return r;
}

absl::StatusOr<EventLog> EventLog::Open(const std::string& out_dir,
                                        const std::string& resume_dir) {
  const std::string dir = absl::StrCat(out_dir, "/", kTensorBoardDir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  std::string name, previous;
  if (!resume_dir.empty()) {
    const std::string from = absl::StrCat(resume_dir, "/", kTensorBoardDir);
    for (auto it = std::filesystem::directory_iterator(from, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      const std::string n = it->path().filename().string();
      if (absl::StrContains(n, "tfevents") && it->is_regular_file()) {
        name = n;
        previous = it->path().string();
      }
    }
  }
  const bool fresh = name.empty();
  if (fresh) {
    name = absl::StrCat("events.out.tfevents.",
                        absl::ToUnixSeconds(absl::Now()), ".lathe");
  }
  const std::string path = absl::StrCat(dir, "/", name);
  if (!fresh) RETURN_IF_ERROR(CopyFile(previous, path));
  FILE* f = std::fopen(path.c_str(), fresh ? "wb" : "ab");
  if (f == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  EventLog log(path, name, f);
  if (fresh) {
    std::string e = EventHeader(0);
    PutBytes(3, kFileVersion, &e);  // file_version
    RETURN_IF_ERROR(log.Append(e));
  }
  return log;
}

EventLog::EventLog(EventLog&& other) noexcept
    : path_(std::move(other.path_)),
      name_(std::move(other.name_)),
      file_(std::exchange(other.file_, nullptr)) {}

EventLog::~EventLog() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status EventLog::Append(const std::string& event) {
  const std::string record = FrameRecord(event);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() ||
      std::fflush(file_) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", path_));
  }
  return absl::OkStatus();
}

absl::Status EventLog::AddScalar(const std::string& tag, int64_t step,
                                 double value) {
  std::string v;
  PutBytes(1, tag, &v);  // Summary.Value.tag
  v.push_back(0x15);     // simple_value: float
  PutFixed(static_cast<float>(value), &v);
  std::string summary;
  PutBytes(1, v, &summary);  // Summary.value
  std::string e = EventHeader(step);
  PutBytes(5, summary, &e);  // Event.summary
  return Append(e);
}

absl::Status EventLog::AddEvent(const nlohmann::json& event) {
  const std::string type = event.value("type", "");
  const int64_t step = event.value("step", int64_t{0});
  if (type == "train") {
    for (const char* name :
         {"loss", "learning_rate", "samples_per_second", "epoch"}) {
      auto it = event.find(name);
      if (it != event.end() && it->is_number()) {
        RETURN_IF_ERROR(
            AddScalar(absl::StrCat("train/", name), step, it->get<double>()));
      }
    }
  } else if (type == "eval") {
    auto metrics = event.find("metrics");
    if (metrics == event.end() || !metrics->is_object()) {
      return absl::OkStatus();
    }
    for (auto it = metrics->begin(); it != metrics->end(); ++it) {
      if (it.value().is_number()) {
        RETURN_IF_ERROR(AddScalar(absl::StrCat("eval/", it.key()), step,
                                  it.value().get<double>()));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status EventLog::CopyInto(const std::string& checkpoint_dir) const {
  const std::string dir = absl::StrCat(checkpoint_dir, "/", kTensorBoardDir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  return CopyFile(path_, absl::StrCat(dir, "/", name_));
}

}  // namespace lathe
