#include "server/image/image_decode.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

// C libraries; libjpeg needs <cstdio> first.
#include <jerror.h>
#include <jpeglib.h>
#include <libexif/exif-data.h>
#include <spng.h>
#include <webp/decode.h>

namespace modelserver {
namespace {

constexpr char kJpegSignature[] = "\xFF\xD8\xFF";
constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";
// Progressive JPEGs can hold any number of scans, each a full pass over the
// coefficients; libjpeg-turbo's advice is to bound them.
constexpr int kMaxJpegScans = 1000;

absl::Status TooLarge(int64_t width, int64_t height, const DecodeLimits& limits) {
  return absl::InvalidArgumentError(absl::StrCat(width, "x", height,
                                                 " pixels is over the limit of ", limits.max_pixels,
                                                 " pixels (--max_image_pixels)"));
}

absl::Status CheckSize(int64_t width, int64_t height, const DecodeLimits& limits) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("image is ", width, "x", height, " pixels"));
  }
  if (width > limits.max_pixels / height) return TooLarge(width, height, limits);
  return absl::OkStatus();
}

// ---- JPEG (libjpeg's error handling is a longjmp out of the library) ----

struct JpegError {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated = false;
};

[[noreturn]] void JpegErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

// Warnings are not printed; a premature end of data is an error (libjpeg would
// fill the rest with gray, PIL says "image file is truncated").
void JpegMessage(j_common_ptr cinfo, int level) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) err->truncated = true;
}

void JpegProgress(j_common_ptr cinfo) {
  if (cinfo->is_decompressor == 0) return;
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxJpegScans) {
    auto* err = reinterpret_cast<JpegError*>(cinfo->err);
    std::snprintf(err->message, sizeof(err->message), "more than %d progressive scans",
                  kMaxJpegScans);
    longjmp(err->jump, 1);
  }
}

// Fills *out (allocated here, before any longjmp can skip a constructor) and
// *orientation. Returns an empty string on success, else the problem.
std::string DecodeJpegInto(std::string_view bytes, const DecodeLimits& limits, RgbImage* out,
                           int* orientation) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  jpeg_progress_mgr progress;
  std::string problem;  // constructed before setjmp; only assigned after a longjmp
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = JpegErrorExit;
  err.pub.emit_message = JpegMessage;
  if (setjmp(err.jump)) {
    problem = err.message;
    jpeg_destroy_decompress(&cinfo);
    return problem;
  }
  jpeg_create_decompress(&cinfo);
  progress.progress_monitor = JpegProgress;
  cinfo.progress = &progress;
  // libjpeg's own working memory (progressive coefficient buffers) is bounded too.
  cinfo.mem->max_memory_to_use = static_cast<long>(limits.max_pixels) * 8;
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  if (absl::Status s = CheckSize(cinfo.image_width, cinfo.image_height, limits); !s.ok()) {
    jpeg_destroy_decompress(&cinfo);
    return std::string(s.message());
  }
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    return "CMYK JPEGs are not supported; convert it to RGB";
  }
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 && std::memcmp(m->data, "Exif", 4) == 0) {
      *orientation = ExifOrientation(m->data, m->data_length);
      break;
    }
  }
  // PIL's settings: RGB out, the default (islow) DCT and fancy upsampling.
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out->width = cinfo.output_width;
  out->height = cinfo.output_height;
  try {  // no exception may pass through libjpeg's frames or leave cinfo allocated
    out->pixels.resize(static_cast<size_t>(out->width * out->height * 3));
  } catch (const std::bad_alloc&) {
    jpeg_destroy_decompress(&cinfo);
    return "out of memory for the decoded pixels";
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->pixels.data() +
                   static_cast<size_t>(cinfo.output_scanline) * static_cast<size_t>(out->width) * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (err.truncated) break;
  }
  if (!err.truncated) jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (err.truncated) return "the JPEG data is truncated";
  return "";
}

absl::StatusOr<RgbImage> DecodeJpeg(std::string_view bytes, const DecodeLimits& limits) {
  RgbImage image;
  int orientation = 1;
  const std::string problem = DecodeJpegInto(bytes, limits, &image, &orientation);
  if (!problem.empty()) return absl::InvalidArgumentError(absl::StrCat("JPEG: ", problem));
  return ApplyOrientation(std::move(image), orientation);
}

// ---- PNG ----

struct SpngContext {
  spng_ctx* ctx = spng_ctx_new(0);
  ~SpngContext() { spng_ctx_free(ctx); }
};

absl::Status SpngError(int code) {
  return absl::InvalidArgumentError(absl::StrCat("PNG: ", spng_strerror(code)));
}

