#include "worker/tasks/image_data.h"

// clang-format off
#include <csetjmp>
#include <cstdio>
#include <png.h>
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;

// Data files hold paths, pixel arrays or a tar of pictures; all is read into
// memory at once.
constexpr int64_t kMaxDataFileBytes = 1ll << 30;
constexpr int64_t kMaxPixelRowSide = 4096;
constexpr size_t kMaxRows = 10'000'000;

absl::Status Invalid(const std::string& name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
}

// ---------------------------------------------------------------------------
// PNG through libpng's full API: its transforms reproduce PIL's
// convert("RGB") (palette expanded, alpha dropped, 16-bit high bytes kept).
// libpng reports errors by longjmp; the function that calls setjmp holds
// only trivially destructible locals, so the jump skips no destructors.

struct PngReader {
  const uint8_t* data;
  size_t size;
  size_t offset;
  char message[256];
  jmp_buf jump;
  png_bytepp rows;  // Freed on the error path too.
};

void PngError(png_structp png, png_const_charp message) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof(r->message), "%s", message);
  std::longjmp(r->jump, 1);
}

void PngWarning(png_structp, png_const_charp) {}

void PngRead(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->size - r->offset) png_error(png, "file is truncated");
  std::memcpy(out, r->data + r->offset, n);
  r->offset += n;
}

// Fills `out` (already empty) and its size; returns false with the reason
// in reader->message.
bool DecodePngInto(PngReader* reader, RgbImage* out) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, reader,
                                           PngError, PngWarning);
  if (png == nullptr) {
    std::snprintf(reader->message, sizeof(reader->message),
                  "out of memory starting libpng");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(reader->message, sizeof(reader->message),
                  "out of memory starting libpng");
    return false;
  }
  // Rows are written through a plain pointer into out->rgb, sized before any
  // row is read; after a jump the vector is simply left for the caller.
  reader->rows = nullptr;
  if (setjmp(reader->jump)) {
    if (reader->rows != nullptr) png_free(png, reader->rows);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, reader, PngRead);
  png_set_user_limits(png, 1u << 20, 1u << 20);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  if (static_cast<int64_t>(width) * static_cast<int64_t>(height) >
      kMaxImagePixels) {
    png_error(png, "picture is larger than 64 megapixels");
  }
  const int color = png_get_color_type(png, info);
  if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) {
    png_set_expand_gray_1_2_4_to_8(png);
  }
  png_set_strip_alpha(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) {
    png_set_gray_to_rgb(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(width) * 3) {
    png_error(png, "unexpected row layout after conversion to RGB");
  }
  out->width = width;
  out->height = height;
  out->rgb.resize(static_cast<size_t>(width) * height * 3);
  uint8_t* base = out->rgb.data();
  png_bytepp rows = static_cast<png_bytepp>(
      png_malloc(png, sizeof(png_bytep) * static_cast<size_t>(height)));
  reader->rows = rows;
  for (png_uint_32 y = 0; y < height; ++y) {
    rows[y] = base + static_cast<size_t>(y) * width * 3;
  }
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  png_free(png, rows);
  reader->rows = nullptr;
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

// ---------------------------------------------------------------------------
// JPEG through libjpeg: error_exit longjmps back here instead of exiting the
// process, and warnings are recorded rather than printed.

struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

void JpegEmit(j_common_ptr cinfo, int level) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  // A missing end of data is only a warning to libjpeg (it pads with
  // gray); a picture with missing rows is an error here, as in PIL.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) e->truncated = true;
}

void JpegSilent(j_common_ptr) {}

