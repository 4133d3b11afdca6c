// image-classification data: PNG and JPEG pictures the tests write with
// libpng and libjpeg (gray, gray+alpha, RGBA, palette with transparency,
// 16-bit, interlaced, progressive JPEG), corrupt and truncated files,
// resizing, the folder/JSONL/CSV dataset layouts, and the task's batches,
// metrics and predictions with a small CNN.
// clang-format off
#include <csetjmp>
#include <cstdio>
#include <png.h>
#include <jpeglib.h>
// clang-format on

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/params.h"
#include "nlohmann/json.hpp"
#include "worker/models/model.h"
#include "worker/tasks/image_data.h"
#include "worker/tasks/task.h"

namespace lathe {
namespace {

namespace fs = std::filesystem;
// Asserts that `text` contains `part`, printing `text` when it does not.
#define EXPECT_CONTAINS(text, part) \
  EXPECT_TRUE(absl::StrContains(text, part)) << (text)

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/lathe_image_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(dir_); }
  std::string Path(const std::string& rel) const {
    const fs::path p = fs::path(dir_) / rel;
    fs::create_directories(p.parent_path());
    return p.string();
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// Writes a PNG with libpng's full API: `rows` holds height rows of packed
// samples for `color_type`/`bit_depth` (16-bit samples big-endian).
void WritePng(const std::string& path, int width, int height, int color_type,
              int bit_depth, const std::vector<uint8_t>& data,
              const std::vector<png_color>& palette = {},
              const std::vector<uint8_t>& trns = {}, bool interlaced = false) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    FAIL() << "libpng failed writing " << path;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, width, height, bit_depth, color_type,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) {
    png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  }
  if (!trns.empty()) {
    png_set_tRNS(png, info, trns.data(), static_cast<int>(trns.size()),
                 nullptr);
  }
  png_write_info(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  ASSERT_EQ(row_bytes * height, data.size());
  std::vector<png_bytep> rows(height);
  for (int y = 0; y < height; ++y) {
    rows[y] = const_cast<png_bytep>(data.data() + y * row_bytes);
  }
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

// Writes a JPEG (RGB or gray samples) with libjpeg.
void WriteJpeg(const std::string& path, int width, int height, int components,
               const std::vector<uint8_t>& data, bool progressive = false) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = components;
  cinfo.in_color_space = components == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 95, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(data.data() + cinfo.next_scanline *
                                                          width * components);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

RgbImage MustDecode(const std::string& path) {
  auto image = DecodeImageFile(path);
  EXPECT_TRUE(image.ok()) << image.status();
  return image.ok() ? *image : RgbImage();
}

std::vector<uint8_t> Pixel(const RgbImage& im, int x, int y) {
  const size_t i = (static_cast<size_t>(y) * im.width + x) * 3;
  return {im.rgb[i], im.rgb[i + 1], im.rgb[i + 2]};
}

TEST(ImageDecodeTest, PngRgbExact) {
  TempDir t;
  std::vector<uint8_t> data;
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 4; ++x) {
      data.insert(data.end(), {static_cast<uint8_t>(x * 60),
                               static_cast<uint8_t>(y * 100), 7});
    }
  }
  WritePng(t.Path("rgb.png"), 4, 3, PNG_COLOR_TYPE_RGB, 8, data);
  RgbImage im = MustDecode(t.Path("rgb.png"));
  EXPECT_EQ(im.width, 4);
  EXPECT_EQ(im.height, 3);
  EXPECT_EQ(im.rgb, data);
}

