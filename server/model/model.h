#ifndef MODELSERVER_SERVER_MODEL_MODEL_H_
#define MODELSERVER_SERVER_MODEL_MODEL_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/host_tensor.h"
#include "server/checkpoint/format.h"

namespace modelserver {

// What describes a loaded model. Constant after load.
struct ModelInfo {
  std::string architecture;  // canonical ("vgg16", "vgg:cfg=8-M:classes=10", ...)
  ModelFormat format = ModelFormat::kUnspecified;
  std::string device;                        // "cpu", "cuda:0"
  int64_t parameter_bytes = 0;               // on the device
  std::string precision = "fp32";            // what the weights compute in
  std::string memory_format = "contiguous";  // or "channels_last"
  // A state dict served in an architecture template (TorchScript) beside it.
  bool from_template = false;
  // Precision int8: the calibration samples, and on them the share of samples
  // whose top-1 class is the float model's and the lowest cosine similarity of
  // one sample's int8 and float outputs (0 samples: not int8).
  int64_t int8_samples = 0;
  double int8_top1_agreement = 0;
  double int8_worst_cosine = 0;
};

// One loaded, eval-mode model version on its device. Its header is torch-free so
// that serving, batching and service code never include torch.
//
// Thread-safe: Forward may run on several threads at once; the model is immutable
// after load. Shared as std::shared_ptr<const Model>: a batch holds its model for
// the whole forward pass.
class Model {
 public:
  virtual ~Model() = default;

  virtual const ModelInfo& info() const = 0;

  // Checks one request's input before it is queued: dtype and shape [N,C,H,W] or
  // [C,H,W]. INVALID_ARGUMENT naming what was wrong and what was expected.
  virtual absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const = 0;

  // True when a valid input `shape` has no batch dimension ([C,H,W]); the caller
  // then adds one (and removes it from the output), so every queued input is
  // [N, ...].
  virtual bool IsUnbatched(const std::vector<int64_t>& shape) const = 0;

  // An input shape for the warm-up pass before the model serves ([1,3,224,224]);
  // empty when the model's input shape is unknown (no warm-up).
  virtual std::vector<int64_t> WarmupShape() const = 0;

  // The rank of the batched output ([N, classes]: 2) when known -- from the
  // architecture, or from the last forward pass -- else -1. Lets a request that
  // needs a particular output (top_k) be refused before it is computed.
  virtual int OutputRank() const { return -1; }

  // Estimated peak memory, in bytes, of one forward pass on a valid batched input
  // of `shape` (activations, workspace, input and output; not the weights); 0 when
  // the model cannot tell (the caller then bounds the input size instead).
  virtual int64_t ForwardBytes(const std::vector<int64_t>& /*shape*/) const { return 0; }

  // Writes the model to `path` (which must not exist) in `format`, fsynced.
  // UNIMPLEMENTED for formats this model cannot be written in.
  virtual absl::Status Save(ModelFormat format, const std::string& path) const = 0;

  // Runs the model on a batch that passed ValidateInput, in eval mode without
  // autograd; blocks for the forward pass. The output has the batch's leading
  // dimension. RESOURCE_EXHAUSTED when the device is out of memory,
  // INVALID_ARGUMENT when the network rejects the input, INTERNAL otherwise.
  virtual absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const = 0;

  // Forward, with every output the model gives, in its order, by name: "output"
  // for a model that returns one tensor; for several (TorchScript returning a
  // tuple, named tuple or list: "output0", "output1", ... by position, a None
  // element skipped and its position kept; a dict: its keys; nested containers:
  // "output1.0", "key.0"), each with the batch's leading dimension. Forward's
  // output is the first. The default: Forward's one output, named "output".
  virtual absl::StatusOr<std::vector<NamedTensor>> ForwardAll(const HostTensor& batch) const {
    absl::StatusOr<HostTensor> out = Forward(batch);
    if (!out.ok()) return out.status();
    std::vector<NamedTensor> all(1);
    all[0].name = "output";
    all[0].tensor = *std::move(out);
    return all;
  }

  // The output names of the last forward pass (ForwardAll), or {"output"} before
  // the first: for metadata. The registry's warm-up pass at load sets them for a
  // model with a warm-up shape.
  virtual std::vector<std::string> OutputNames() const { return {"output"}; }
};

// The first output of ForwardAll's result: Forward for models that compute every
// output anyway.
inline absl::StatusOr<HostTensor> FirstOutput(absl::StatusOr<std::vector<NamedTensor>> all) {
  if (!all.ok()) return all.status();
  return std::move(all->front().tensor);
}

// A model's OutputNames: the names of its last forward pass's outputs
// ({"output"} before the first). Thread-safe.
class OutputNamesRecord {
 public:
  std::vector<std::string> Get() const {
    absl::MutexLock lock(&mu_);
    return names_;
  }
  void Set(const std::vector<NamedTensor>& outputs) {
    absl::MutexLock lock(&mu_);
    if (names_.size() == outputs.size() &&
        std::equal(names_.begin(), names_.end(), outputs.begin(),
                   [](const std::string& n, const NamedTensor& o) { return n == o.name; })) {
      return;
    }
    names_.clear();
    for (const NamedTensor& o : outputs) names_.push_back(o.name);
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_) = {"output"};
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_MODEL_H_