bool DecodeJpegInto(const uint8_t* data, size_t size, JpegError* err,
                    RgbImage* out) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = JpegErrorExit;
  err->mgr.emit_message = JpegEmit;
  err->mgr.output_message = JpegSilent;
  err->truncated = false;
  err->message[0] = '\0';
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK ||
      cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(err->message, sizeof(err->message),
                  "CMYK JPEG pictures are not supported (convert to RGB)");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  if (static_cast<int64_t>(cinfo.image_width) * cinfo.image_height >
      kMaxImagePixels) {
    std::snprintf(err->message, sizeof(err->message),
                  "picture is larger than 64 megapixels");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  if (cinfo.output_components != 3) {
    std::snprintf(err->message, sizeof(err->message),
                  "unsupported JPEG colour layout");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const size_t width = cinfo.output_width;
  out->width = cinfo.output_width;
  out->height = cinfo.output_height;
  out->rgb.resize(width * cinfo.output_height * 3);
  uint8_t* base = out->rgb.data();
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row =
        base + static_cast<size_t>(cinfo.output_scanline) * width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (err->truncated) {
    std::snprintf(err->message, sizeof(err->message), "rows are missing");
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Resampling: PIL's separable triangle filter.

struct Taps {
  int64_t first = 0;
  std::vector<double> weights;
};

std::vector<Taps> FilterTaps(int64_t in, int64_t out) {
  const double scale = static_cast<double>(in) / out;
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;  // Triangle's support is 1.
  std::vector<Taps> taps(out);
  for (int64_t x = 0; x < out; ++x) {
    const double center = (x + 0.5) * scale;
    const int64_t lo =
        std::max<int64_t>(0, static_cast<int64_t>(center - support + 0.5));
    const int64_t hi =
        std::min<int64_t>(in, static_cast<int64_t>(center + support + 0.5));
    Taps& t = taps[x];
    t.first = lo;
    double total = 0;
    for (int64_t i = lo; i < hi; ++i) {
      const double d = std::abs((i - center + 0.5) / filter_scale);
      const double w = d < 1 ? 1 - d : 0;
      t.weights.push_back(w);
      total += w;
    }
    if (total > 0) {
      for (double& w : t.weights) w /= total;
    }
  }
  return taps;
}

uint8_t ToByte(double v) {
  return static_cast<uint8_t>(std::clamp(std::lround(v), 0l, 255l));
}

// ---------------------------------------------------------------------------
// Datasets.

// Decodes `file`, naming it `name` in errors (missing files included, which
// are INVALID_ARGUMENT here: a dataset names a picture that is not there).
absl::StatusOr<RgbImage> DecodeFileNamed(const std::string& file,
                                         const std::string& name) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    return Invalid(name, "no such picture file");
  }
  ASSIGN_OR_RETURN(int64_t size, FileSize(file));
  if (size > kMaxImageFileBytes) {
    return Invalid(name, absl::StrCat(size, " bytes is too large a picture"));
  }
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(file));
  return DecodeImage(bytes, name);
}