absl::StatusOr<RgbImage> DecodePng(std::string_view bytes, const DecodeLimits& limits) {
  SpngContext c;
  if (c.ctx == nullptr) return absl::ResourceExhaustedError("PNG: cannot allocate a decoder");
  // Ancillary chunks (text, ICC, ...) are bounded: 1 MiB each, 8 MiB in all.
  spng_set_chunk_limits(c.ctx, 1 << 20, 8 << 20);
  spng_set_image_limits(c.ctx, 1u << 24, 1u << 24);
  if (int r = spng_set_png_buffer(c.ctx, bytes.data(), bytes.size()); r != 0) return SpngError(r);
  spng_ihdr ihdr;
  if (int r = spng_get_ihdr(c.ctx, &ihdr); r != 0) return SpngError(r);
  if (absl::Status s = CheckSize(ihdr.width, ihdr.height, limits); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("PNG: ", s.message()));
  }
  size_t size = 0;
  if (int r = spng_decoded_image_size(c.ctx, SPNG_FMT_RGB8, &size); r != 0) return SpngError(r);
  RgbImage image;
  image.width = ihdr.width;
  image.height = ihdr.height;
  if (size != static_cast<size_t>(image.width * image.height * 3)) {
    return absl::InternalError("PNG: unexpected decoded size");
  }
  image.pixels.resize(size);
  if (int r = spng_decode_image(c.ctx, image.pixels.data(), size, SPNG_FMT_RGB8, 0); r != 0) {
    return SpngError(r);
  }
  spng_exif exif;
  int orientation = 1;
  if (spng_get_exif(c.ctx, &exif) == 0 && exif.data != nullptr) {
    orientation = ExifOrientation(reinterpret_cast<const uint8_t*>(exif.data), exif.length);
  }
  return ApplyOrientation(std::move(image), orientation);
}

// ---- WebP ----

absl::StatusOr<RgbImage> DecodeWebp(std::string_view bytes, const DecodeLimits& limits) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  int width = 0;
  int height = 0;
  if (!WebPGetInfo(data, bytes.size(), &width, &height)) {
    return absl::InvalidArgumentError("WebP: not a valid WebP bitstream");
  }
  if (absl::Status s = CheckSize(width, height, limits); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("WebP: ", s.message()));
  }
  RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(image.width * image.height * 3));
  if (WebPDecodeRGBInto(data, bytes.size(), image.pixels.data(), image.pixels.size(), width * 3) ==
      nullptr) {
    return absl::InvalidArgumentError("WebP: the data is truncated or corrupt");
  }
  return image;
}

}  // namespace

int ExifOrientation(const uint8_t* data, size_t size) {
  std::string block;
  if (size < 6 || std::memcmp(data, "Exif\0\0", 6) != 0) {  // bare TIFF (PNG's eXIf)
    block.assign("Exif\0\0", 6);
  }
  block.append(reinterpret_cast<const char*>(data), size);
  ExifData* exif = exif_data_new_from_data(reinterpret_cast<const unsigned char*>(block.data()),
                                           static_cast<unsigned int>(block.size()));
  if (exif == nullptr) return 1;
  int orientation = 1;
  ExifEntry* entry = exif_data_get_entry(exif, EXIF_TAG_ORIENTATION);
  if (entry != nullptr && entry->format == EXIF_FORMAT_SHORT && entry->components >= 1 &&
      entry->size >= 2) {
    orientation = exif_get_short(entry->data, exif_data_get_byte_order(exif));
  }
  exif_data_unref(exif);
  return orientation >= 1 && orientation <= 8 ? orientation : 1;
}

RgbImage ApplyOrientation(RgbImage image, int orientation) {
  if (orientation < 2 || orientation > 8) return image;
  const int64_t w = image.width;
  const int64_t h = image.height;
  const bool swap = orientation >= 5;  // transposing orientations swap width and height
  RgbImage out;
  out.width = swap ? h : w;
  out.height = swap ? w : h;
  out.pixels.resize(image.pixels.size());
  // The source pixel of output (x, y), as PIL's ImageOps.exif_transpose maps them:
  // 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270,
  // 7 TRANSVERSE, 8 ROTATE_90 -- a transpose (5..8), then flips of x and y.
  static constexpr bool kFlipX[9] = {false, false, true, true, false, false, false, true, true};
  static constexpr bool kFlipY[9] = {false, false, false, true, true, false, true, true, false};
  const bool flip_x = kFlipX[orientation];
  const bool flip_y = kFlipY[orientation];
  for (int64_t y = 0; y < out.height; ++y) {
    for (int64_t x = 0; x < out.width; ++x) {
      int64_t sx = swap ? y : x;
      int64_t sy = swap ? x : y;
      if (flip_x) sx = w - 1 - sx;
      if (flip_y) sy = h - 1 - sy;
      std::memcpy(&out.pixels[static_cast<size_t>((y * out.width + x) * 3)],
                  &image.pixels[static_cast<size_t>((sy * w + sx) * 3)], 3);
    }
  }
  return out;
}

absl::StatusOr<RgbImage> DecodeImage(std::string_view bytes, const DecodeLimits& limits) {
  if (bytes.empty()) return absl::InvalidArgumentError("the image is empty (0 bytes)");
  if (bytes.size() >= 3 && bytes.substr(0, 3) == std::string_view(kJpegSignature, 3)) {
    return DecodeJpeg(bytes, limits);
  }
  if (bytes.size() >= 8 && bytes.substr(0, 8) == std::string_view(kPngSignature, 8)) {
    return DecodePng(bytes, limits);
  }
  if (bytes.size() >= 12 && bytes.substr(0, 4) == "RIFF" && bytes.substr(8, 4) == "WEBP") {
    return DecodeWebp(bytes, limits);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "not a JPEG, PNG or WebP image (it starts with \"",
      absl::CHexEscape(absl::string_view(bytes.data(), std::min<size_t>(8, bytes.size()))), "\")"));
}

}  // namespace modelserver
