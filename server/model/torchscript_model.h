#ifndef MODELSERVER_SERVER_MODEL_TORCHSCRIPT_MODEL_H_
#define MODELSERVER_SERVER_MODEL_TORCHSCRIPT_MODEL_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/tensor_materializer.h"
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
  // `numerics`: the module's floating parameters and buffers are converted to its
  // precision, and its 4-D ones made channels-last when asked (inputs follow).
  static absl::StatusOr<std::shared_ptr<TorchScriptModel>> Load(const std::string& path,
                                                                const std::string& device,
                                                                bool trusted = false,
                                                                const Numerics& numerics = {});
  // Load() of the whole open file `fd` (a sandboxed worker's memfd: it opens no
  // path), read in place.
  static absl::StatusOr<std::shared_ptr<TorchScriptModel>> LoadFromFd(
      int fd, const std::string& device, bool trusted = false, const Numerics& numerics = {});
  // A state dict (`weights_path`, torch.save(model.state_dict())) served in an
  // architecture template (`template_path`, a TorchScript module of the same
  // nn.Module class, weights irrelevant): the template is checked and loaded as
  // Load() does, the state dict must hold exactly its parameters and buffers
  // (FAILED_PRECONDITION listing missing / unexpected keys and shape mismatches,
  // as load_state_dict(strict=True)), and its tensors become the module's.
  // Saves as STATE_DICT (loads into the original class in Python) or TORCHSCRIPT
  // (the template with these weights).
  static absl::StatusOr<std::shared_ptr<TorchScriptModel>> LoadTemplate(
      const std::string& template_path, const std::string& weights_path, const std::string& device,
      bool trusted, const Numerics& numerics, bool verify_crc);
  // LoadTemplate() of the open file `fd` holding the template in its first
  // `template_size` bytes and the state dict after them (a sandboxed worker).
  static absl::StatusOr<std::shared_ptr<TorchScriptModel>> LoadTemplateFromFd(
      int fd, uint64_t template_size, const std::string& device, bool trusted,
      const Numerics& numerics, bool verify_crc);
  ~TorchScriptModel() override;

  // Any known dtype, rank >= 1, a non-empty batch; the module checks the rest (its
  // errors come back from Forward as INVALID_ARGUMENT).
  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override;
  bool IsUnbatched(const std::vector<int64_t>&) const override { return false; }
  // Unknown for an arbitrary module: no warm-up pass.
  std::vector<int64_t> WarmupShape() const override { return {}; }
  absl::Status Save(ModelFormat format, const std::string& path) const override;
  // Save() to an open descriptor (a sandboxed worker's memfd; not synced).
  absl::Status SaveToFd(ModelFormat format, int fd) const;

 protected:
  // Calls the module's forward, its warnings going to the log (ModelWarningLog).
  // A module with several outputs (tuple, named tuple, list, dict of tensors)
  // gives each tensor as an output of its own, named as Model::ForwardAll says,
  // None elements skipped. FAILED_PRECONDITION when the result holds no tensor,
  // more than kMaxModelOutputs, a name longer than kMaxOutputNameBytes or two
  // outputs of one name.
  absl::StatusOr<NamedOutputs> RunAll(const at::Tensor& x) const override;
  // RunAll()'s first output.
  absl::StatusOr<at::Tensor> Run(const at::Tensor& x) const override;

 private:
  struct Impl;
  // Its parameters and buffers by key, float32 on the CPU whatever it serves in:
  // what load_state_dict(strict=True) of the original nn.Module takes.
  StateDict StateDictForSave() const;
  TorchScriptModel(std::unique_ptr<Impl> impl, ModelInfo info, at::Device device,
                   const Numerics& numerics);
  // A window of an open file (the sandboxed worker's memfd).
  struct FdWindow {
    int fd = -1;
    uint64_t offset = 0;
    uint64_t size = 0;
  };
  // Load / LoadFromFd: the file at `path`, or `window` when not null (then `path`
  // only names it in messages).
  static absl::StatusOr<std::shared_ptr<TorchScriptModel>> LoadFrom(const std::string& path,
                                                                    const FdWindow* window,
                                                                    const std::string& device,
                                                                    bool trusted,
                                                                    const Numerics& numerics);
  // Converts the loaded module to `numerics`, fills in `info`, builds the model.
  // LoadTemplate / LoadTemplateFromFd: files, or windows of an open file when the
  // pointers are not null.
  static absl::StatusOr<std::shared_ptr<TorchScriptModel>> LoadTemplateFrom(
      const std::string& template_path, const std::string& weights_path,
      const FdWindow* template_window, const FdWindow* weights_window, const std::string& device,
      bool trusted, const Numerics& numerics, bool verify_crc);
  static absl::StatusOr<std::shared_ptr<TorchScriptModel>> Finish(std::unique_ptr<Impl> impl,
                                                                  ModelInfo info,
                                                                  const at::Device& device,
                                                                  const Numerics& numerics);

  std::unique_ptr<Impl> impl_;  // constant after construction
};

// Whether a state dict whose tensors have these shapes (by key) fits the
// architecture template at `template_path` (checked and loaded on the CPU as
// TorchScriptModel::Load does, unless `trusted`): FAILED_PRECONDITION as
// LoadTemplate reports it. For uploads: no tensor is read.
absl::Status CheckTemplateStateDict(const std::string& template_path,
                                    const std::map<std::string, std::vector<int64_t>>& given,
                                    bool trusted);

class ZipReader;

// Whether this build's LibTorch reads the TorchScript archive's file format version:
// FAILED_PRECONDITION naming the file's version, this LibTorch's version and the
// newest format it reads when the file was written by a newer torch; OK when it
// reads it or the archive names no version (LibTorch's own error then). A friendly
// early error before LibTorch's less telling one.
absl::Status CheckTorchScriptFormatVersion(const ZipReader& zip, const std::string& what);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TORCHSCRIPT_MODEL_H_