bool IsImageFile(const fs::path& p) {
  const std::string ext = absl::AsciiStrToLower(p.extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

bool Hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

absl::StatusOr<std::vector<uint8_t>> Resized(const RgbImage& image,
                                             int64_t size) {
  if (image.width == size && image.height == size) return image.rgb;
  return ResizeBilinear(image, size, size).rgb;
}

absl::StatusOr<std::vector<ImageExample>> ReadFolder(
    const std::string& path, const std::string& display_name,
    const ImageReadOptions& options) {
  std::vector<std::pair<std::string, std::string>> files;  // (rel, label)
  std::error_code ec;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::path& entry = it->path();
    if (Hidden(entry)) continue;
    if (it->is_directory(ec)) {
      const std::string label = entry.filename().string();
      std::error_code inner;
      for (fs::directory_iterator f(entry, inner), fend; !inner && f != fend;
           f.increment(inner)) {
        if (Hidden(f->path()) || !f->is_regular_file(inner) ||
            !IsImageFile(f->path())) {
          continue;
        }
        files.emplace_back(label + "/" + f->path().filename().string(), label);
        if (files.size() > kMaxRows) {
          return Invalid(display_name, "more than 10,000,000 pictures");
        }
      }
      if (inner) {
        return Invalid(absl::StrCat(display_name, "/", label),
                       absl::StrCat("cannot list: ", inner.message()));
      }
    } else if (it->is_regular_file(ec) && IsImageFile(entry)) {
      if (!options.labels_optional) {
        return Invalid(
            absl::StrCat(display_name, "/", entry.filename().string()),
            "a picture outside a class folder has no label (put each "
            "picture in a folder named after its class)");
      }
      files.emplace_back(entry.filename().string(), "");
    }
  }
  if (ec) {
    return Invalid(display_name, absl::StrCat("cannot list: ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    return Invalid(display_name,
                   "no .png/.jpg/.jpeg pictures in class folders");
  }
  std::vector<ImageExample> rows;
  rows.reserve(files.size());
  for (const auto& [rel, label] : files) {
    const std::string file = (fs::path(path) / rel).string();
    ASSIGN_OR_RETURN(
        RgbImage image,
        DecodeFileNamed(file, absl::StrCat(display_name, "/", rel)));
    ImageExample ex;
    ex.image = rel;
    ex.label = label;
    ASSIGN_OR_RETURN(ex.pixels, Resized(image, options.image_size));
    rows.push_back(std::move(ex));
  }
  return rows;
}

// Tar archives (POSIX ustar and GNU): class folders packed into one file,
// so a folder dataset travels as a single upload.
bool IsTar(const std::string& bytes) {
  return bytes.size() >= 512 && bytes.compare(257, 5, "ustar") == 0;
}

// The NUL-terminated text of a fixed-size header field.
std::string Field(const char* p, size_t n) {
  size_t len = 0;
  while (len < n && p[len] != '\0') ++len;
  return std::string(p, len);
}

absl::StatusOr<std::vector<ImageExample>> ReadTar(
    const std::string& bytes, const std::string& display_name,
    const ImageReadOptions& options) {
  struct Entry {
    std::string path, label;
    size_t offset = 0, size = 0;
  };
  std::vector<Entry> files;
  std::string long_name;
  size_t pos = 0;
  bool ended = false;
  while (pos + 512 <= bytes.size()) {
    const char* h = bytes.data() + pos;
    if (h[0] == '\0') {  // The zero blocks that end the archive.
      ended = true;
      break;
    }
    const std::string size_text = Field(h + 124, 12);
    uint64_t size = 0;
    for (char c : size_text) {
      if (c == ' ') continue;
      if (c < '0' || c > '7' || size > (uint64_t{1} << 40)) {
        return Invalid(display_name,
                       absl::StrCat("corrupt tar header at byte ", pos));
      }
      size = size * 8 + (c - '0');
    }
    const size_t data = pos + 512;
    if (size > bytes.size() - data) {
      return Invalid(display_name,
                     absl::StrCat("tar entry at byte ", pos, " is truncated"));
    }
    const char type = h[156];
    std::string name = Field(h, 100);
    if (bytes.compare(pos + 257, 6, std::string("ustar\0", 6)) == 0) {
      const std::string prefix = Field(h + 345, 155);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    if (!long_name.empty()) {
      name = long_name;
      long_name.clear();
    }
    if (type == 'L') {
      long_name = Field(bytes.data() + data, size);
    } else if (type == '0' || type == '\0') {
      while (absl::StartsWith(name, "./")) name = name.substr(2);
      const fs::path p(name);
      bool hidden = false;
      for (const fs::path& part : p) {
        const std::string s = part.string();
        if (!s.empty() && s[0] == '.') hidden = true;
      }
      if (!hidden && IsImageFile(p)) {
        Entry e;
        e.path = name;
        e.label = p.has_parent_path() ? p.parent_path().filename().string()
                                      : std::string();
        e.offset = data;
        e.size = size;
        if (e.label.empty() && !options.labels_optional) {
          return Invalid(
              absl::StrCat(display_name, "/", name),
              "a picture outside a class folder has no label (put each "
              "picture in a folder named after its class)");
        }
        files.push_back(std::move(e));
        if (files.size() > kMaxRows) {
          return Invalid(display_name, "more than 10,000,000 pictures");
        }
      }
    }
    pos = data + (size + 511) / 512 * 512;
  }
  if (!ended) {
    return Invalid(display_name,
                   "the tar archive is truncated (no end-of-archive block)");
  }
  if (files.empty()) {
    return Invalid(display_name,
                   "the tar archive holds no .png/.jpg/.jpeg pictures");
  }
  std::sort(files.begin(), files.end(),
            [](const Entry& a, const Entry& b) { return a.path < b.path; });
  std::vector<ImageExample> rows;
  rows.reserve(files.size());
  for (const Entry& e : files) {
    if (static_cast<int64_t>(e.size) > kMaxImageFileBytes) {
      return Invalid(absl::StrCat(display_name, "/", e.path),
                     "too large a picture");
    }
    ASSIGN_OR_RETURN(
        RgbImage image,
        DecodeImage(std::string_view(bytes.data() + e.offset, e.size),
                    absl::StrCat(display_name, "/", e.path)));
    ImageExample ex;
    ex.image = e.path;
    ex.label = e.label;
    ASSIGN_OR_RETURN(ex.pixels, Resized(image, options.image_size));
    rows.push_back(std::move(ex));
  }
  return rows;
}

// A relative path without "..", resolved against the data file's folder.
absl::StatusOr<std::string> ResolveImagePath(const std::string& base_dir,
                                             const std::string& given,
                                             const std::string& where) {
  const fs::path p(given);
  if (given.empty() || p.is_absolute()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "image path \"", given,
                     "\" must be relative to the data file's folder"));
  }
  for (const fs::path& part : p) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "image path \"", given,
                       "\" must stay inside the data file's folder (no ..)"));
    }
  }
  return (fs::path(base_dir) / p).string();
}

