// Safetensors (https://github.com/huggingface/safetensors) reading and
// writing without LibTorch: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
// then the raw little-endian tensor bytes.
#ifndef LATHE_COMMON_SAFETENSORS_H_
#define LATHE_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lathe {

// Accepted dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. Returns the
// element size in bytes, or 0 for an unsupported name.
size_t SafetensorsDtypeSize(const std::string& dtype);

// A tensor to write. `data` is borrowed (must stay valid during the call)
// and holds exactly product(shape) * dtype size bytes, little-endian.
struct TensorView {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes `tensors` (names unique, data in name order, each 8-byte aligned)
// and `metadata` to `path` atomically (temporary file + rename). Invalid input
// (duplicate or empty name, unknown dtype, byte count not matching the shape)
// is INVALID_ARGUMENT; I/O failures keep their codes.
absl::Status WriteSafetensors(
    const std::string& path, const std::vector<TensorView>& tensors,
    const std::map<std::string, std::string>& metadata);

// A validated safetensors file. Immutable after Open()/Parse(); safe to read
// from several threads.
class SafetensorsFile {
 public:
  struct Tensor {
    std::string dtype;
    std::vector<int64_t> shape;
    const uint8_t* data = nullptr;  // Owned by the SafetensorsFile.
    size_t nbytes = 0;
  };

  // Maps the file read-only (mmap: nothing is copied, so a multi-gigabyte
  // file costs no heap) and validates it: header length within the file and
  // at most 100 MB, valid JSON object, supported dtypes, non-negative shapes
  // whose byte counts match data_offsets, offsets in bounds and covering the
  // data section exactly (no overlaps, no gaps). Any violation is
  // INVALID_ARGUMENT naming the file and the tensor. NOT_FOUND when the file
  // is absent. Tensor data points into the mapping, which lives as long as
  // this object; the file must not be truncated meanwhile.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);

  // Parses an in-memory file (the same checks as Open); `display_name`
  // appears in error messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(
      std::string contents, const std::string& display_name);

  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // nullptr when absent.
  const Tensor* Find(const std::string& name) const;

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

 private:
  SafetensorsFile() = default;
  // Validates `size` bytes at `bytes` (owned by `file`) and fills its
  // tensors and metadata with pointers into them.
  static absl::Status ParseInto(SafetensorsFile* file, const char* bytes,
                                uint64_t size, const std::string& display_name);

  std::string contents_;     // Parse(): the bytes.
  void* mapping_ = nullptr;  // Open(): the mapping, or null when empty.
  uint64_t mapping_size_ = 0;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights as a Hugging Face directory holds them: one
// model.safetensors, or shards listed by model.safetensors.index.json
// ({"weight_map": {tensor: shard file}}). Immutable after Open(); safe to
// read from several threads.
class SafetensorsModel {
 public:
  struct Entry {
    const SafetensorsFile::Tensor* tensor = nullptr;  // Owned by the model.
    std::string file;  // Path of the file that holds it, for messages.
  };

  // Opens `dir`/model.safetensors, or else the sharded index: every shard
  // is opened (mapped) once and validated; every tensor in the weight_map
  // must exist in the shard it names and no tensor may be in two shards;
  // shard names must be plain file names inside `dir`. A violation is
  // INVALID_ARGUMENT naming the index file. Without either, a pickle
  // checkpoint is refused (see CheckNoPickleWeights); otherwise NOT_FOUND.
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> Open(
      const std::string& dir);

  // Every tensor of every file, by name.
  const std::map<std::string, Entry>& tensors() const { return tensors_; }
  // nullptr when absent.
  const Entry* Find(const std::string& name) const;
  // The files read: model.safetensors or the index file.
  const std::string& source() const { return source_; }

 private:
  SafetensorsModel() = default;

  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> tensors_;
  std::string source_;
};

// Same as SafetensorsModel::Open(dir).
absl::StatusOr<std::unique_ptr<SafetensorsModel>> OpenSafetensorsModel(
    const std::string& dir);

// Pickle checkpoints (pytorch_model.bin, *.pt, *.pth, *.ckpt, *.pkl) can run
// code when loaded, so Lathe never reads them. Returns INVALID_ARGUMENT
// naming the file and telling the user to convert it to safetensors when
// `dir` holds one; OK otherwise.
absl::Status CheckNoPickleWeights(const std::string& dir);

}  // namespace lathe

#endif  // LATHE_COMMON_SAFETENSORS_H_
