#ifndef MODELSERVER_SERVER_MODEL_PICKLE_WRITER_H_
#define MODELSERVER_SERVER_MODEL_PICKLE_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "server/model/unpickler.h"

namespace modelserver {

// One tensor of a state dict, stored in its own storage record.
struct PickledTensor {
  std::string key;  // "features.0.weight"
  pickle::StorageType type = pickle::StorageType::kFloat;
  std::string storage_key;  // record "data/<storage_key>"
  int64_t numel = 0;        // elements in the storage
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
};

// The data.pkl of `torch.save(state_dict)`: a protocol-2 pickle of an
// OrderedDict of torch._utils._rebuild_tensor_v2 calls on persistent storages,
// exactly the subset our Unpickler reads and Python's torch.load rebuilds.
std::string PickleStateDict(const std::vector<PickledTensor>& tensors);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_PICKLE_WRITER_H_
