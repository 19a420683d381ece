#ifndef MODELSERVER_SERVER_MODEL_PICKLED_MODULE_H_
#define MODELSERVER_SERVER_MODEL_PICKLED_MODULE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/int8_network.h"
#include "server/model/model.h"
#include "server/model/torch_model.h"

namespace modelserver {

// Serves `torch.save(model, path)` files without Python and without running
// anything from the file: the restricted unpickler rebuilds the module tree as
// data (allowlisted classes only: torchvision's VGG, Sequential, Conv2d, Linear,
// ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, Dropout, Flatten),
// each layer's hyperparameters come from its pickled __dict__ and its tensors from
// _parameters / _buffers. A torchvision VGG of the usual layout becomes our native
// VGG; any other tree of allowlisted layers runs as a sequence of those layers.
//
// Errors: FAILED_PRECONDITION naming a refused class (export TorchScript or save
// a state dict instead) or an unsupported layer setting; DATA_LOSS for a corrupt
// file; those of the reader otherwise. Weights are converted to `numerics` as
// they are built. `spec` (when given) receives the network as FloatLayers, for
// --precision int8. Thread-safe.
absl::StatusOr<std::shared_ptr<const Model>> LoadPickledModule(
    const std::string& path, const std::string& device, bool verify_crc,
    const Numerics& numerics = {}, std::vector<FloatLayer>* spec = nullptr);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_PICKLED_MODULE_H_
