#ifndef MODELSERVER_SERVER_MODEL_VGG_MODEL_H_
#define MODELSERVER_SERVER_MODEL_VGG_MODEL_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/model.h"
#include "server/model/vgg.h"

namespace modelserver {

// A native VGG served as a Model: validates [N,C,H,W] float32 inputs and runs the
// VggImpl on its device (pinned host memory and non-blocking copies on CUDA).
// Thread-safe: immutable after Create.
class VggModel : public Model {
 public:
  // Moves `vgg` to `device` ("cpu", "cuda:N").
  static absl::StatusOr<std::shared_ptr<VggModel>> Create(std::shared_ptr<VggImpl> vgg,
                                                          ModelFormat format,
                                                          const std::string& device);

  const ModelInfo& info() const override { return info_; }
  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override;
  bool IsUnbatched(const std::vector<int64_t>& shape) const override { return shape.size() == 3; }
  std::vector<int64_t> WarmupShape() const override;
  absl::Status Save(ModelFormat format, const std::string& path) const override;
  absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const override;

  const VggImpl& vgg() const { return *vgg_; }

 private:
  VggModel(std::shared_ptr<VggImpl> vgg, at::Device device, ModelInfo info)
      : vgg_(std::move(vgg)), device_(device), info_(std::move(info)) {}

  // Constant after construction.
  std::shared_ptr<VggImpl> vgg_;
  at::Device device_;
  ModelInfo info_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_VGG_MODEL_H_
