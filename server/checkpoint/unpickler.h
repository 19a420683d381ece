#ifndef MODELSERVER_SERVER_CHECKPOINT_UNPICKLER_H_
#define MODELSERVER_SERVER_CHECKPOINT_UNPICKLER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {
namespace pickle {

// Element types of PyTorch storages (torch.FloatStorage, ...).
enum class StorageType {
  kFloat,
  kDouble,
  kHalf,
  kBFloat16,
  kLong,
  kInt,
  kShort,
  kChar,
  kByte,
  kBool,
  kComplexFloat,
  kComplexDouble,
};
size_t StorageElementSize(StorageType type);
absl::string_view StorageTypeName(StorageType type);

// What an allowed global stands for. Anything not in the allowlist is refused at
// the GLOBAL / STACK_GLOBAL opcode that names it, before anything is built from it.
enum class GlobalKind {
  kOrderedDict,                // collections.OrderedDict
  kRebuildTensorV2,            // torch._utils._rebuild_tensor_v2
  kRebuildParameter,           // torch._utils._rebuild_parameter
  kRebuildParameterWithState,  // torch._utils._rebuild_parameter_with_state
  kCodecsEncode,               // _codecs.encode(str, 'latin1'): how protocol 2 pickles bytes
  kSet,                        // builtins.set / __builtin__.set: a list of its items
  kStorageType,                // torch.FloatStorage, ...
  kClass,                      // an allowed class, built by NEWOBJ into an Object (opt-in)
};

enum class Kind {
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kBytes,
  kTuple,
  kList,
  kDict,
  kGlobal,
  kStorage,
  kTensor,
  kObject,
};
absl::string_view KindName(Kind kind);

struct Value;
namespace internal {
class Parser;
}  // namespace internal

// A storage referenced by persistent id ('storage', torch.XStorage, key, location, numel):
// its bytes live in the zip record "<archive>/data/<key>".
struct StorageRef {
  std::string key;
  StorageType type = StorageType::kFloat;
  std::string location;
  int64_t numel = 0;
};

// A tensor view onto a storage (torch._utils._rebuild_tensor_v2).
struct TensorRef {
  const Value* storage = nullptr;  // kind kStorage
  int64_t offset = 0;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  bool requires_grad = false;
  bool is_parameter = false;  // wrapped by _rebuild_parameter
};

// One unpickled object. Values are owned by their Unpickled arena and refer to
// each other by plain pointers, so cycles and deep nesting cost no recursion.
struct Value {
  Kind kind = Kind::kNone;
  bool b = false;                                  // kBool
  int64_t i = 0;                                   // kInt
  double f = 0;                                    // kFloat
  std::string s;                                   // kString, kBytes; kGlobal: "module.name"
  std::vector<Value*> items;                       // kTuple, kList
  std::vector<std::pair<Value*, Value*>> entries;  // kDict, in insertion order
  Value* state = nullptr;  // set by BUILD (OrderedDict's _metadata, an object's __dict__)
  GlobalKind global = GlobalKind::kClass;          // kGlobal
  StorageType storage_type = StorageType::kFloat;  // kGlobal of kind kStorageType
  const Value* cls = nullptr;                      // kObject: its class (a kGlobal)
  std::vector<Value*> args;                        // kObject: NEWOBJ arguments
  StorageRef storage;                              // kStorage
  TensorRef tensor;                                // kTensor

  // For kDict: the value of string key `key`, or nullptr.
  const Value* Get(absl::string_view key) const;
};

// The result of unpickling: the root value and the arena that owns every value.
class Unpickled {
 public:
  const Value* root() const { return root_; }
  // Every storage referenced, in first-reference order.
  const std::vector<const Value*>& storages() const { return storages_; }

 private:
  friend class internal::Parser;
  std::deque<Value> arena_;
  Value* root_ = nullptr;
  std::vector<const Value*> storages_;
};

struct UnpicklerOptions {
  // Extra classes NEWOBJ may build ("torch.nn.modules.conv.Conv2d", ...). Empty by
  // default: a state dict needs none.
  std::vector<std::string> allowed_classes;
  // Appended to the refusal of a global (what to do instead).
  std::string refusal_hint =
      "a state dict may only refer to tensors, storages and collections.OrderedDict";
  // Resource limits against hostile input. Memory: the values, strings, list and
  // dict entries and memo the result holds may take at most
  // min(max_bytes, bytes_per_pickle_byte * pickle size + 16 MiB). A state dict's
  // pickle needs about 60 bytes per pickle byte (a value is ~300 bytes), a pickle
  // of small ints up to 160; copies (set(list) of a memoised list) count too.
  uint64_t max_bytes = 512ull << 20;
  uint64_t bytes_per_pickle_byte = 256;
  size_t max_values = 50'000'000;
  size_t max_stack = 1'000'000;
  size_t max_memo = 10'000'000;
  size_t max_rank = 32;
};

// A restricted unpickler for PyTorch checkpoints (pickle protocols 2 to 4). It
// understands only what state dicts (and, opted in, module trees) need, and never
// calls anything: every global is looked up in a fixed allowlist and turned into
// data. Errors are FAILED_PRECONDITION for a disallowed global or construct (naming
// it), DATA_LOSS
// for a truncated or malformed pickle, RESOURCE_EXHAUSTED past a limit; each
// message gives the byte offset and opcode.
//
// Thread-compatible: one Unpickler per call.
//
//   Unpickler u(UnpicklerOptions{});
//   ASSIGN_OR_RETURN(std::unique_ptr<Unpickled> p, u.Parse(data_pkl));
class Unpickler {
 public:
  explicit Unpickler(UnpicklerOptions options) : options_(std::move(options)) {}

  absl::StatusOr<std::unique_ptr<Unpickled>> Parse(absl::string_view data);

  // Whether `module.name` is allowed, and as what.
  static bool LookupBuiltinGlobal(absl::string_view module, absl::string_view name,
                                  GlobalKind* kind, StorageType* storage_type);

 private:
  UnpicklerOptions options_;
};

}  // namespace pickle
}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_UNPICKLER_H_