TEST(ImageDecodeTest, PngGrayAndGrayAlpha) {
  TempDir t;
  WritePng(t.Path("gray.png"), 2, 2, PNG_COLOR_TYPE_GRAY, 8, {0, 50, 200, 255});
  RgbImage g = MustDecode(t.Path("gray.png"));
  EXPECT_EQ(Pixel(g, 1, 0), (std::vector<uint8_t>{50, 50, 50}));
  EXPECT_EQ(Pixel(g, 0, 1), (std::vector<uint8_t>{200, 200, 200}));
  // Gray+alpha: alpha is dropped, the gray kept.
  WritePng(t.Path("ga.png"), 2, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 8,
           {90, 0, 180, 128});
  RgbImage ga = MustDecode(t.Path("ga.png"));
  EXPECT_EQ(Pixel(ga, 0, 0), (std::vector<uint8_t>{90, 90, 90}));
  EXPECT_EQ(Pixel(ga, 1, 0), (std::vector<uint8_t>{180, 180, 180}));
  // 1-bit gray expands to 0/255.
  WritePng(t.Path("bits.png"), 8, 1, PNG_COLOR_TYPE_GRAY, 1, {0xA0});
  RgbImage b = MustDecode(t.Path("bits.png"));
  EXPECT_EQ(Pixel(b, 0, 0), (std::vector<uint8_t>{255, 255, 255}));
  EXPECT_EQ(Pixel(b, 1, 0), (std::vector<uint8_t>{0, 0, 0}));
  EXPECT_EQ(Pixel(b, 2, 0), (std::vector<uint8_t>{255, 255, 255}));
}

TEST(ImageDecodeTest, PngRgbaDropsAlpha) {
  TempDir t;
  WritePng(t.Path("rgba.png"), 2, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8,
           {10, 20, 30, 0, 200, 100, 50, 255});
  RgbImage im = MustDecode(t.Path("rgba.png"));
  EXPECT_EQ(im.rgb, (std::vector<uint8_t>{10, 20, 30, 200, 100, 50}));
}

TEST(ImageDecodeTest, PngPaletteWithTransparencyAndInterlace) {
  TempDir t;
  const std::vector<png_color> palette = {{255, 0, 0}, {0, 255, 0}, {0, 0, 9}};
  // 4-bit indices: 0 1 2 1 | 2 2 0 0; index 0 transparent (still red in RGB).
  WritePng(t.Path("pal.png"), 4, 2, PNG_COLOR_TYPE_PALETTE, 4,
           {0x01, 0x21, 0x22, 0x00}, palette, {0}, /*interlaced=*/true);
  RgbImage im = MustDecode(t.Path("pal.png"));
  ASSERT_EQ(im.width, 4);
  EXPECT_EQ(Pixel(im, 0, 0), (std::vector<uint8_t>{255, 0, 0}));
  EXPECT_EQ(Pixel(im, 1, 0), (std::vector<uint8_t>{0, 255, 0}));
  EXPECT_EQ(Pixel(im, 2, 0), (std::vector<uint8_t>{0, 0, 9}));
  EXPECT_EQ(Pixel(im, 0, 1), (std::vector<uint8_t>{0, 0, 9}));
  EXPECT_EQ(Pixel(im, 3, 1), (std::vector<uint8_t>{255, 0, 0}));
}

TEST(ImageDecodeTest, Png16BitKeepsHighByte) {
  TempDir t;
  // Two RGB pixels, big-endian 16-bit samples.
  WritePng(
      t.Path("deep.png"), 2, 1, PNG_COLOR_TYPE_RGB, 16,
      {0x12, 0x34, 0xAB, 0xCD, 0xFF, 0xFF, 0x00, 0x01, 0x80, 0x00, 0x7F, 0xFF});
  RgbImage im = MustDecode(t.Path("deep.png"));
  EXPECT_EQ(im.rgb, (std::vector<uint8_t>{0x12, 0xAB, 0xFF, 0x00, 0x80, 0x7F}));
}