absl::StatusOr<int64_t> PixelValue(const nlohmann::json& v,
                                   const std::string& where) {
  if (!v.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "pixel values must be numbers in [0, 255]"));
  }
  const double d = v.get<double>();
  if (!(d >= 0 && d <= 255)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "pixel value ", v.dump(), " is outside [0, 255]"));
  }
  return std::lround(d);
}

absl::StatusOr<RgbImage> PixelsFromJson(const nlohmann::json& row,
                                        const std::string& column,
                                        const std::string& where) {
  const nlohmann::json& px = row[column];
  if (!px.is_array() || px.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "field \"", column, "\" is not a non-empty list"));
  }
  RgbImage img;
  if (!px[0].is_array()) {
    // A flat list with its width and height.
    if (!row.contains("width") || !row.contains("height") ||
        !row["width"].is_number_integer() ||
        !row["height"].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "a flat \"", column,
          "\" list needs integer \"width\" and \"height\" fields"));
    }
    const int64_t w = row["width"].get<int64_t>();
    const int64_t h = row["height"].get<int64_t>();
    if (w < 1 || h < 1 || w > kMaxPixelRowSide || h > kMaxPixelRowSide) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "width and height must be in [1, ", kMaxPixelRowSide, "]"));
    }
    const size_t n = px.size();
    const size_t area = static_cast<size_t>(w * h);
    if (n != area * 3 && n != area) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "\"", column, "\" has ", n, " values; ", w, "x",
                       h, " needs ", area * 3, " (RGB) or ", area, " (gray)"));
    }
    img.width = w;
    img.height = h;
    img.rgb.resize(area * 3);
    for (size_t i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(int64_t v, PixelValue(px[i], where));
      if (n == area) {
        img.rgb[i * 3] = img.rgb[i * 3 + 1] = img.rgb[i * 3 + 2] =
            static_cast<uint8_t>(v);
      } else {
        img.rgb[i] = static_cast<uint8_t>(v);
      }
    }
    return img;
  }
  // Rows of pixels: [[[r, g, b] or gray, ...], ...].
  const int64_t h = static_cast<int64_t>(px.size());
  const int64_t w = static_cast<int64_t>(px[0].size());
  if (w < 1 || h > kMaxPixelRowSide || w > kMaxPixelRowSide) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "\"", column, "\" must be 1 to ", kMaxPixelRowSide,
                     " rows of 1 to ", kMaxPixelRowSide, " pixels"));
  }
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w * h * 3));
  for (int64_t y = 0; y < h; ++y) {
    const nlohmann::json& r = px[y];
    if (!r.is_array() || static_cast<int64_t>(r.size()) != w) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "row ", y, " of \"", column, "\" does not have ",
                       w, " pixels like the first row"));
    }
    for (int64_t x = 0; x < w; ++x) {
      uint8_t* out = &img.rgb[(y * w + x) * 3];
      const nlohmann::json& p = r[x];
      if (p.is_array()) {
        if (p.size() != 3) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, "pixel (", x, ", ", y, ") is not [r, g, b]"));
        }
        for (int c = 0; c < 3; ++c) {
          ASSIGN_OR_RETURN(int64_t v, PixelValue(p[c], where));
          out[c] = static_cast<uint8_t>(v);
        }
      } else {
        ASSIGN_OR_RETURN(int64_t v, PixelValue(p, where));
        out[0] = out[1] = out[2] = static_cast<uint8_t>(v);
      }
    }
  }
  return img;
}

