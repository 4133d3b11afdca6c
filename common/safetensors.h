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

// A validated, fully read safetensors file. Immutable after Open(); safe to
// read from several threads.
class SafetensorsFile {
 public:
  struct Tensor {
    std::string dtype;
    std::vector<int64_t> shape;
    const uint8_t* data = nullptr;  // Owned by the SafetensorsFile.
    size_t nbytes = 0;
  };

  // Reads and validates the whole file: header length within the file and
  // at most 100 MB, valid JSON object, supported dtypes, non-negative shapes
  // whose byte counts match data_offsets, offsets in bounds and covering the
  // data section exactly (no overlaps, no gaps). Any violation is
  // INVALID_ARGUMENT naming the file and the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);

  // Parses an in-memory file; `display_name` appears in error messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(
      std::string contents, const std::string& display_name);

  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // nullptr when absent.
  const Tensor* Find(const std::string& name) const;

 private:
  SafetensorsFile() = default;

  std::string contents_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace lathe

#endif  // LATHE_COMMON_SAFETENSORS_H_
