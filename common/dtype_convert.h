#ifndef MODELSERVER_COMMON_DTYPE_CONVERT_H_
#define MODELSERVER_COMMON_DTYPE_CONVERT_H_

#include "absl/status/statusor.h"
#include "common/host_tensor.h"

namespace modelserver {

// Whether `dtype` is one of the floating types the server converts between on
// the wire: float32, float64, float16, bfloat16.
bool IsWireFloat(DType dtype);

// `t` with its elements converted to `to` (both IsWireFloat), rounding to
// nearest-even where `to` is narrower (as torch's .to() does); `t` itself when
// the types agree. INVALID_ARGUMENT for other dtypes or a malformed tensor.
absl::StatusOr<HostTensor> ConvertFloat(const HostTensor& t, DType to);

}  // namespace modelserver

#endif  // MODELSERVER_COMMON_DTYPE_CONVERT_H_
