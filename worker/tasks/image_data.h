// Image-classification data: PNG and JPEG decoding (libpng, libjpeg-turbo),
// resizing, and the dataset layouts image-classification reads. No LibTorch.
#ifndef LATHE_WORKER_TASKS_IMAGE_DATA_H_
#define LATHE_WORKER_TASKS_IMAGE_DATA_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lathe {

// An 8-bit RGB picture, rows top to bottom, pixels interleaved (HWC):
// rgb.size() == width * height * 3.
struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> rgb;
};

// Decoded pictures larger than this are refused before their pixels are
// allocated (64 megapixels, 192 MiB as RGB).
inline constexpr int64_t kMaxImagePixels = 64ll * 1024 * 1024;
// Image files larger than this are refused unread.
inline constexpr int64_t kMaxImageFileBytes = 256ll * 1024 * 1024;

// Decodes PNG (1/2/4/8/16-bit; gray, gray+alpha, RGB, RGBA, palette,
// interlaced) or JPEG (baseline or progressive; gray or colour) bytes to
// RGB8, recognised by their signature. Alpha is dropped (not composited) and
// 16-bit samples keep their high byte, as PIL's convert("RGB") does. `name`
// (the file's name) starts every error message. INVALID_ARGUMENT for data
// that is neither format, corrupt or truncated data, an unsupported variant
// (e.g. CMYK JPEG) or a picture over kMaxImagePixels.
absl::StatusOr<RgbImage> DecodeImage(std::string_view bytes,
                                     const std::string& name);
// Reads and decodes the file `path` (NOT_FOUND when it is absent); errors
// name `path`.
absl::StatusOr<RgbImage> DecodeImageFile(const std::string& path);

// `image` resampled to width x height with a bilinear (triangle) filter that
// widens when shrinking, as PIL's Image.resize(..., BILINEAR) does, so
// downscaled pictures are antialiased. Both sizes must be >= 1 and `image`
// non-empty.
RgbImage ResizeBilinear(const RgbImage& image, int64_t width, int64_t height);

// One picture of a dataset, already resized to image_size x image_size.
struct ImageExample {
  // What names the picture in messages and predictions: the path relative to
  // the dataset folder ("cat/001.png"), the path as a JSONL/CSV row wrote
  // it, or "NAME:LINE" for a row of pixel values.
  std::string image;
  std::string label;  // Empty when the row has none (prediction input).
  int64_t line = 0;   // 1-based row line in a JSONL/CSV file; 0 for folders.
  std::vector<uint8_t> pixels;  // image_size * image_size * 3, RGB (HWC).
};

struct ImageReadOptions {
  std::string image_column = "image";    // JSONL key / CSV column of paths.
  std::string pixels_column = "pixels";  // JSONL key of pixel arrays.
  std::string label_column = "label";
  int64_t image_size = 32;  // Side every picture is resized to, 1..1024.
  // Rows to predict: rows may lack labels, and a folder may hold pictures
  // directly (unlabelled) besides class folders.
  bool labels_optional = false;
};

// Reads a dataset of pictures:
//  - a folder with one sub-folder per class (the folder's name is the
//    label) holding .png/.jpg/.jpeg files (case-insensitive; other files
//    and hidden entries are skipped), read in sorted path order;
//  - the same class folders packed in a tar archive (POSIX ustar or GNU,
//    uncompressed; recognised by its header, e.g. `tar cf train.tar -C
//    pictures .`), so a folder dataset uploads as one file: each picture's
//    label is the name of the folder that holds it, entries sorted by path;
//  - a JSONL file of objects {"image": PATH, "label": L} where PATH is
//    relative to the data file's folder (absolute paths and ".." are
//    refused), or {"pixels": [[[r, g, b], ...], ...], "label": L} (rows of
//    pixels, each [r, g, b] or one gray value), or {"pixels": [flat list],
//    "width": W, "height": H} (W*H*3 RGB values or W*H gray values), values
//    in [0, 255]; L is a string or an integer (kept in decimal);
//  - a CSV/TSV file (by `display_name`'s extension) with a header naming the
//    image and label columns, RFC 4180 quoting.
// Every error is INVALID_ARGUMENT; row errors start "DISPLAY_NAME:LINE: ",
// picture errors name the file. An empty dataset is an error.
absl::StatusOr<std::vector<ImageExample>> ReadImageExamples(
    const std::string& path, const std::string& display_name,
    const ImageReadOptions& options);

// The sorted distinct labels of `rows` (numerically when every label is an
// integer). INVALID_ARGUMENT naming `display_name` when `rows` is empty.
absl::StatusOr<std::vector<std::string>> ImageLabelSet(
    const std::vector<ImageExample>& rows, const std::string& display_name);

// Writes `dir`/preprocessor_config.json as Hugging Face's ViTImageProcessor
// reads it: resize to image_size x image_size (bilinear), rescale by 1/255,
// normalise with mean 0.5 and std 0.5 per channel, which is what Lathe's
// image-classification feeds its models.
absl::Status WriteImageProcessorConfig(const std::string& dir,
                                       int64_t image_size);

// Per-channel normalisation image-classification applies after scaling to
// [0, 1]: (x - kImageMean) / kImageStd.
inline constexpr float kImageMean = 0.5f;
inline constexpr float kImageStd = 0.5f;

}  // namespace lathe

#endif  // LATHE_WORKER_TASKS_IMAGE_DATA_H_
