// Feeds: the bytes of a safetensors file (a model's weights, as pushed to the
// model store or fetched by URI) to SafetensorsFile::Parse
// (common/safetensors.h). Checks: no crash or sanitizer report; errors are
// INVALID_ARGUMENT; an accepted file's tensors each hold exactly
// product(shape) * dtype-size bytes, lie inside the data section without
// overlapping and cover it exactly; writing them back with WriteSafetensors
// and opening the result (mmap) gives the same tensors and metadata.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto parsed = lathe::SafetensorsFile::Parse(bytes, "fuzz.safetensors");
  if (!parsed.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(parsed.status()));
    return 0;
  }
  const lathe::SafetensorsFile& file = **parsed;
  FUZZ_CHECK(size >= 8);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{data[i]} << (8 * i);
  FUZZ_CHECK(header_len <= size - 8);
  const uint64_t data_size = size - 8 - header_len;

  // Tensor spans relative to the start of the data section; Parse copied
  // the bytes, so find each tensor's span by its pointer's offset from the
  // lowest one and compare contents against the input.
  std::vector<std::pair<const uint8_t*, size_t>> spans;
  uint64_t total = 0;
  for (const auto& [name, t] : file.tensors()) {
    const size_t elem = lathe::SafetensorsDtypeSize(t.dtype);
    FUZZ_CHECK(elem > 0);
    uint64_t count = 1;
    for (int64_t d : t.shape) {
      FUZZ_CHECK(d >= 0);
      count *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(t.nbytes == 0 || count * elem == t.nbytes);
    if (t.nbytes > 0) spans.emplace_back(t.data, t.nbytes);
    total += t.nbytes;
    FUZZ_CHECK(file.Find(name) == &t);
  }
  FUZZ_CHECK(total == data_size);
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    FUZZ_CHECK(spans[i - 1].first + spans[i - 1].second == spans[i].first);
  }
  if (!spans.empty()) {
    FUZZ_CHECK(std::memcmp(spans.front().first, data + 8 + header_len,
                           data_size) == 0);
  }

  std::vector<lathe::TensorView> views;
  for (const auto& [name, t] : file.tensors()) {
    views.push_back({name, t.dtype, t.shape, t.data, t.nbytes});
  }
  const std::string path = lathe::fuzz::ScratchDir() + "/again.safetensors";
  const absl::Status written =
      lathe::WriteSafetensors(path, views, file.metadata());
  if (!written.ok()) {
    // Only a name WriteSafetensors refuses (the empty one) may stop it.
    FUZZ_CHECK(absl::IsInvalidArgument(written));
    FUZZ_CHECK(file.Find("") != nullptr);
    return 0;
  }
  auto reopened = lathe::SafetensorsFile::Open(path);
  FUZZ_CHECK(reopened.ok());
  FUZZ_CHECK((*reopened)->metadata() == file.metadata());
  FUZZ_CHECK((*reopened)->tensors().size() == file.tensors().size());
  for (const auto& [name, t] : file.tensors()) {
    const lathe::SafetensorsFile::Tensor* u = (*reopened)->Find(name);
    FUZZ_CHECK(u != nullptr);
    FUZZ_CHECK(u->dtype == t.dtype && u->shape == t.shape &&
               u->nbytes == t.nbytes);
    FUZZ_CHECK(t.nbytes == 0 || std::memcmp(u->data, t.data, t.nbytes) == 0);
  }
  return 0;
}
