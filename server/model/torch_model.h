#ifndef MODELSERVER_SERVER_MODEL_TORCH_MODEL_H_
#define MODELSERVER_SERVER_MODEL_TORCH_MODEL_H_

#include <ATen/ATen.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/model/model.h"
#include "server/model/precision.h"

namespace modelserver {

// How a model computes: the dtype of its floating weights and activations, and
// whether 4-D activations and convolution weights are channels-last.
struct Numerics {
  Precision precision = Precision::kFp32;
  bool channels_last = false;

  at::ScalarType dtype() const;
  // `t` as the model keeps it: a floating tensor in dtype(), a 4-D one
  // channels-last when set, else contiguous. Other tensors: contiguous.
  at::Tensor Apply(const at::Tensor& t) const;
};

// The numerics a model built on `device` runs with. `layout_safe`: the network's
// own code keeps working on channels-last tensors (native VGGs and layer stacks;
// not arbitrary TorchScript), so kAuto picks channels-last for it. INVALID_ARGUMENT
// / FAILED_PRECONDITION (fp16 on a CPU) naming the mode otherwise.
absl::StatusOr<Numerics> ResolveNumerics(Precision precision, MemoryLayout layout,
                                         const std::string& device, bool layout_safe);

// The one Forward of every LibTorch model: validate the batch, view its bytes as
// a tensor, add the batch dimension for unbatched inputs, convert it to the
// model's Numerics, run under InferenceMode on the model's device, drop the added
// dimension, copy the result back to the host as float32 (when the model computes
// in bf16/fp16), and turn every exception into a Status. Subclasses implement
// Run() only. On CUDA each calling thread (a batch worker) gets its own stream and
// reuses its own pinned staging buffers, so the workers' batches overlap.
//
// Thread-safe as long as Run() is: Forward keeps no state.
class TorchModel : public Model {
 public:
  // Tensors by output name, in the model's order.
  using NamedOutputs = std::vector<std::pair<std::string, at::Tensor>>;

  const ModelInfo& info() const final { return info_; }
  ~TorchModel() override;
  absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const final;
  absl::StatusOr<std::vector<NamedTensor>> ForwardAll(const HostTensor& batch) const final;
  // The rank of the last batched output computed (-1 before the first).
  int OutputRank() const override { return output_rank_.load(); }
  std::vector<std::string> OutputNames() const override { return output_names_.Get(); }

 protected:
  // `error_code`: the code of an exception thrown by Run() that is not an
  // out-of-memory (INVALID_ARGUMENT where the network's own checks reject the
  // input, INTERNAL where the input was fully validated); `error_context` names
  // what was running in its message.
  TorchModel(ModelInfo info, at::Device device, Numerics numerics, absl::StatusCode error_code,
             std::string error_context);

  // Runs the network on a batched input already on device(). Called under
  // InferenceMode inside Forward's try block: it may throw.
  virtual absl::StatusOr<at::Tensor> Run(const at::Tensor& x) const = 0;
  // Every output, named as Model::ForwardAll says. The default: Run()'s tensor,
  // named "output". Same contract as Run().
  virtual absl::StatusOr<NamedOutputs> RunAll(const at::Tensor& x) const;

  const at::Device& device() const { return device_; }
  const Numerics& numerics() const { return numerics_; }

 private:
  struct CudaStaging;
  // The calling thread's stream and pinned buffers (created on first use).
  CudaStaging& StagingForThisThread() const ABSL_LOCKS_EXCLUDED(staging_mu_);
  // RunAll() on `x` converted to the numerics, the outputs computed in the
  // numerics' dtype back in float32. May throw.
  absl::StatusOr<NamedOutputs> Compute(const at::Tensor& x) const;
  // The host copy of `y`, without the batch dimension Forward added.
  static absl::StatusOr<HostTensor> ToHost(at::Tensor y, bool unbatched);

  // Constant after construction.
  ModelInfo info_;
  at::Device device_;
  Numerics numerics_;
  absl::StatusCode error_code_;
  std::string error_context_;
  mutable std::atomic<int> output_rank_{-1};         // set by each successful Forward
  mutable std::atomic<bool> logged_failure_{false};  // the first failure is logged in full
  mutable OutputNamesRecord output_names_;
  // CUDA only: per calling thread (a batch worker, the warm-up), freed with the model.
  mutable absl::Mutex staging_mu_;
  mutable std::map<std::thread::id, std::shared_ptr<CudaStaging>> staging_
      ABSL_GUARDED_BY(staging_mu_);
};

// info->parameter_bytes += the bytes of every tensor in `tensors` (undefined ones skipped).
void AddParameterBytes(const std::vector<at::Tensor>& tensors, ModelInfo* info);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TORCH_MODEL_H_
