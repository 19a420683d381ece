#ifndef MODELSERVER_SERVER_MODEL_VGG_VGG_MODEL_H_
#define MODELSERVER_SERVER_MODEL_VGG_VGG_MODEL_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/torch_model.h"
#include "server/model/vgg/vgg.h"

namespace modelserver {

// A native VGG served as a Model: validates [N,C,H,W] / [C,H,W] float32 inputs
// and runs the VggImpl on its device.
// Thread-safe: immutable after Create.
class VggModel : public TorchModel {
 public:
  // Moves `vgg` to `device` ("cpu", "cuda:N"); `numerics` are those `vgg` was
  // built with (VggImpl::Create).
  static absl::StatusOr<std::shared_ptr<VggModel>> Create(std::shared_ptr<VggImpl> vgg,
                                                          ModelFormat format,
                                                          const std::string& device,
                                                          const Numerics& numerics = {});

  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override;
  bool IsUnbatched(const std::vector<int64_t>& shape) const override { return shape.size() == 3; }
  std::vector<int64_t> WarmupShape() const override;
  int OutputRank() const override { return 2; }  // [N, classes]
  // 4x the largest activation (measured peak: ~3x, LibTorch 1.13 CPU) + input.
  int64_t ForwardBytes(const std::vector<int64_t>& shape) const override;
  absl::Status Save(ModelFormat format, const std::string& path) const override;

  const VggImpl& vgg() const { return *vgg_; }

 protected:
  absl::StatusOr<at::Tensor> Run(const at::Tensor& x) const override;

 private:
  VggModel(std::shared_ptr<VggImpl> vgg, at::Device device, const Numerics& numerics,
           ModelInfo info);

  std::shared_ptr<VggImpl> vgg_;  // constant after construction
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_VGG_VGG_MODEL_H_
