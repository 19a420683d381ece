#include "server/model/vgg/vgg_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/model/state_dict_writer.h"
#include "server/model/tensor_convert.h"
#include "server/model/vgg/vgg_writer.h"

namespace modelserver {
namespace {
constexpr int64_t kMaxSide = 8192;
}  // namespace

absl::StatusOr<std::shared_ptr<VggModel>> VggModel::Create(std::shared_ptr<VggImpl> vgg,
                                                           ModelFormat format,
                                                           const std::string& device,
                                                           const Numerics& numerics) {
  ModelInfo info;
  info.architecture = vgg->config().Name();
  info.format = format;
  info.device = device;
  at::Device dev(at::kCPU);
  try {
    dev = at::Device(device);
    if (!dev.is_cpu()) vgg->to(dev);
    AddParameterBytes(vgg->parameters(), &info);
    AddParameterBytes(vgg->buffers(), &info);
  } catch (const std::exception& e) {
    return TorchError(e, absl::StrCat("moving the model to ", device));
  }
  return std::shared_ptr<VggModel>(new VggModel(std::move(vgg), dev, numerics, std::move(info)));
}

VggModel::VggModel(std::shared_ptr<VggImpl> vgg, at::Device device, const Numerics& numerics,
                   ModelInfo info)
    : TorchModel(info, device, numerics, absl::StatusCode::kInternal,
                 absl::StrCat(info.architecture, " forward pass")),
      vgg_(std::move(vgg)) {}

absl::Status VggModel::ValidateInput(DType dtype, const std::vector<int64_t>& shape) const {
  const VggConfig& c = vgg_->config();
  const std::string expected =
      absl::StrCat("[N,", c.in_channels, ",H,W] or [", c.in_channels, ",H,W]");
  if (dtype != DType::kFloat32) {
    return absl::InvalidArgumentError(
        absl::StrCat("input dtype ", DTypeName(dtype), " is not supported, expected float32"));
  }
  if (shape.size() != 3 && shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat("input shape ", ShapeString(shape), " has rank ",
                                                   shape.size(), ", expected ", expected));
  }
  const size_t o = shape.size() - 3;
  if (o == 1 && shape[0] < 1) {
    return absl::InvalidArgumentError(absl::StrCat("input shape ", ShapeString(shape),
                                                   " is empty (batch size ", shape[0],
                                                   "), expected at least one sample"));
  }
  if (shape[o] != c.in_channels) {
    return absl::InvalidArgumentError(absl::StrCat("input shape ", ShapeString(shape),
                                                   o == 0 ? " (read as [C,H,W])" : "", " has ",
                                                   shape[o], " channels, expected ", expected));
  }
  const int64_t min = c.MinInputSize();
  for (size_t d = o + 1; d < shape.size(); ++d) {
    if (shape[d] < min) {
      return absl::InvalidArgumentError(absl::StrCat("input shape ", ShapeString(shape),
                                                     " is too small for ", info().architecture,
                                                     ": height and width must be at least ", min));
    }
    if (shape[d] > kMaxSide) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input shape ", ShapeString(shape), ": height and width must be at most ", kMaxSide));
    }
  }
  return absl::OkStatus();
}

std::vector<int64_t> VggModel::WarmupShape() const {
  const VggConfig& c = vgg_->config();
  const int64_t side = std::max<int64_t>(224, c.MinInputSize());
  return {1, c.in_channels, side, side};
}

int64_t VggModel::ForwardBytes(const std::vector<int64_t>& shape) const {
  if (shape.size() != 4) return 0;
  const VggConfig& c = vgg_->config();
  const __int128 n = shape[0];
  __int128 h = shape[2], w = shape[3], largest = n * shape[1] * h * w;
  for (int v : c.layers) {
    if (v == VggConfig::kMaxPool) {
      h /= 2;
      w /= 2;
    } else {
      largest = std::max<__int128>(largest, n * v * h * w);
    }
  }
  const __int128 bytes = 4 * 4 * largest + 4 * n * shape[1] * shape[2] * shape[3];
  return static_cast<int64_t>(std::min<__int128>(bytes, __int128{1} << 62));
}

absl::Status VggModel::Save(ModelFormat format, const std::string& path) const {
  if (format == ModelFormat::kStateDict) return WriteStateDict(vgg_->state_dict(), path);
  if (format == ModelFormat::kPickledModule) return WriteVggModule(*vgg_, path);
  return absl::UnimplementedError(absl::StrCat("a native VGG cannot be saved as ",
                                               ModelFormatName(format),
                                               "; use STATE_DICT or PICKLED_MODULE"));
}

absl::StatusOr<at::Tensor> VggModel::Run(const at::Tensor& x) const { return vgg_->forward(x); }

}  // namespace modelserver