TEST(ImageDecodeTest, JpegColourGrayAndProgressive) {
  TempDir t;
  // 16x16, left half red, right half blue (8x8 blocks keep edges clean).
  std::vector<uint8_t> rgb;
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) {
      if (x < 8) {
        rgb.insert(rgb.end(), {230, 20, 20});
      } else {
        rgb.insert(rgb.end(), {20, 20, 230});
      }
    }
  }
  for (bool progressive : {false, true}) {
    const std::string p =
        t.Path(progressive ? "progressive.jpg" : "baseline.jpg");
    WriteJpeg(p, 16, 16, 3, rgb, progressive);
    RgbImage im = MustDecode(p);
    ASSERT_EQ(im.width, 16);
    ASSERT_EQ(im.height, 16);
    const std::vector<uint8_t> left = Pixel(im, 2, 2);
    const std::vector<uint8_t> right = Pixel(im, 13, 13);
    EXPECT_NEAR(left[0], 230, 12);
    EXPECT_NEAR(left[2], 20, 12);
    EXPECT_NEAR(right[0], 20, 12);
    EXPECT_NEAR(right[2], 230, 12);
  }
  std::vector<uint8_t> gray(8 * 8, 77);
  WriteJpeg(t.Path("gray.jpeg"), 8, 8, 1, gray);
  RgbImage g = MustDecode(t.Path("gray.jpeg"));
  const std::vector<uint8_t> p = Pixel(g, 4, 4);
  EXPECT_NEAR(p[0], 77, 2);
  EXPECT_EQ(p[0], p[1]);
  EXPECT_EQ(p[1], p[2]);
}

