#ifndef MODELSERVER_SERVER_MODEL_TORCHSCRIPT_MODEL_H_
#define MODELSERVER_SERVER_MODEL_TORCHSCRIPT_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/torch_model.h"

namespace modelserver {

// A TorchScript module (torch.jit.script / torch.jit.trace, saved with
// torch.jit.save) served as a Model: loaded with torch::jit::load onto the
// device, eval mode, called with one tensor whose first dimension is the batch.
// Thread-safe: forward only reads the module.
class TorchScriptModel : public TorchModel {
 public:
  // DATA_LOSS for an unreadable or truncated archive; FAILED_PRECONDITION for one
  // that is not a TorchScript module (or that LibTorch refuses). Unless `trusted`
  // (--trust_torchscript), also FAILED_PRECONDITION for a module that defines
  // __setstate__ (checked before LibTorch reads the file) or calls an operator
  // off the allowlist (CheckTorchScriptOperators, after loading, before serving).
  static absl::StatusOr<std::shared_ptr<TorchScriptModel>> Load(const std::string& path,
                                                                const std::string& device,
                                                                bool trusted = false);
  ~TorchScriptModel() override;

  // Any known dtype, rank >= 1, a non-empty batch; the module checks the rest (its
  // errors come back from Forward as INVALID_ARGUMENT).
  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override;
  bool IsUnbatched(const std::vector<int64_t>&) const override { return false; }
  // Unknown for an arbitrary module: no warm-up pass.
  std::vector<int64_t> WarmupShape() const override { return {}; }
  absl::Status Save(ModelFormat format, const std::string& path) const override;

 protected:
  // Calls the module's forward; FAILED_PRECONDITION when it returns anything but one tensor.
  absl::StatusOr<at::Tensor> Run(const at::Tensor& x) const override;

 private:
  struct Impl;
  TorchScriptModel(std::unique_ptr<Impl> impl, ModelInfo info, at::Device device);

  std::unique_ptr<Impl> impl_;  // constant after construction
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TORCHSCRIPT_MODEL_H_
