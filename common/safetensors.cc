#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace lathe {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

// Element count of `shape`, or nullopt-like false on overflow/negative dims.
bool ElementCount(const std::vector<int64_t>& shape, uint64_t* count) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / d) return false;
    n *= static_cast<uint64_t>(d);
  }
  *count = n;
  return true;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace

size_t SafetensorsDtypeSize(const std::string& dtype) {
  static const std::map<std::string, size_t>* sizes =
      new std::map<std::string, size_t>{
          {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
          {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
  auto it = sizes->find(dtype);
  return it == sizes->end() ? 0 : it->second;
}

absl::Status WriteSafetensors(
    const std::string& path, const std::vector<TensorView>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorView*> sorted;
  sorted.reserve(tensors.size());
  for (const TensorView& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorView* a, const TensorView* b) {
              return a->name < b->name;
            });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  for (size_t i = 0; i < sorted.size(); ++i) {
    const TensorView& t = *sorted[i];
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: invalid tensor name \"", t.name, "\""));
    }
    if (i > 0 && sorted[i - 1]->name == t.name) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: duplicate tensor name \"", t.name, "\""));
    }
    const size_t elem = SafetensorsDtypeSize(t.dtype);
    if (elem == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: tensor \"", t.name, "\": unsupported dtype ", t.dtype));
    }
    uint64_t count = 0;
    if (!ElementCount(t.shape, &count) || count * elem != t.nbytes ||
        (t.nbytes > 0 && t.data == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: tensor \"", t.name, "\": shape ", ShapeString(t.shape),
          " of ", t.dtype, " does not match ", t.nbytes, " bytes"));
    }
  }
  // Tensors are packed back to back: the format forbids holes in the data
  // section, and the header padding keeps the section itself 8-byte aligned.
  uint64_t offset = 0;
  for (const TensorView* t : sorted) {
    nlohmann::ordered_json entry;
    entry["dtype"] = t->dtype;
    entry["shape"] = t->shape;
    entry["data_offsets"] = {offset, offset + t->nbytes};
    header[t->name] = std::move(entry);
    offset += t->nbytes;
  }
  std::string header_text = header.dump();
  // Pads so the data section starts 8-byte aligned (8-byte length prefix).
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + header_text.size() + offset);
  const uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header_text;
  for (const TensorView* t : sorted) {
    out.append(static_cast<const char*>(t->data), t->nbytes);
  }
  return WriteFileAtomic(path, out);
}