absl::StatusOr<std::string> LabelText(const nlohmann::json& v,
                                      const std::string& column,
                                      const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  return absl::InvalidArgumentError(absl::StrCat(
      where, "field \"", column, "\" is not a string or an integer"));
}

// Splits CSV/TSV text into records with RFC 4180 quoting; each record keeps
// the line it starts on.
struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;
};

absl::StatusOr<std::vector<CsvRecord>> ParseDelimited(const std::string& text,
                                                      char sep,
                                                      const std::string& name) {
  std::vector<CsvRecord> records;
  CsvRecord cur;
  std::string field;
  bool quoted = false, field_started = false, any = false;
  int64_t line = 1;
  cur.line = 1;
  auto end_field = [&] {
    cur.fields.push_back(std::move(field));
    field.clear();
    field_started = false;
  };
  auto end_record = [&] {
    end_field();
    const bool blank = cur.fields.size() == 1 && cur.fields[0].empty();
    if (!blank) records.push_back(std::move(cur));
    cur = CsvRecord();
    any = false;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field.push_back(c);
      }
      continue;
    }
    if (!any) {
      cur.line = line;
      any = true;
    }
    if (c == '"' && !field_started) {
      quoted = true;
      field_started = true;
    } else if (c == sep) {
      end_field();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_record();
      ++line;
    } else {
      field.push_back(c);
      field_started = true;
    }
    if (records.size() > kMaxRows) {
      return Invalid(name, "more than 10,000,000 rows");
    }
  }
  if (quoted) {
    return Invalid(absl::StrCat(name, ":", cur.line),
                   "unterminated quoted field");
  }
  if (any || !field.empty()) end_record();
  return records;
}

absl::StatusOr<ImageExample> ExampleFromPath(const std::string& base_dir,
                                             const std::string& given,
                                             const std::string& where,
                                             int64_t image_size) {
  ASSIGN_OR_RETURN(std::string file, ResolveImagePath(base_dir, given, where));
  ASSIGN_OR_RETURN(
      RgbImage image,
      DecodeFileNamed(file, absl::StrCat(where, "image \"", given, "\"")));
  ImageExample ex;
  ex.image = given;
  ASSIGN_OR_RETURN(ex.pixels, Resized(image, image_size));
  return ex;
}

absl::StatusOr<std::vector<ImageExample>> ReadJsonl(const std::string& text,
                                                    const std::string& base_dir,
                                                    const std::string& name,
                                                    const ImageReadOptions& o) {
  std::vector<ImageExample> rows;
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(name, ":", line_no, ": ");
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "invalid JSON: ", e.what()));
    }
    if (!row.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "row is not a JSON object"));
    }
    ImageExample ex;
    if (row.contains(o.image_column) && !row[o.image_column].is_null()) {
      if (!row[o.image_column].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "field \"", o.image_column, "\" is not a string path"));
      }
      ASSIGN_OR_RETURN(
          ex, ExampleFromPath(base_dir, row[o.image_column].get<std::string>(),
                              where, o.image_size));
    } else if (row.contains(o.pixels_column)) {
      ASSIGN_OR_RETURN(RgbImage img,
                       PixelsFromJson(row, o.pixels_column, where));
      ex.image = absl::StrCat(name, ":", line_no);
      ASSIGN_OR_RETURN(ex.pixels, Resized(img, o.image_size));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "missing field \"", o.image_column, "\" (or \"",
                       o.pixels_column, "\")"));
    }
    if (row.contains(o.label_column) && !row[o.label_column].is_null()) {
      ASSIGN_OR_RETURN(ex.label,
                       LabelText(row[o.label_column], o.label_column, where));
    } else if (!o.labels_optional) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "missing field \"", o.label_column, "\""));
    }
    ex.line = line_no;
    rows.push_back(std::move(ex));
    if (rows.size() > kMaxRows)
      return Invalid(name, "more than 10,000,000 rows");
  }
  return rows;
}

