#ifndef MODELSERVER_SERVER_IMAGE_IMAGE_DECODE_H_
#define MODELSERVER_SERVER_IMAGE_IMAGE_DECODE_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace modelserver {

// A decoded image: 8-bit RGB, rows top to bottom, pixels interleaved (HWC).
struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> pixels;  // width * height * 3
};

struct DecodeLimits {
  // Width x height past which an image is refused before its pixels are
  // allocated (the header is read first).
  int64_t max_pixels = 40'000'000;
};

// Decodes one encoded image -- JPEG (libjpeg-turbo), PNG (libspng) or WebP
// (libwebp), told apart by their signatures -- into RGB the way PIL's
// `Image.open(f).convert("RGB")` does: grayscale replicated, palette looked up,
// alpha dropped (not composited), 16-bit samples reduced to their high byte. The
// EXIF orientation (JPEG APP1, PNG eXIf; read with libexif) is applied as PIL's
// `ImageOps.exif_transpose` does. A truncated or corrupt file, an unknown format,
// a CMYK JPEG or an image over `limits` gives INVALID_ARGUMENT saying which.
// Thread-safe; every input may be hostile.
absl::StatusOr<RgbImage> DecodeImage(std::string_view bytes, const DecodeLimits& limits);

// The EXIF orientation (1..8) in an EXIF block ("Exif\0\0" + TIFF, or bare TIFF);
// 1 when absent or unreadable.
int ExifOrientation(const uint8_t* data, size_t size);

// Applies an EXIF orientation (2..8; 1 and others leave the image as it is).
RgbImage ApplyOrientation(RgbImage image, int orientation);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_IMAGE_IMAGE_DECODE_H_
