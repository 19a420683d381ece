#ifndef MODELSERVER_SERVER_CHECKPOINT_MODULE_TREE_H_
#define MODELSERVER_SERVER_CHECKPOINT_MODULE_TREE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/checkpoint/unpickler.h"
#include "server/checkpoint/zip_reader.h"

namespace modelserver {

// Class names of the layers a `torch.save(model)` file may contain.
namespace module_class {
inline constexpr char kVgg[] = "torchvision.models.vgg.VGG";
inline constexpr char kSequential[] = "torch.nn.modules.container.Sequential";
inline constexpr char kConv[] = "torch.nn.modules.conv.Conv2d";
inline constexpr char kLinear[] = "torch.nn.modules.linear.Linear";
inline constexpr char kReLU[] = "torch.nn.modules.activation.ReLU";
inline constexpr char kMaxPool[] = "torch.nn.modules.pooling.MaxPool2d";
inline constexpr char kAvgPool[] = "torch.nn.modules.pooling.AvgPool2d";
inline constexpr char kAdaptiveAvgPool[] = "torch.nn.modules.pooling.AdaptiveAvgPool2d";
inline constexpr char kBatchNorm[] = "torch.nn.modules.batchnorm.BatchNorm2d";
inline constexpr char kDropout[] = "torch.nn.modules.dropout.Dropout";
inline constexpr char kFlatten[] = "torch.nn.modules.flatten.Flatten";
}  // namespace module_class

// The unpickler options for a `torch.save(model)` file: the layer allowlist and
// a refusal hint that says what to do instead.
pickle::UnpicklerOptions PickledModuleUnpicklerOptions();

// FAILED_PRECONDITION "<where>: <what>; export the model with torch.jit.script ...".
absl::Status UnsupportedModule(const std::string& where, const std::string& what);

// One module of an unpickled `torch.save(model)` tree, as data: its class, its
// __dict__, its children and its tensors (still unpickled references; the model
// layer turns them into tensors). Points into the Unpickled arena that it was
// parsed from, which must outlive it. A value type; not synchronised.
struct ModuleNode {
  std::string path;                                     // "features.0"; empty for the root
  std::string cls;                                      // "torch.nn.modules.conv.Conv2d"
  const pickle::Value* dict = nullptr;                  // its __dict__
  std::vector<ModuleNode> children;                     // _modules, in order, without None
  std::map<std::string, const pickle::Value*> tensors;  // _parameters and _buffers (kTensor)

  // Attributes of __dict__. Each error is UnsupportedModule naming the attribute.
  const pickle::Value* Attr(const char* name) const;
  absl::StatusOr<int64_t> Int(const char* name) const;
  absl::StatusOr<double> Float(const char* name) const;
  bool Bool(const char* name, bool fallback) const;
  // An int or a pair of ints (kernel_size, stride, ...); `if_none` when the
  // attribute is None and `if_none` is not empty.
  absl::StatusOr<std::vector<int64_t>> Pair(const char* name,
                                            std::vector<int64_t> if_none = {}) const;
  // The last component of `path` ("0" for "features.0").
  std::string Name() const;
};

// Turns the unpickled root of a `torch.save(model)` file into a ModuleNode tree.
// FAILED_PRECONDITION (UnsupportedModule) for anything that is not a module tree
// of objects with a __dict__, that nests more than 64 deep, that is cyclic, or
// that has more than 20,000 modules (a submodule shared at several places counts
// at each: memoised pickles can otherwise describe exponentially large trees).
absl::StatusOr<ModuleNode> ParseModuleTree(const pickle::Value* root);

// A `torch.save(model)` archive, parsed but not materialised: the record prefix,
// the unpickled objects and the module tree that points into them.
struct PickledModuleTree {
  std::string prefix;
  std::unique_ptr<pickle::Unpickled> pickled;
  ModuleNode root;
};

// Finds data.pkl in `zip`, unpickles it with PickledModuleUnpicklerOptions() and
// parses the module tree. Errors as ParseArchivePickle and ParseModuleTree.
absl::StatusOr<PickledModuleTree> ParsePickledModule(const ZipReader& zip, const std::string& what);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_MODULE_TREE_H_