absl::StatusOr<std::vector<ImageExample>> ReadCsv(const std::string& text,
                                                  char sep,
                                                  const std::string& base_dir,
                                                  const std::string& name,
                                                  const ImageReadOptions& o) {
  ASSIGN_OR_RETURN(std::vector<CsvRecord> records,
                   ParseDelimited(text, sep, name));
  if (records.empty()) return Invalid(name, "the file is empty");
  const std::vector<std::string>& header = records[0].fields;
  auto column = [&](const std::string& n) -> int64_t {
    for (size_t i = 0; i < header.size(); ++i) {
      if (absl::StripAsciiWhitespace(header[i]) == n) return i;
    }
    return -1;
  };
  const int64_t image_col = column(o.image_column);
  const int64_t label_col = column(o.label_column);
  if (image_col < 0) {
    return Invalid(
        absl::StrCat(name, ":", records[0].line),
        absl::StrCat("the header has no \"", o.image_column, "\" column"));
  }
  if (label_col < 0 && !o.labels_optional) {
    return Invalid(
        absl::StrCat(name, ":", records[0].line),
        absl::StrCat("the header has no \"", o.label_column, "\" column"));
  }
  std::vector<ImageExample> rows;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    const std::string where = absl::StrCat(name, ":", rec.line, ": ");
    if (rec.fields.size() != header.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "has ", rec.fields.size(), " fields, the header ",
                       header.size()));
    }
    ASSIGN_OR_RETURN(
        ImageExample ex,
        ExampleFromPath(base_dir, rec.fields[image_col], where, o.image_size));
    if (label_col >= 0) ex.label = rec.fields[label_col];
    if (ex.label.empty() && !o.labels_optional) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "empty \"", o.label_column, "\""));
    }
    ex.line = rec.line;
    rows.push_back(std::move(ex));
  }
  return rows;
}

}  // namespace

absl::StatusOr<RgbImage> DecodeImage(std::string_view bytes,
                                     const std::string& name) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  RgbImage out;
  if (bytes.size() >= 8 && std::memcmp(data, kPng, 8) == 0) {
    // IHDR comes first: refuse oversized pictures before libpng reads on.
    if (bytes.size() >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0) {
      auto be32 = [&](size_t at) {
        return (uint64_t{data[at]} << 24) | (uint64_t{data[at + 1]} << 16) |
               (uint64_t{data[at + 2]} << 8) | uint64_t{data[at + 3]};
      };
      if (be32(16) * be32(20) > static_cast<uint64_t>(kMaxImagePixels)) {
        return Invalid(name, "picture is larger than 64 megapixels");
      }
    }
    PngReader reader{data, bytes.size(), 0, {0}, {}, nullptr};
    if (!DecodePngInto(&reader, &out)) {
      return Invalid(name, absl::StrCat("corrupt or unsupported PNG (",
                                        reader.message, ")"));
    }
    return out;
  }
  if (bytes.size() >= 3 && data[0] == 0xFF && data[1] == 0xD8 &&
      data[2] == 0xFF) {
    JpegError err;
    if (!DecodeJpegInto(data, bytes.size(), &err, &out)) {
      if (err.truncated) {
        return Invalid(name, absl::StrCat("corrupt JPEG: file is truncated (",
                                          err.message, ")"));
      }
      return Invalid(name, absl::StrCat("corrupt or unsupported JPEG (",
                                        err.message, ")"));
    }
    return out;
  }
  return Invalid(name, "not a PNG or JPEG picture");
}

absl::StatusOr<RgbImage> DecodeImageFile(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such picture file"));
  }
  return DecodeFileNamed(path, path);
}

