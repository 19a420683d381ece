// libFuzzer target for the image decoders (server/image/image_decode.cc: JPEG
// through libjpeg-turbo, PNG through libspng, WebP through libwebp, EXIF through
// libexif): any bytes must give an image or INVALID_ARGUMENT, never a crash, a
// leak or an allocation past the pixel limit.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "server/image/image_decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  modelserver::DecodeLimits limits;
  limits.max_pixels = 4'000'000;  // keeps each input's memory small
  auto image =
      modelserver::DecodeImage(std::string_view(reinterpret_cast<const char*>(data), size), limits);
  if (image.ok() && image->pixels.size() != static_cast<size_t>(image->width * image->height * 3)) {
    __builtin_trap();
  }
  // The EXIF reader alone, on raw bytes.
  (void)modelserver::ExifOrientation(data, size);
  return 0;
}
