#include "server/model/torch_model.h"

#include <c10/core/InferenceMode.h>

#include <utility>

#include "common/status_macros.h"
#include "server/model/tensor_convert.h"

namespace modelserver {
namespace {

// `x` on `device`: through pinned host memory and a non-blocking copy for CUDA.
at::Tensor ToDevice(const at::Tensor& x, const at::Device& device) {
  if (device.is_cpu()) return x;
  at::Tensor pinned = at::empty(x.sizes(), x.options().pinned_memory(true));
  pinned.copy_(x);
  return pinned.to(device, /*non_blocking=*/true);
}

}  // namespace

TorchModel::TorchModel(ModelInfo info, at::Device device, absl::StatusCode error_code,
                       std::string error_context)
    : info_(std::move(info)),
      device_(device),
      error_code_(error_code),
      error_context_(std::move(error_context)) {}

absl::StatusOr<HostTensor> TorchModel::Forward(const HostTensor& batch) const {
  RETURN_IF_ERROR(ValidateInput(batch.dtype, batch.shape));
  ASSIGN_OR_RETURN(at::Tensor host, ViewHostTensor(batch));
  const bool unbatched = IsUnbatched(batch.shape);
  try {
    c10::InferenceMode guard;
    at::Tensor x = ToDevice(unbatched ? host.unsqueeze(0) : host, device_);
    ASSIGN_OR_RETURN(at::Tensor y, Run(x));
    output_rank_.store(static_cast<int>(y.dim()));
    if (unbatched) y = y.squeeze(0);
    return ToHostTensor(y);
  } catch (const std::exception& e) {
    return TorchError(e, error_context_, error_code_);
  }
}

void AddParameterBytes(const std::vector<at::Tensor>& tensors, ModelInfo* info) {
  for (const at::Tensor& t : tensors) {
    if (t.defined()) info->parameter_bytes += t.nbytes();
  }
}

}  // namespace modelserver