absl::Status SafetensorsFile::ParseInto(SafetensorsFile* file,
                                        const char* bytes, uint64_t size,
                                        const std::string& display_name) {
  auto bad = [&](const std::string& msg) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": invalid safetensors file: ", msg));
  };
  if (size < 8) return bad("shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) {
    header_len |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i]))
                  << (8 * i);
  }
  if (header_len > kMaxHeaderBytes) {
    return bad(absl::StrCat("header of ", header_len,
                            " bytes exceeds the 100 MB limit"));
  }
  if (header_len > size - 8) {
    return bad(absl::StrCat("header length ", header_len,
                            " runs past the end of the file (", size,
                            " bytes)"));
  }
  const std::string_view header_text(bytes + 8, header_len);
  std::set<std::string> top_keys;
  std::string duplicate;
  nlohmann::json::parser_callback_t note_keys =
      [&](int depth, nlohmann::json::parse_event_t event,
          nlohmann::json& parsed) {
        if (event == nlohmann::json::parse_event_t::key && depth == 1 &&
            parsed.is_string()) {
          if (!top_keys.insert(parsed.get<std::string>()).second &&
              duplicate.empty()) {
            duplicate = parsed.get<std::string>();
          }
        }
        return true;
      };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_text.begin(), header_text.end(),
                                   note_keys);
  } catch (const nlohmann::json::exception& e) {
    return bad(absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) return bad("header is not a JSON object");
  if (!duplicate.empty()) {
    return bad(absl::StrCat("duplicate tensor name \"", duplicate, "\""));
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return bad("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          return bad(
              absl::StrCat("__metadata__[\"", m.key(), "\"] is not a string"));
        }
        file->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor \"", name, "\": ");
    if (!v.is_object()) return bad(where + "entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) {
      return bad(where + "missing string field \"dtype\"");
    }
    Tensor t;
    t.dtype = v["dtype"].get<std::string>();
    const size_t elem = SafetensorsDtypeSize(t.dtype);
    if (elem == 0) return bad(where + "unsupported dtype " + t.dtype);
    if (!v.contains("shape") || !v["shape"].is_array()) {
      return bad(where + "missing array field \"shape\"");
    }
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) {
        return bad(where + "shape entries must be non-negative integers");
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad(where + "shape entry too large");
      }
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offs =
        v.contains("data_offsets") ? v["data_offsets"] : nlohmann::json();
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() ||
        !offs[1].is_number_unsigned()) {
      return bad(where + "\"data_offsets\" must be [begin, end] integers");
    }
    const uint64_t begin = offs[0].get<uint64_t>();
    const uint64_t end = offs[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return bad(absl::StrCat(where, "data_offsets [", begin, ", ", end,
                              "] out of bounds of the ", data_size,
                              "-byte data section"));
    }
    uint64_t count = 0;
    if (!ElementCount(t.shape, &count) ||
        count > std::numeric_limits<uint64_t>::max() / elem ||
        count * elem != end - begin) {
      return bad(absl::StrCat(where, "shape ", ShapeString(t.shape), " of ",
                              t.dtype, " does not match ", end - begin,
                              " bytes of data"));
    }
    t.data = reinterpret_cast<const uint8_t*>(bytes) + data_start + begin;
    t.nbytes = end - begin;
    spans.push_back({{begin, end}, name});
    file->tensors_.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  uint64_t expect = 0;
  for (const auto& [span, name] : spans) {
    if (span.first < expect) {
      return bad(
          absl::StrCat("tensor \"", name, "\" overlaps the previous tensor"));
    }
    if (span.first > expect) {
      return bad(absl::StrCat("gap of ", span.first - expect,
                              " bytes before tensor \"", name, "\""));
    }
    expect = span.second;
  }
  if (expect != data_size) {
    return bad(absl::StrCat(data_size - expect,
                            " trailing bytes after the last tensor"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    std::string contents, const std::string& display_name) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  // The file owns the bytes before any pointer into them is taken.
  file->contents_ = std::move(contents);
  RETURN_IF_ERROR(ParseInto(file.get(), file->contents_.data(),
                            file->contents_.size(), display_name));
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg =
        absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg)
                         : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > 0) {
    // Mapped, not read: a multi-gigabyte checkpoint costs page cache only,
    // and only the pages of tensors actually copied out are touched.
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(
          absl::StrCat("cannot map ", path, ": ", std::strerror(err)));
    }
    file->mapping_ = mapping;
    file->mapping_size_ = size;
  }
  ::close(fd);
  RETURN_IF_ERROR(ParseInto(
      file.get(), static_cast<const char*>(file->mapping_), size, path));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const SafetensorsFile::Tensor* SafetensorsFile::Find(
    const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const SafetensorsModel::Entry* SafetensorsModel::Find(
    const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::Status CheckNoPickleWeights(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> found;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if ((absl::StartsWith(name, "pytorch_model") &&
         absl::EndsWith(name, ".bin")) ||
        absl::EndsWith(name, ".pt") || absl::EndsWith(name, ".pth") ||
        absl::EndsWith(name, ".ckpt") || absl::EndsWith(name, ".pkl")) {
      found.push_back(name);
    }
  }
  if (found.empty()) return absl::OkStatus();
  std::sort(found.begin(), found.end());
  return absl::InvalidArgumentError(absl::StrCat(
      dir, "/", found.front(),
      ": pickle checkpoints are never loaded, because unpickling can run "
      "arbitrary code; convert the weights to model.safetensors (for "
      "example with the safetensors library's convert script, or "
      "save_pretrained(..., safe_serialization=True)) and retry"));
}

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::Open(
    const std::string& dir) {
  auto model = std::unique_ptr<SafetensorsModel>(new SafetensorsModel());
  const std::string single = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (PathExists(single)) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
    for (const auto& [name, t] : file->tensors()) {
      model->tensors_[name] = Entry{&t, single};
    }
    model->files_.push_back(std::move(file));
    model->source_ = single;
    return model;
  }
  if (!PathExists(index_path)) {
    RETURN_IF_ERROR(CheckNoPickleWeights(dir));
    return absl::NotFoundError(absl::StrCat(
        dir,
        " has neither model.safetensors nor model.safetensors.index.json"));
  }
  model->source_ = index_path;
  auto bad = [&](const std::string& msg) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": invalid shard index: ", msg));
  };
  ASSIGN_OR_RETURN(int64_t index_size, FileSize(index_path));
  if (static_cast<uint64_t>(index_size) > kMaxHeaderBytes) {
    return bad(absl::StrCat(index_size, " bytes exceeds the 100 MB limit"));
  }
  ASSIGN_OR_RETURN(std::string index_text, ReadFile(index_path));
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(index_text);
  } catch (const nlohmann::json::exception& e) {
    return bad(absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return bad("missing object \"weight_map\"");
  }
  // Shard -> the tensors the index places in it.
  std::map<std::string, std::vector<std::string>> shards;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end();
       ++it) {
    if (!it.value().is_string()) {
      return bad(
          absl::StrCat("weight_map[\"", it.key(), "\"] is not a string"));
    }
    const std::string shard = it.value().get<std::string>();
    // Shards are siblings of the index: no paths that leave the directory.
    if (shard.empty() || shard == "." || shard == ".." ||
        shard.find('/') != std::string::npos ||
        shard.find('\\') != std::string::npos) {
      return bad(absl::StrCat("tensor \"", it.key(), "\" names shard \"", shard,
                              "\", which is not a plain file name"));
    }
    shards[shard].push_back(it.key());
  }
  if (shards.empty()) return bad("weight_map is empty");
  for (const auto& [shard, names] : shards) {
    const std::string path = dir + "/" + shard;
    if (!PathExists(path)) {
      return bad(absl::StrCat("shard \"", shard, "\" (holding \"",
                              names.front(), "\") does not exist"));
    }
    auto file = SafetensorsFile::Open(path);
    if (!file.ok()) {
      return absl::Status(file.status().code(),
                          absl::StrCat(index_path, ": shard \"", shard,
                                       "\": ", file.status().message()));
    }
    for (const std::string& name : names) {
      if ((*file)->Find(name) == nullptr) {
        return bad(absl::StrCat("tensor \"", name, "\" is listed in shard \"",
                                shard, "\" but the shard does not hold it"));
      }
    }
    for (const auto& [name, t] : (*file)->tensors()) {
      auto [pos, inserted] = model->tensors_.emplace(name, Entry{&t, path});
      if (!inserted) {
        return bad(absl::StrCat("tensor \"", name, "\" is in two shards (",
                                pos->second.file, " and ", path, ")"));
      }
    }
    model->files_.push_back(*std::move(file));
  }
  return model;
}

absl::StatusOr<std::unique_ptr<SafetensorsModel>> OpenSafetensorsModel(
    const std::string& dir) {
  return SafetensorsModel::Open(dir);
}

}  // namespace lathe
