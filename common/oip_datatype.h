#ifndef MODELSERVER_COMMON_OIP_DATATYPE_H_
#define MODELSERVER_COMMON_OIP_DATATYPE_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/host_tensor.h"

namespace modelserver {

// The Open Inference Protocol's datatype strings for our dtypes, shared by the
// server's v2 front door and the client's --protocol v2.

// "FP32" -> kFloat32, ... (FP16, BF16, FP64, UINT8, INT8, INT32, INT64, BOOL).
// INVALID_ARGUMENT naming the datatype for the protocol's others (UINT16, INT16,
// UINT32, UINT64, BYTES), which no model here takes, and for unknown strings.
absl::StatusOr<DType> DTypeFromDatatype(absl::string_view datatype);
// The protocol's string for `dtype` ("FP32", ...); "" for kUnspecified.
const char* DatatypeOf(DType dtype);

}  // namespace modelserver

#endif  // MODELSERVER_COMMON_OIP_DATATYPE_H_
