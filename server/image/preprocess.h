#ifndef MODELSERVER_SERVER_IMAGE_PREPROCESS_H_
#define MODELSERVER_SERVER_IMAGE_PREPROCESS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/image/image_decode.h"

namespace modelserver {

// How images become a model's input, as torchvision's transforms do it:
//   Resize(resize, interpolation, antialias) -> CenterCrop(crop) -> ToTensor()
//   -> Normalize(mean, std)
// Stored with a version (manifest field "preprocess"); the default is the
// ImageNet recipe every torchvision classifier documents.
struct ImagePreprocess {
  enum class Interpolation { kBilinear, kBicubic };
  // One value: the shorter side's new length, the longer one scaled as torchvision
  // does (int(resize * long / short), truncated). Two: [height, width] exactly.
  // Empty: no resize.
  std::vector<int64_t> resize = {256};
  // One value: a square; two: [height, width]. Empty: no crop (then resize must
  // be [height, width] so that every image gives the same shape).
  std::vector<int64_t> crop = {224};
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};
  std::array<float, 3> std = {0.229f, 0.224f, 0.225f};
  Interpolation interpolation = Interpolation::kBilinear;

  // The [3, height, width] every image becomes.
  int64_t OutputHeight() const;
  int64_t OutputWidth() const;
  std::vector<int64_t> OutputShape() const { return {3, OutputHeight(), OutputWidth()}; }
};

// Parses the manifest's JSON object, e.g.
//   {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406],
//    "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"}
// Absent keys keep the defaults. INVALID_ARGUMENT naming the bad key, or for
// more than 4 KiB of text (refused before parsing).
absl::StatusOr<ImagePreprocess> ParsePreprocess(std::string_view json);
// The JSON object ParsePreprocess reads back.
std::string PreprocessJson(const ImagePreprocess& p);

// The size torchvision's Resize gives an image of `height` x `width`.
std::array<int64_t, 2> ResizedSize(const ImagePreprocess& p, int64_t height, int64_t width);

// Applies `p` to one decoded image, writing 3 x OutputHeight() x OutputWidth()
// floats (channel-major, normalised) to `out`. The resize is torch's antialiased
// interpolation (what torchvision runs on tensors), rounded and clamped to 8 bits
// as torchvision does for uint8 images; one channel at a time, so its working
// memory is about 4 bytes per input pixel. Thread-safe.
absl::Status TransformImage(const RgbImage& image, const ImagePreprocess& p, float* out);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_IMAGE_PREPROCESS_H_
