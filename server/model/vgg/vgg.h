#ifndef MODELSERVER_SERVER_MODEL_VGG_VGG_H_
#define MODELSERVER_SERVER_MODEL_VGG_VGG_H_

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/int8_network.h"
#include "server/model/tensor_materializer.h"
#include "server/model/torch_model.h"
#include "server/model/vgg/vgg_config.h"

namespace modelserver {

// torchvision's VGG as a torch::nn::Module: children "features", "avgpool",
// "classifier" with numbered layers, so named_parameters() and named_buffers()
// give exactly torchvision's state-dict keys. Eval-mode forward only (dropout is
// the identity, batch norm uses running statistics).
//
// Built from a state dict: the checkpoint's tensors become the parameters, so no
// time goes into random initialisation and no weight is copied.
//
// Thread-safe for concurrent forward() after construction.
class VggImpl : public torch::nn::Module {
 public:
  // Checks `state` against `config` strictly (exact key set, shapes, floating
  // dtypes) and builds the network from it. All problems are reported at once as
  // one FAILED_PRECONDITION: missing keys, unexpected keys, shape mismatches.
  static absl::StatusOr<std::shared_ptr<VggImpl>> Create(const VggConfig& config, StateDict state,
                                                         const Numerics& numerics = {});

  const VggConfig& config() const { return config_; }

  // x: [N, C, H, W] float32 on the module's device.
  at::Tensor forward(const at::Tensor& x) const;

  // The network as FloatLayers (for --precision int8), sharing its tensors.
  std::vector<FloatLayer> Layers() const;

  // The state dict in torchvision order (parameters and buffers), float32 and
  // contiguous whatever the serving precision and layout.
  StateDict state_dict() const;

 private:
  struct Layer {
    enum class Kind { kConv, kBatchNorm, kReLU, kMaxPool, kLinear, kDropout } kind;
    at::Tensor weight, bias, running_mean, running_var;
  };

  class Builder;

  explicit VggImpl(const VggConfig& config) : config_(config) {}

  VggConfig config_;  // Constant after construction.
  std::vector<Layer> features_;
  std::vector<Layer> classifier_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_VGG_VGG_H_
