// libFuzzer target for the LibTorch side of reading untrusted checkpoints: the
// tensor materializer (storages read into tensors, views checked against their
// storage) on state dicts, and the module-tree -> layer-stack builder on
// torch.save(model) files. Build and run with fuzz/run_fuzzer.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/checkpoint/module_tree.h"
#include "server/checkpoint/state_dict_parser.h"
#include "server/checkpoint/zip_reader.h"
#include "server/model/layer_stack_model.h"
#include "server/model/tensor_materializer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto zip = modelserver::ZipReader::FromBuffer(
      std::string(reinterpret_cast<const char*>(data), size));
  if (!zip.ok()) return 0;
  if (auto sd = modelserver::ParseStateDictPickle(**zip, "fuzz", 1 << 20); sd.ok()) {
    modelserver::TensorMaterializer tensors(**zip, sd->prefix, /*verify_crc=*/true);
    if (tensors.LoadStorages(*sd->pickled).ok()) {
      for (const auto& [k, v] : sd->pickled->root()->entries) (void)tensors.Tensor(*v);
    }
  }
  if (auto tree = modelserver::ParsePickledModule(**zip, "fuzz"); tree.ok()) {
    modelserver::TensorMaterializer tensors(**zip, tree->prefix, /*verify_crc=*/true);
    if (tensors.LoadStorages(*tree->pickled).ok()) {
      (void)modelserver::BuildLayerStackModel(tree->root, tensors, modelserver::Numerics{});
    }
  }
  return 0;
}
