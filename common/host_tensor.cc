#include "common/host_tensor.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/wire_size.h"

namespace modelserver {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kUInt8:
    case DType::kInt8:
    case DType::kBool:
      return 1;
    case DType::kUnspecified:
      return 0;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kFloat64:
      return "float64";
    case DType::kUInt8:
      return "uint8";
    case DType::kInt8:
      return "int8";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kBool:
      return "bool";
    case DType::kUnspecified:
      return "unspecified";
  }
  return "unknown";
}

int64_t HostTensor::NumElements() const {
  // Wraps instead of overflowing (UB) for a shape nobody checked; checked shapes
  // (CheckTensorBytes, ElementCount) never get near it.
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return static_cast<int64_t>(n);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::Status CheckTensorBytes(DType dtype, const std::vector<int64_t>& shape, size_t data_bytes) {
  const size_t elem = DTypeSize(dtype);
  if (elem == 0) {
    return absl::InvalidArgumentError("tensor dtype is unspecified");
  }
  absl::StatusOr<size_t> elements =
      ElementCount(shape, elem, std::numeric_limits<size_t>::max(), "tensor");
  if (!elements.ok()) return elements.status();
  const size_t count = *elements;
  if (count * elem != data_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor data has ", data_bytes, " bytes, expected ", count * elem, " for shape ",
        ShapeString(shape), " of ", DTypeName(dtype), " (", elem, " bytes each)"));
  }
  return absl::OkStatus();
}

}  // namespace modelserver
