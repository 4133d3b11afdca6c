#include "common/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

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

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::string contents, ReadFile(path));
  return Parse(std::move(contents), path);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    std::string contents, const std::string& display_name) {
  auto bad = [&](const std::string& msg) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name, ": invalid safetensors file: ", msg));
  };
  if (contents.size() < 8) return bad("shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) {
    header_len |= static_cast<uint64_t>(static_cast<uint8_t>(contents[i]))
                  << (8 * i);
  }
  if (header_len > kMaxHeaderBytes) {
    return bad(absl::StrCat("header of ", header_len,
                            " bytes exceeds the 100 MB limit"));
  }
  if (header_len > contents.size() - 8) {
    return bad(absl::StrCat("header length ", header_len,
                            " runs past the end of the file (", contents.size(),
                            " bytes)"));
  }
  const std::string_view header_text(contents.data() + 8, header_len);
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
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = contents.size() - data_start;
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
    t.data =
        reinterpret_cast<const uint8_t*>(contents.data()) + data_start + begin;
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
  // Tensor pointers point into contents_; moving a std::string may move its
  // buffer, so the file takes ownership before pointers are handed out and
  // the pointers are rebased onto the stored buffer.
  const char* old_base = contents.data();
  file->contents_ = std::move(contents);
  for (auto& [name, t] : file->tensors_) {
    t.data = reinterpret_cast<const uint8_t*>(file->contents_.data()) +
             (reinterpret_cast<const char*>(t.data) - old_base);
  }
  return file;
}

const SafetensorsFile::Tensor* SafetensorsFile::Find(
    const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace lathe
