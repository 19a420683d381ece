#ifndef MODELSERVER_SERVER_MODEL_TORCH_MODEL_H_
#define MODELSERVER_SERVER_MODEL_TORCH_MODEL_H_

#include <ATen/ATen.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/model.h"

namespace modelserver {

// The one Forward of every LibTorch model: validate the batch, view its bytes as
// a tensor, add the batch dimension for unbatched inputs, run under
// InferenceMode on the model's device (pinned host memory and a non-blocking
// copy on CUDA), drop the added dimension, copy the result back to the host,
// and turn every exception into a Status. Subclasses implement Run() only.
//
// Thread-safe as long as Run() is: Forward keeps no state.
class TorchModel : public Model {
 public:
  const ModelInfo& info() const final { return info_; }
  absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const final;
  // The rank of the last batched output computed (-1 before the first).
  int OutputRank() const override { return output_rank_.load(); }

 protected:
  // `error_code`: the code of an exception thrown by Run() that is not an
  // out-of-memory (INVALID_ARGUMENT where the network's own checks reject the
  // input, INTERNAL where the input was fully validated); `error_context` names
  // what was running in its message.
  TorchModel(ModelInfo info, at::Device device, absl::StatusCode error_code,
             std::string error_context);

  // Runs the network on a batched input already on device(). Called under
  // InferenceMode inside Forward's try block: it may throw.
  virtual absl::StatusOr<at::Tensor> Run(const at::Tensor& x) const = 0;

  const at::Device& device() const { return device_; }

 private:
  // Constant after construction.
  ModelInfo info_;
  at::Device device_;
  absl::StatusCode error_code_;
  std::string error_context_;
  mutable std::atomic<int> output_rank_{-1};  // set by each successful Forward
};

// info->parameter_bytes += the bytes of every tensor in `tensors` (undefined ones skipped).
void AddParameterBytes(const std::vector<at::Tensor>& tensors, ModelInfo* info);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TORCH_MODEL_H_
