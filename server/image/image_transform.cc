// The tensor half of the image preprocessing: the only file under server/image/
// that includes torch.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/image/preprocess.h"

namespace modelserver {
namespace {

// torchvision's CenterCrop offset: int(round((size - crop) / 2.0)), Python's
// round (half to even), after padding a too-small image with zeros.
struct CropWindow {
  int64_t pad_top = 0;
  int64_t pad_left = 0;
  int64_t top = 0;
  int64_t left = 0;
};

int64_t PadBefore(int64_t crop, int64_t size) { return crop > size ? (crop - size) / 2 : 0; }
int64_t PadAfter(int64_t crop, int64_t size) { return crop > size ? (crop - size + 1) / 2 : 0; }

int64_t CropOffset(int64_t size, int64_t crop) {
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(size - crop) / 2.0));
}

CropWindow Window(int64_t height, int64_t width, int64_t crop_h, int64_t crop_w) {
  CropWindow w;
  w.pad_top = PadBefore(crop_h, height);
  w.pad_left = PadBefore(crop_w, width);
  const int64_t padded_h = height + w.pad_top + PadAfter(crop_h, height);
  const int64_t padded_w = width + w.pad_left + PadAfter(crop_w, width);
  w.top = CropOffset(padded_h, crop_h);
  w.left = CropOffset(padded_w, crop_w);
  return w;
}

}  // namespace

absl::Status TransformImage(const RgbImage& image, const ImagePreprocess& p, float* out) {
  const int64_t out_h = p.OutputHeight();
  const int64_t out_w = p.OutputWidth();
  if (out_h <= 0 || out_w <= 0 || image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width * image.height * 3)) {
    return absl::InvalidArgumentError("image or preprocessing has no size");
  }
  const auto [new_h, new_w] = ResizedSize(p, image.height, image.width);
  const bool resize = new_h != image.height || new_w != image.width;
  const CropWindow win = Window(new_h, new_w, out_h, out_w);
  try {
    c10::InferenceMode guard;
    // HWC bytes, viewed without a copy.
    const at::Tensor hwc = at::from_blob(const_cast<uint8_t*>(image.pixels.data()),
                                         {image.height, image.width, 3}, at::kByte);
    for (int64_t c = 0; c < 3; ++c) {
      at::Tensor plane = hwc.select(2, c).to(at::kFloat).contiguous();
      if (resize) {
        at::Tensor x = plane.view({1, 1, image.height, image.width});
        if (p.interpolation == ImagePreprocess::Interpolation::kBicubic) {
          x = at::_upsample_bicubic2d_aa(x, {new_h, new_w}, false, c10::nullopt, c10::nullopt);
        } else {
          x = at::_upsample_bilinear2d_aa(x, {new_h, new_w}, false, c10::nullopt, c10::nullopt);
        }
        // Back to 8 bits as torchvision does for uint8 images (and PIL always does).
        plane = x.round_().clamp_(0, 255).view({new_h, new_w}).contiguous();
      }
      const float* src = plane.data_ptr<float>();
      float* dst = out + c * out_h * out_w;
      for (int64_t y = 0; y < out_h; ++y) {
        const int64_t sy = y + win.top - win.pad_top;
        for (int64_t x = 0; x < out_w; ++x) {
          const int64_t sx = x + win.left - win.pad_left;
          const bool inside = sy >= 0 && sy < new_h && sx >= 0 && sx < new_w;
          const float v = inside ? src[sy * new_w + sx] : 0.0f;
          // ToTensor (v / 255), then Normalize ((v - mean) / std).
          dst[y * out_w + x] =
              (v / 255.0f - p.mean[static_cast<size_t>(c)]) / p.std[static_cast<size_t>(c)];
        }
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("image preprocessing failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace modelserver