RgbImage ResizeBilinear(const RgbImage& image, int64_t width, int64_t height) {
  const std::vector<Taps> xs = FilterTaps(image.width, width);
  const std::vector<Taps> ys = FilterTaps(image.height, height);
  // Horizontal pass into doubles, then vertical, rounding once at the end.
  std::vector<double> mid(static_cast<size_t>(width * image.height * 3));
  for (int64_t y = 0; y < image.height; ++y) {
    const uint8_t* in = &image.rgb[y * image.width * 3];
    for (int64_t x = 0; x < width; ++x) {
      const Taps& t = xs[x];
      double acc[3] = {0, 0, 0};
      for (size_t k = 0; k < t.weights.size(); ++k) {
        const uint8_t* p = in + (t.first + k) * 3;
        for (int c = 0; c < 3; ++c) acc[c] += t.weights[k] * p[c];
      }
      for (int c = 0; c < 3; ++c) mid[(y * width + x) * 3 + c] = acc[c];
    }
  }
  RgbImage out;
  out.width = width;
  out.height = height;
  out.rgb.resize(static_cast<size_t>(width * height * 3));
  for (int64_t y = 0; y < height; ++y) {
    const Taps& t = ys[y];
    for (int64_t x = 0; x < width; ++x) {
      double acc[3] = {0, 0, 0};
      for (size_t k = 0; k < t.weights.size(); ++k) {
        const double* p = &mid[((t.first + k) * width + x) * 3];
        for (int c = 0; c < 3; ++c) acc[c] += t.weights[k] * p[c];
      }
      for (int c = 0; c < 3; ++c) {
        out.rgb[(y * width + x) * 3 + c] = ToByte(acc[c]);
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<ImageExample>> ReadImageExamples(
    const std::string& path, const std::string& display_name,
    const ImageReadOptions& options) {
  if (options.image_size < 1 || options.image_size > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image_size must be in [1, 1024], got ", options.image_size));
  }
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return ReadFolder(path, display_name, options);
  }
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(display_name, ": no such file"));
  }
  ASSIGN_OR_RETURN(int64_t size, FileSize(path));
  if (size > kMaxDataFileBytes) {
    return Invalid(display_name,
                   absl::StrCat(size, " bytes is too large a data file"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  if (IsTar(text)) return ReadTar(text, display_name, options);
  const std::string base_dir = fs::path(path).parent_path().string();
  std::string ext =
      absl::AsciiStrToLower(fs::path(display_name).extension().string());
  if (ext != ".csv" && ext != ".tsv" && ext != ".jsonl" && ext != ".json") {
    ext = absl::AsciiStrToLower(fs::path(path).extension().string());
  }
  std::vector<ImageExample> rows;
  if (ext == ".csv" || ext == ".tsv") {
    ASSIGN_OR_RETURN(rows, ReadCsv(text, ext == ".csv" ? ',' : '\t', base_dir,
                                   display_name, options));
  } else {
    ASSIGN_OR_RETURN(rows, ReadJsonl(text, base_dir, display_name, options));
  }
  if (rows.empty()) return Invalid(display_name, "the file has no rows");
  return rows;
}

absl::StatusOr<std::vector<std::string>> ImageLabelSet(
    const std::vector<ImageExample>& rows, const std::string& display_name) {
  if (rows.empty()) return Invalid(display_name, "no labelled pictures");
  std::set<std::string> distinct;
  for (const ImageExample& r : rows) distinct.insert(r.label);
  std::vector<std::string> labels(distinct.begin(), distinct.end());
  bool numeric = true;
  for (const std::string& l : labels) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(l, &v)) numeric = false;
  }
  if (numeric) {
    std::sort(labels.begin(), labels.end(),
              [](const std::string& a, const std::string& b) {
                int64_t x = 0, y = 0;
                (void)absl::SimpleAtoi(a, &x);
                (void)absl::SimpleAtoi(b, &y);
                return x < y;
              });
  }
  return labels;
}

absl::Status WriteImageProcessorConfig(const std::string& dir,
                                       int64_t image_size) {
  const nlohmann::json config = {
      {"image_processor_type", "ViTImageProcessor"},
      {"do_resize", true},
      {"size", {{"height", image_size}, {"width", image_size}}},
      {"resample", 2},  // PIL.Image.BILINEAR
      {"do_rescale", true},
      {"rescale_factor", 1.0 / 255.0},
      {"do_normalize", true},
      {"image_mean", {kImageMean, kImageMean, kImageMean}},
      {"image_std", {kImageStd, kImageStd, kImageStd}}};
  return WriteFileAtomic(dir + "/preprocessor_config.json",
                         config.dump(2) + "\n");
}

}  // namespace lathe
