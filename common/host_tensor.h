#ifndef MODELSERVER_COMMON_HOST_TENSOR_H_
#define MODELSERVER_COMMON_HOST_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Element types a tensor can have on the wire (same order as the API's DataType).
enum class DType {
  kUnspecified = 0,
  kFloat32 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kFloat64 = 4,
  kUInt8 = 5,
  kInt8 = 6,
  kInt32 = 7,
  kInt64 = 8,
  kBool = 9,
};

// Bytes per element; 0 for kUnspecified.
size_t DTypeSize(DType dtype);
// "float32", "bfloat16", ...
absl::string_view DTypeName(DType dtype);

// A dense tensor in host memory, without torch: the unit the service, the batching
// queue and the models exchange. `data` is little-endian, row-major, no padding.
// A value type; not synchronised.
struct HostTensor {
  DType dtype = DType::kUnspecified;
  std::vector<int64_t> shape;
  std::string data;

  // Product of `shape` (1 for a scalar).
  int64_t NumElements() const;
};

// One output of a model, by its name ("output" for a model with one; see
// Model::ForwardAll).
struct NamedTensor {
  std::string name;
  HostTensor tensor;
};

// Outputs one forward pass may give (a model returning more is refused), and
// the longest output name: bounds on what a model -- or a sandboxed worker --
// hands back.
constexpr size_t kMaxModelOutputs = 32;
constexpr size_t kMaxOutputNameBytes = 127;

// "[1,3,224,224]".
std::string ShapeString(const std::vector<int64_t>& shape);

// Checks that `shape` has no negative dimension, that its element count does not
// overflow, and that `data_bytes` equals elements * DTypeSize(dtype).
// INVALID_ARGUMENT naming the mismatch otherwise.
absl::Status CheckTensorBytes(DType dtype, const std::vector<int64_t>& shape, size_t data_bytes);

}  // namespace modelserver

#endif  // MODELSERVER_COMMON_HOST_TENSOR_H_
