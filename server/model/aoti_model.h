#ifndef MODELSERVER_SERVER_MODEL_AOTI_MODEL_H_
#define MODELSERVER_SERVER_MODEL_AOTI_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/checkpoint/exported_program.h"
#include "server/model/torch_model.h"

namespace modelserver {

class ZipReader;

// An AOTInductor package (torch._inductor.aoti_compile_and_package's `.pt2`: a
// zip with data/aotinductor/<model>/<hash>.so, its generated .cpp and
// <hash>_metadata.json) served as a Model through LibTorch's
// AOTIModelContainerRunnerCpu. LibTorch >= 2.6 builds only (elsewhere Load is
// UNIMPLEMENTED saying so).
//
// The package is native code: its shared library runs with this process's
// rights the moment it is opened (its constructors) and on every call. So it is
// loaded in a sandboxed model worker (server/sandbox: LoadFromFd there), or in
// process only with --trust_compiled_models. The library is never written to a
// path: its bytes are copied from the archive into a memfd and opened as
// /proc/self/fd/N (read-only; the sandbox lets nothing else be opened).
//
// The archive is read torch-free (ZipReader, budgets below) and checked before
// the library is opened: exactly one model with exactly one library, its
// metadata's device ("cpu"; packages compiled for other devices are refused
// naming theirs), one tensor input (the model's own count, asked after the
// open). Outputs are named as a TorchScript module's: `output`, or `output0`,
// `output1`, ... by position. It computes in what it was compiled for: fp32
// only (other --precision modes are FAILED_PRECONDITION).
//
// Input shapes: torch does not store the exported shapes or ranges in the
// package (only a debug build of it checks them, inside the untrusted code), and
// the compiled kernels trust their input. So the program the package was
// compiled from (torch.export.save(ep), the version's architecture.pt2) gives
// them: with it, every input is checked against the program's shapes and ranges
// (exported::CheckInputShape) and a batch past the batch range's maximum (or a
// multiple of a fixed batch) runs in pieces inside it, as an exported program
// does. Without it, any rank >= 1 goes to the compiled code, which computes
// garbage or reads past its buffers for a shape it was not compiled for --
// inside the sandbox, where that costs the worker at most.
//
// Thread-safe: the runner holds `num_models` model instances and hands each call
// a free one.
class AotiModel : public TorchModel {
 public:
  // The package at `path` (in process: trusted), with the input shapes of the
  // program at `program_path` (the exported program it was compiled from; ""
  // when none: shapes unchecked).
  static absl::StatusOr<std::shared_ptr<AotiModel>> Load(const std::string& path,
                                                         const std::string& device,
                                                         const Numerics& numerics, int num_models,
                                                         const std::string& program_path = "");
  // The package in the open file `fd` (a sandboxed worker's memfd); batches past
  // `batch_piece` samples (> 0; the server checked the shapes) run in pieces of
  // at most that many.
  static absl::StatusOr<std::shared_ptr<AotiModel>> LoadFromFd(int fd, const std::string& device,
                                                               const Numerics& numerics,
                                                               int num_models,
                                                               int64_t batch_piece = 0);
  ~AotiModel() override;

  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override;
  bool IsUnbatched(const std::vector<int64_t>&) const override { return false; }
  // The program's example shape (empty without a program).
  std::vector<int64_t> WarmupShape() const override;
  // AOTI_PACKAGE: the package as it was given (read again from the descriptor
  // the model keeps open).
  absl::Status Save(ModelFormat format, const std::string& path) const override;

  struct Impl;

 protected:
  absl::StatusOr<NamedOutputs> RunAll(const at::Tensor& x) const override;
  absl::StatusOr<at::Tensor> Run(const at::Tensor& x) const override;

 private:
  AotiModel(std::unique_ptr<Impl> impl, ModelInfo info, at::Device device,
            const Numerics& numerics);
  // LoadFromFd's work once the archive is open; `fd` is kept (dup) for Save.
  static absl::StatusOr<std::shared_ptr<AotiModel>> LoadPackage(const ZipReader& zip, int fd,
                                                                const std::string& device,
                                                                const Numerics& numerics,
                                                                int num_models);
  std::unique_ptr<Impl> impl_;  // constant after construction
};

// Whether this build can serve AOTInductor packages (LibTorch >= 2.6 with the
// AOTI runner's headers).
bool AotiSupported();

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_AOTI_MODEL_H_