TEST(ImageDecodeTest, CorruptFilesNameTheFile) {
  TempDir t;
  std::vector<uint8_t> data(8 * 8 * 3, 128);
  WritePng(t.Path("ok.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8, data);
  // Noise compresses badly, so half the file ends inside the picture data.
  std::vector<uint8_t> noise(64 * 64 * 3);
  for (size_t i = 0; i < noise.size(); ++i) {
    noise[i] = static_cast<uint8_t>((i * 7919) % 251);
  }
  WriteJpeg(t.Path("ok.jpg"), 64, 64, 3, noise);
  const std::string png = ReadBytes(t.Path("ok.png"));
  const std::string jpg = ReadBytes(t.Path("ok.jpg"));

  auto expect_error = [](const std::string& bytes, const std::string& name,
                         const std::string& what) {
    auto r = DecodeImage(bytes, name);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_CONTAINS(std::string(r.status().message()), name);
    EXPECT_CONTAINS(std::string(r.status().message()), what) << name;
  };
  expect_error(png.substr(0, png.size() / 2), "half.png", "PNG");
  std::string flipped = png;
  flipped[40] ^= 0x55;  // Inside the IDAT data: a CRC or zlib error.
  expect_error(flipped, "flipped.png", "corrupt or unsupported PNG");
  expect_error(jpg.substr(0, jpg.size() / 2), "half.jpg", "truncated");
  expect_error(jpg.substr(0, 40), "header.jpg", "JPEG");
  expect_error("GIF89a....", "anim.gif", "not a PNG or JPEG");
  expect_error("", "empty.png", "not a PNG or JPEG");

  auto missing = DecodeImageFile(t.Path("absent.png"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(ImageDecodeTest, RefusesHugeDimensions) {
  TempDir t;
  // A valid header claiming 10000 x 10000 pixels (100 megapixels): refused
  // before any pixel buffer is allocated.
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  FILE* f = std::fopen(t.Path("huge.png").c_str(), "wb");
  ASSERT_NE(f, nullptr);
  if (setjmp(png_jmpbuf(png))) FAIL();
  png_init_io(png, f);
  png_set_IHDR(png, info, 10000, 10000, 8, PNG_COLOR_TYPE_GRAY,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
  auto r = DecodeImageFile(t.Path("huge.png"));
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(std::string(r.status().message()), "64 megapixels");
}

TEST(ImageResizeTest, BilinearMatchesHandValues) {
  RgbImage in;
  in.width = 2;
  in.height = 1;
  in.rgb = {0, 0, 0, 200, 100, 40};
  // Upscaling 2 -> 4: centres at 0.25, 0.75, 1.25, 1.75 of the source; the
  // edge outputs clamp to the edge pixel, the inner ones mix 3:1 and 1:3.
  RgbImage up = ResizeBilinear(in, 4, 1);
  EXPECT_EQ(up.rgb, (std::vector<uint8_t>{0, 0, 0, 50, 25, 10, 150, 75, 30, 200,
                                          100, 40}));
  // Downscaling averages (PIL widens the filter): 4 -> 2 of 0,100,200,250.
  RgbImage row;
  row.width = 4;
  row.height = 1;
  for (int v : {0, 100, 200, 250}) {
    row.rgb.insert(row.rgb.end(),
                   {static_cast<uint8_t>(v), static_cast<uint8_t>(v),
                    static_cast<uint8_t>(v)});
  }
  RgbImage down = ResizeBilinear(row, 2, 1);
  // Output 0: centre 1.0, support 2, taps 0..2 at distances 0.5, 0.5, 1.5
  // (divided by 2 for the triangle): weights 0.75, 0.75, 0.25, so
  // (0*0.75 + 100*0.75 + 200*0.25) / 1.75 = 71.4 -> 71.
  EXPECT_EQ(down.rgb[0], 71);
  // Output 1: centre 3.0, taps 1..3 at distances 1.5, 0.5, 0.5 ->
  // (100*0.25 + 200*0.75 + 250*0.75) / 1.75 = 207.1 -> 207.
  EXPECT_EQ(down.rgb[3], 207);
  // A constant picture stays constant at any size.
  RgbImage flat;
  flat.width = 5;
  flat.height = 7;
  flat.rgb.assign(5 * 7 * 3, 93);
  for (auto [w, h] : {std::pair{3, 3}, {11, 2}, {1, 1}}) {
    RgbImage r = ResizeBilinear(flat, w, h);
    EXPECT_EQ(r.rgb, std::vector<uint8_t>(w * h * 3, 93));
  }
}

// A solid picture of `rgb`, side 8.
std::vector<uint8_t> Solid(uint8_t r, uint8_t g, uint8_t b, int side = 8) {
  std::vector<uint8_t> d;
  for (int i = 0; i < side * side; ++i) d.insert(d.end(), {r, g, b});
  return d;
}

TEST(ImageDatasetTest, FolderPerClassSortedByPath) {
  TempDir t;
  WritePng(t.Path("data/red/b.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8,
           Solid(250, 0, 0));
  WritePng(t.Path("data/red/a.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8,
           Solid(240, 0, 0));
  WriteJpeg(t.Path("data/blue/x.JPG"), 8, 8, 3, Solid(0, 0, 250));
  std::ofstream(t.Path("data/red/notes.txt")) << "not a picture";
  std::ofstream(t.Path("data/.hidden/y.png")) << "skipped";
  ImageReadOptions o;
  o.image_size = 4;
  auto rows = ReadImageExamples(t.Path("data"), "data", o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].image, "blue/x.JPG");
  EXPECT_EQ((*rows)[0].label, "blue");
  EXPECT_EQ((*rows)[1].image, "red/a.png");
  EXPECT_EQ((*rows)[2].image, "red/b.png");
  EXPECT_EQ((*rows)[2].label, "red");
  ASSERT_EQ((*rows)[1].pixels.size(), 4u * 4 * 3);
  EXPECT_EQ((*rows)[1].pixels[0], 240);
  EXPECT_EQ((*rows)[1].pixels[1], 0);
  auto labels = ImageLabelSet(*rows, "data");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(*labels, (std::vector<std::string>{"blue", "red"}));

  // A corrupt picture is named with its folder path.
  std::ofstream(t.Path("data/red/c.png")) << "\x89PNG\r\n\x1a\nbroken";
  auto bad = ReadImageExamples(t.Path("data"), "data", o);
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(std::string(bad.status().message()), "data/red/c.png");
  // Pictures outside class folders have no label for training.
  fs::remove(t.Path("data/red/c.png"));
  WritePng(t.Path("data/loose.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8,
           Solid(1, 2, 3));
  auto loose = ReadImageExamples(t.Path("data"), "data", o);
  ASSERT_FALSE(loose.ok());
  EXPECT_CONTAINS(std::string(loose.status().message()), "loose.png");
  o.labels_optional = true;
  auto predict = ReadImageExamples(t.Path("data"), "data", o);
  ASSERT_TRUE(predict.ok()) << predict.status();
  EXPECT_EQ(predict->size(), 4u);
  // Sorted by path: blue/x.JPG, loose.png, red/a.png, red/b.png.
  EXPECT_EQ((*predict)[1].image, "loose.png");
  EXPECT_EQ((*predict)[1].label, "");
}

TEST(ImageDatasetTest, TarOfClassFolders) {
  TempDir t;
  WritePng(t.Path("pics/cat/1.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8,
           Solid(9, 9, 9));
  WriteJpeg(t.Path("pics/dog/2.jpg"), 8, 8, 3, Solid(200, 200, 200));
  std::ofstream(t.Path("pics/dog/readme.txt")) << "skipped";
  // GNU tar's default format, with "./" prefixes, as users make them.
  ASSERT_EQ(std::system(("tar cf " + t.Path("train.tar") + " -C " +
                         t.Path("pics") + " .")
                            .c_str()),
            0);
  ImageReadOptions o;
  o.image_size = 8;
  // The cached copy of an upload has no extension: the header decides.
  fs::copy_file(t.Path("train.tar"), t.Path("blob"));
  auto rows = ReadImageExamples(t.Path("blob"), "train.tar", o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].image, "cat/1.png");
  EXPECT_EQ((*rows)[0].label, "cat");
  EXPECT_EQ((*rows)[0].pixels, Solid(9, 9, 9));
  EXPECT_EQ((*rows)[1].label, "dog");
  EXPECT_NEAR((*rows)[1].pixels[0], 200, 3);
  // POSIX ustar too, and a truncated archive is an error naming the file.
  ASSERT_EQ(std::system(("tar --format=ustar -cf " + t.Path("posix.tar") +
                         " -C " + t.Path("pics") + " cat dog")
                            .c_str()),
            0);
  auto posix = ReadImageExamples(t.Path("posix.tar"), "posix.tar", o);
  ASSERT_TRUE(posix.ok()) << posix.status();
  EXPECT_EQ(posix->size(), 2u);
  const std::string bytes = ReadBytes(t.Path("posix.tar"));
  std::ofstream(t.Path("cut.tar"), std::ios::binary)
      << bytes.substr(0, 1024 + 100);
  auto cut = ReadImageExamples(t.Path("cut.tar"), "cut.tar", o);
  ASSERT_FALSE(cut.ok());
  EXPECT_CONTAINS(std::string(cut.status().message()), "cut.tar");
}

TEST(ImageDatasetTest, JsonlPathsAndPixels) {
  TempDir t;
  WritePng(t.Path("imgs/one.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8,
           Solid(0, 200, 0));
  std::ofstream(t.Path("train.jsonl"))
      << R"({"image": "imgs/one.png", "label": "green"})"
      << "\n\n"
      << R"({"pixels": [[[255, 0, 0], [255, 0, 0]], [[255, 0, 0], [255, 0, 0]]], "label": 3})"
      << "\n"
      << R"({"pixels": [9, 9, 9, 9], "width": 2, "height": 2, "label": "gray"})"
      << "\n";
  ImageReadOptions o;
  o.image_size = 2;
  auto rows = ReadImageExamples(t.Path("train.jsonl"), "train.jsonl", o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].image, "imgs/one.png");
  EXPECT_EQ((*rows)[0].pixels[1], 200);
  EXPECT_EQ((*rows)[1].label, "3");
  EXPECT_EQ((*rows)[1].line, 3);
  EXPECT_EQ((*rows)[1].image, "train.jsonl:3");
  EXPECT_EQ((*rows)[1].pixels, Solid(255, 0, 0, 2));
  EXPECT_EQ((*rows)[2].pixels, Solid(9, 9, 9, 2));

  auto error_for = [&](const std::string& line) {
    std::ofstream(t.Path("bad.jsonl")) << "\n" << line << "\n";
    auto r = ReadImageExamples(t.Path("bad.jsonl"), "bad.jsonl", o);
    EXPECT_FALSE(r.ok()) << line;
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  EXPECT_CONTAINS(error_for(R"({"image": "../secret.png", "label": "a"})"),
                  "bad.jsonl:2: image path \"../secret.png\"");
  EXPECT_CONTAINS(error_for(R"({"image": "/etc/passwd", "label": "a"})"),
                  "must be relative");
  EXPECT_CONTAINS(error_for(R"({"image": "imgs/none.png", "label": "a"})"),
                  "bad.jsonl:2: image \"imgs/none.png\": no such");
  EXPECT_CONTAINS(error_for(R"({"image": "imgs/one.png"})"),
                  "bad.jsonl:2: missing field \"label\"");
  EXPECT_CONTAINS(
      error_for(
          R"({"pixels": [1, 2, 3], "width": 2, "height": 2, "label": "a"})"),
      "bad.jsonl:2: \"pixels\" has 3 values");
  EXPECT_CONTAINS(error_for(R"({"pixels": [[[1, 2, 300]]], "label": "a"})"),
                  "outside [0, 255]");
  EXPECT_CONTAINS(error_for(R"({"text": "x", "label": "a"})"),
                  "missing field \"image\"");
  EXPECT_CONTAINS(error_for("{not json"), "bad.jsonl:2: invalid JSON");
}

TEST(ImageDatasetTest, CsvWithRenamedColumns) {
  TempDir t;
  WriteJpeg(t.Path("p/a.jpg"), 8, 8, 3, Solid(10, 10, 240));
  WritePng(t.Path("p/b,c.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8,
           Solid(240, 10, 10));
  std::ofstream(t.Path("rows.csv"))
      << "file,cls\np/a.jpg,blue\n\"p/b,c.png\",red\n";
  ImageReadOptions o;
  o.image_column = "file";
  o.label_column = "cls";
  o.image_size = 8;
  auto rows = ReadImageExamples(t.Path("rows.csv"), "rows.csv", o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[1].image, "p/b,c.png");
  EXPECT_EQ((*rows)[1].label, "red");
  EXPECT_EQ((*rows)[1].line, 3);
  o.image_column = "image";
  auto bad = ReadImageExamples(t.Path("rows.csv"), "rows.csv", o);
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(std::string(bad.status().message()),
                  "rows.csv:1: the header has no \"image\" column");
}

TEST(ImageDatasetTest, ProcessorConfig) {
  TempDir t;
  ASSERT_TRUE(WriteImageProcessorConfig(t.dir(), 32).ok());
  const nlohmann::json j =
      nlohmann::json::parse(ReadBytes(t.dir() + "/preprocessor_config.json"));
  EXPECT_EQ(j["size"]["height"], 32);
  EXPECT_EQ(j["do_normalize"], true);
  EXPECT_EQ(j["image_mean"], nlohmann::json({0.5, 0.5, 0.5}));
  EXPECT_EQ(j["image_std"], nlohmann::json({0.5, 0.5, 0.5}));
  EXPECT_NEAR(j["rescale_factor"].get<double>(), 1.0 / 255, 1e-12);
}

// The task over a folder: normalised batches, labels, validation checks,
// metrics and predictions in path order.
TEST(ImageClassificationTaskTest, PrepareTrainEvaluatePredict) {
  TempDir t;
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> classes = {
      {"blue", Solid(0, 0, 255)},
      {"green", Solid(0, 255, 0)},
      {"red", Solid(255, 0, 0)}};
  for (const auto& [name, px] : classes) {
    for (int i = 0; i < 4; ++i) {
      WritePng(t.Path("train/" + name + "/" + std::to_string(i) + ".png"), 8, 8,
               PNG_COLOR_TYPE_RGB, 8, px);
    }
    WritePng(t.Path("val/" + name + "/v.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8, px);
  }
  auto task = CreateTask("image-classification");
  ASSERT_TRUE(task.ok()) << task.status();
  auto preset = FindPreset("preset:cnn-small");
  ASSERT_TRUE(preset.ok());
  ModelConfig config = preset->config;
  TrainParams params;
  params.image_size = 8;
  TaskContext ctx;
  ctx.params = &params;
  ctx.model_config = &config;
  TaskData data{t.Path("train"), "train", t.Path("val"), "val"};
  ASSERT_TRUE((*task)->Prepare(data, ctx).ok());
  EXPECT_EQ((*task)->train_size(), 12);
  EXPECT_EQ((*task)->validation_size(), 3);
  (*task)->ConfigureModel(&config);
  EXPECT_EQ(config.id2label,
            (std::vector<std::string>{"blue", "green", "red"}));
  EXPECT_EQ(config.image_size, 8);

  TaskBatch b = (*task)->TrainBatch({0, 11}, torch::kCPU, nullptr);
  ASSERT_EQ(b.inputs.pixel_values.sizes(), (std::vector<int64_t>{2, 3, 8, 8}));
  // Blue picture: channels (0, 0, 255) -> (-1, -1, 1).
  EXPECT_FLOAT_EQ(b.inputs.pixel_values[0][0][3][3].item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(b.inputs.pixel_values[0][2][3][3].item<float>(), 1.0f);
  EXPECT_EQ(b.targets.at("labels")[0].item<int64_t>(), 0);
  EXPECT_EQ(b.targets.at("labels")[1].item<int64_t>(), 2);

  torch::manual_seed(0);
  auto model = CreateModel(config, HeadKind::kSequenceClassification);
  ASSERT_TRUE(model.ok()) << model.status();
  torch::optim::Adam opt((*model)->parameters(),
                         torch::optim::AdamOptions(1e-2));
  std::vector<size_t> all(12);
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  for (int step = 0; step < 60; ++step) {
    TaskBatch batch = (*task)->TrainBatch(all, torch::kCPU, nullptr);
    torch::Tensor loss = (*task)->Loss((*model)->forward(batch.inputs), batch);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  (*model)->eval();
  torch::NoGradGuard no_grad;
  auto metrics = (*task)->Evaluate(**model, 2, torch::kCPU);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_DOUBLE_EQ((*metrics)["accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ((*metrics)["top5_accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ((*metrics)["f1"].get<double>(), 1.0);
  EXPECT_EQ((*metrics)["confusion_matrix"],
            nlohmann::json({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}));
  EXPECT_LT((*metrics)["loss"].get<double>(), 0.5);
  EXPECT_EQ((*task)->default_metric(), "accuracy");

  auto predictions =
      (*task)->Predict(**model, t.Path("val"), "val", ctx, torch::kCPU);
  ASSERT_TRUE(predictions.ok()) << predictions.status();
  ASSERT_EQ(predictions->size(), 3u);
  EXPECT_EQ((*predictions)[0]["image"], "blue/v.png");
  EXPECT_EQ((*predictions)[0]["label"], "blue");
  EXPECT_EQ((*predictions)[2]["label"], "red");
  EXPECT_TRUE((*predictions)[1]["probabilities"].contains("green"));

  // Validation labels that training lacks are named.
  WritePng(t.Path("val/purple/p.png"), 8, 8, PNG_COLOR_TYPE_RGB, 8,
           Solid(128, 0, 128));
  auto again = CreateTask("image-classification");
  absl::Status s = (*again)->Prepare(data, ctx);
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(std::string(s.message()),
                  "val: labels not in the training data: purple");

  // ViT takes only its own size.
  auto vit = FindPreset("preset:vit-tiny");
  ASSERT_TRUE(vit.ok());
  ctx.model_config = &vit->config;
  absl::Status size = (*again)->Prepare(data, ctx);
  ASSERT_FALSE(size.ok());
  EXPECT_CONTAINS(std::string(size.message()), "params[image_size]");
}

}  // namespace
}  // namespace lathe
