#ifndef MODELSERVER_SERVER_MODEL_TENSOR_CONVERT_H_
#define MODELSERVER_SERVER_MODEL_TENSOR_CONVERT_H_

#include <ATen/ATen.h>

#include <exception>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/host_tensor.h"

namespace modelserver {

absl::StatusOr<at::ScalarType> ToScalarType(DType dtype);
absl::StatusOr<DType> ToDType(at::ScalarType type);

// A CPU tensor viewing `t.data` (no copy; `t` must outlive it).
absl::StatusOr<at::Tensor> ViewHostTensor(const HostTensor& t);

// Copies a dense tensor (any device) into a HostTensor. INVALID_ARGUMENT for a
// sparse or meta tensor, RESOURCE_EXHAUSTED when it would take more than
// `max_bytes` (checked before anything is allocated).
absl::StatusOr<HostTensor> ToHostTensor(const at::Tensor& t, int64_t max_bytes = 1ll << 30);

// The line of a torch error message that says what went wrong: the first line,
// or, for an error from TorchScript's interpreter (traceback first), the last.
std::string TorchErrorCause(absl::string_view message);

// Turns an exception thrown by torch into a Status: out-of-memory is
// RESOURCE_EXHAUSTED, anything else gets `code`. `what` says what was being done.
absl::Status TorchError(const std::exception& e, absl::string_view what,
                        absl::StatusCode code = absl::StatusCode::kInternal);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TENSOR_CONVERT_H_
