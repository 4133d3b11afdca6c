// Feeds: an uploaded picture file (PNG or JPEG, recognised by its
// signature) to DecodeImage (worker/tasks/image_data.h: libpng and
// libjpeg-turbo, then Lathe's conversion to RGB8). Checks: no crash or
// sanitizer report; every error is INVALID_ARGUMENT starting with the
// file's name; a decoded picture has a positive width and height, at most
// kMaxImagePixels pixels and exactly width * height * 3 bytes of RGB; the
// same bytes decode to the same picture twice.
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/tasks/image_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "fuzz.png";
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<lathe::RgbImage> image = lathe::DecodeImage(bytes, name);
  if (!image.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(image.status()));
    FUZZ_CHECK(absl::StartsWith(image.status().message(), name + ":"));
    return 0;
  }
  FUZZ_CHECK(image->width > 0);
  FUZZ_CHECK(image->height > 0);
  FUZZ_CHECK(image->width <= lathe::kMaxImagePixels / image->height);
  FUZZ_CHECK(static_cast<int64_t>(image->rgb.size()) ==
             image->width * image->height * 3);
  const absl::StatusOr<lathe::RgbImage> again = lathe::DecodeImage(bytes, name);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->width == image->width && again->height == image->height);
  FUZZ_CHECK(again->rgb == image->rgb);
  return 0;
}
