#ifndef MODELSERVER_SERVER_CHECKPOINT_PICKLE_WRITER_H_
#define MODELSERVER_SERVER_CHECKPOINT_PICKLE_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "server/checkpoint/unpickler.h"

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

// A Python value to pickle, for `torch.save(model)` files: plain data, tensors,
// parameters and modules (a class rebuilt with NEWOBJ, its __dict__ set by BUILD).
struct PyValue {
  enum class Type {
    kNone,
    kBool,
    kInt,
    kFloat,
    kStr,
    kTuple,
    kList,
    kSet,
    kOrderedDict,
    kDict,
    kTensor,
    kParameter,
    kModule,
  };
  Type type = Type::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                         // kStr
  std::vector<PyValue> items;                            // kTuple, kList, kSet
  std::vector<std::pair<std::string, PyValue>> entries;  // kOrderedDict, kDict, kModule __dict__
  std::string module, name;                              // kModule: its class
  PickledTensor tensor;                                  // kTensor, kParameter

  static PyValue None() { return {}; }
  static PyValue Bool(bool v);
  static PyValue Int(int64_t v);
  static PyValue Float(double v);
  static PyValue Str(std::string v);
  static PyValue Tuple(std::vector<PyValue> v);
  static PyValue IntTuple(std::vector<int64_t> v);
};

// A protocol-2 pickle of `root` as torch.save writes it (tensors by persistent
// storage id).
std::string PickleValue(const PyValue& root);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_PICKLE_WRITER_H_
