#include "server/model/pickled_module.h"

#include <optional>
#include <utility>

#include "common/status_macros.h"
#include "server/checkpoint/module_tree.h"
#include "server/checkpoint/zip_reader.h"
#include "server/model/layer_stack_model.h"
#include "server/model/tensor_materializer.h"
#include "server/model/vgg/vgg.h"
#include "server/model/vgg/vgg_config.h"
#include "server/model/vgg/vgg_model.h"

namespace modelserver {
namespace {

// The tensors of `n` and its descendants under their state-dict keys.
absl::Status CollectTensors(const ModuleNode& n, const TensorMaterializer& tensors,
                            StateDict* out) {
  for (const auto& [k, v] : n.tensors) {
    ASSIGN_OR_RETURN(at::Tensor t, tensors.Tensor(*v));
    out->emplace_back(n.path + "." + k, std::move(t));
  }
  for (const ModuleNode& c : n.children) RETURN_IF_ERROR(CollectTensors(c, tensors, out));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Model>> NativeVgg(
    const VggConfig& config, const ModuleNode& root, const TensorMaterializer& tensors,
    const std::string& device, const Numerics& numerics, std::vector<FloatLayer>* spec) {
  StateDict sd;
  for (const ModuleNode& c : root.children) RETURN_IF_ERROR(CollectTensors(c, tensors, &sd));
  ASSIGN_OR_RETURN(std::shared_ptr<VggImpl> vgg, VggImpl::Create(config, std::move(sd), numerics));
  if (spec != nullptr) *spec = vgg->Layers();
  ASSIGN_OR_RETURN(std::shared_ptr<VggModel> model,
                   VggModel::Create(std::move(vgg), ModelFormat::kPickledModule, device, numerics));
  return std::shared_ptr<const Model>(std::move(model));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> LoadPickledModule(const std::string& path,
                                                               const std::string& device,
                                                               bool verify_crc,
                                                               const Numerics& numerics,
                                                               std::vector<FloatLayer>* spec) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  ASSIGN_OR_RETURN(PickledModuleTree tree, ParsePickledModule(*zip, path));
  TensorMaterializer tensors(*zip, tree.prefix, verify_crc);
  RETURN_IF_ERROR(tensors.LoadStorages(*tree.pickled));
  if (std::optional<VggConfig> config = VggConfigFromModuleTree(tree.root)) {
    return NativeVgg(*config, tree.root, tensors, device, numerics, spec);
  }
  if (device != "cpu") {
    return absl::UnimplementedError(
        "pickled modules other than torchvision's VGG layout are served on the CPU only");
  }
  return BuildLayerStackModel(tree.root, tensors, numerics, spec);
}

}  // namespace modelserver
