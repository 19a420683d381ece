#ifndef MODELSERVER_SERVER_MODEL_LAYER_STACK_MODEL_H_
#define MODELSERVER_SERVER_MODEL_LAYER_STACK_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/checkpoint/module_tree.h"
#include "server/model/int8_network.h"
#include "server/model/model.h"
#include "server/model/tensor_materializer.h"
#include "server/model/torch_model.h"

namespace modelserver {

// Builds a CPU model that runs the layers of a `torch.save(model)` tree in
// order, eval mode: nn.Sequential (flattened), torchvision's VGG (features,
// avgpool, flatten, classifier), Conv2d, Linear, BatchNorm2d, ReLU, Dropout,
// MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten. `tensors` materialises the
// tree's tensors (its storages must be loaded). FAILED_PRECONDITION
// (UnsupportedModule) naming any other class or unsupported attribute.
// Tensors are converted once, at build, to `numerics`. The model is immutable
// and thread-safe. `spec` (when given) receives the layers as FloatLayers, for
// --precision int8.
absl::StatusOr<std::shared_ptr<const Model>> BuildLayerStackModel(
    const ModuleNode& root, const TensorMaterializer& tensors, const Numerics& numerics,
    std::vector<FloatLayer>* spec = nullptr);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_LAYER_STACK_MODEL_H_
