#ifndef MODELSERVER_SERVER_MODEL_VGG_VGG_CONFIG_H_
#define MODELSERVER_SERVER_MODEL_VGG_VGG_CONFIG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/module_tree.h"

namespace modelserver {

// The shape of a torchvision-style VGG: feature layer list (torchvision's `cfgs`),
// batch norm, classifier width and class count. Plain data, no torch.
struct VggConfig {
  static constexpr int kMaxPool = -1;  // an 'M' in the layer list
  // Limits of what is served: the smallest input is 2^pools per side (the
  // warm-up runs at max(224, that)), so 8 max-pools (torchvision's VGGs have 5)
  // keep it at 256; 64 layers is three times VGG19's.
  static constexpr int kMaxMaxPools = 8;
  static constexpr size_t kMaxLayers = 64;

  std::vector<int> layers;  // output channels of each conv, or kMaxPool
  bool batch_norm = false;
  int64_t in_channels = 3;
  int64_t num_classes = 1000;
  int64_t hidden = 4096;  // classifier width
  int64_t pool = 7;       // AdaptiveAvgPool2d output size

  // The canonical architecture string: "vgg16", "vgg11_bn", or
  // "vgg:cfg=8-M-16-M:bn:classes=10:hidden=32:pool=1" for anything else.
  std::string Name() const;
  // Every state-dict key with its shape, in torchvision's order
  // (features.0.weight, features.0.bias, ..., classifier.6.bias).
  std::vector<std::pair<std::string, std::vector<int64_t>>> StateDictShapes() const;
  // The smallest input height/width the network accepts (each max-pool halves it).
  int64_t MinInputSize() const;
  // How many kMaxPool entries `layers` has.
  int MaxPools() const;
};

// Parses an architecture name:
//   vgg11 | vgg13 | vgg16 | vgg19, with optional "_bn"     (torchvision's models)
//   vgg:cfg=64-M-128-M...                                   (any layer list)
// followed by optional ":bn", ":classes=N", ":hidden=N", ":pool=N".
// INVALID_ARGUMENT naming the problem for anything else.
absl::StatusOr<VggConfig> ParseVggArchitecture(absl::string_view arch);

// The config of a `torch.save(model)` tree with torchvision's VGG layout (3x3
// convolutions with padding 1, optional batch norm after each, ReLU, 2x2
// max-pools, a square AdaptiveAvgPool2d, the 7-layer classifier); nullopt for
// any other tree.
std::optional<VggConfig> VggConfigFromModuleTree(const ModuleNode& root);

// What load_state_dict(strict=True) checks of a state dict's key names and
// shapes against `config`: the exact key set and every shape; `problems` adds
// other per-key problems (dtypes). One FAILED_PRECONDITION listing all (missing
// keys, unexpected keys, mismatches), else OK. Torch-free (the upload check uses
// the shapes from the pickle).
absl::Status CheckVggStateDict(const VggConfig& config,
                               const std::map<std::string, std::vector<int64_t>>& shapes,
                               std::vector<std::string> problems = {});

// True when `arch` names a VGG (starts with "vgg").
bool IsVggArchitecture(absl::string_view arch);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_VGG_VGG_CONFIG_H_
