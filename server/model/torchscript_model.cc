#include "server/model/torchscript_model.h"

#include <fcntl.h>
#include <torch/script.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/torchscript_archive.h"
#include "server/checkpoint/zip_reader.h"
#include "server/model/tensor_convert.h"
#include "server/model/torchscript_ops.h"

namespace modelserver {

struct TorchScriptModel::Impl {
  mutable torch::jit::Module module;
};

TorchScriptModel::TorchScriptModel(std::unique_ptr<Impl> impl, ModelInfo info, at::Device device)
    // The module's own checks (shapes, dtypes) are the caller's input errors.
    : TorchModel(std::move(info), device, absl::StatusCode::kInvalidArgument,
                 "the TorchScript module rejected the input"),
      impl_(std::move(impl)) {}

TorchScriptModel::~TorchScriptModel() = default;

absl::StatusOr<std::shared_ptr<TorchScriptModel>> TorchScriptModel::Load(const std::string& path,
                                                                         const std::string& device,
                                                                         bool trusted) {
  // A readable archive that holds TorchScript code and runs none while loading,
  // before LibTorch sees it.
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  if (!trusted) {
    RETURN_IF_ERROR(CheckTorchScriptArchive(*zip, path));
  } else if (!HasTorchScriptCode(*zip)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path,
                     " is not a TorchScript archive (no code/ records); a file written by "
                     "torch.save(model.state_dict()) is format STATE_DICT"));
  }
  auto impl = std::make_unique<Impl>();
  ModelInfo info;
  info.format = ModelFormat::kTorchScript;
  info.device = device;
  at::Device dev(at::kCPU);
  try {
    dev = at::Device(device);
    impl->module = torch::jit::load(path, dev);
    impl->module.eval();
    if (!trusted) RETURN_IF_ERROR(CheckTorchScriptOperators(impl->module));
    info.architecture = impl->module.type()->name()->qualifiedName();
    for (const auto& p : impl->module.parameters()) info.parameter_bytes += p.nbytes();
    for (const auto& b : impl->module.buffers()) info.parameter_bytes += b.nbytes();
  } catch (const std::exception& e) {
    return TorchError(e, absl::StrCat("loading TorchScript ", path),
                      absl::StatusCode::kFailedPrecondition);
  }
  return std::shared_ptr<TorchScriptModel>(
      new TorchScriptModel(std::move(impl), std::move(info), dev));
}

absl::Status TorchScriptModel::ValidateInput(DType dtype, const std::vector<int64_t>& shape) const {
  if (dtype == DType::kUnspecified) return absl::InvalidArgumentError("input dtype is not set");
  if (shape.empty()) {
    return absl::InvalidArgumentError(
        "input is a scalar, expected [N, ...] with a batch dimension");
  }
  if (shape[0] < 1) {
    return absl::InvalidArgumentError(absl::StrCat("input shape ", ShapeString(shape),
                                                   " is empty, expected at least one sample"));
  }
  return absl::OkStatus();
}

absl::Status TorchScriptModel::Save(ModelFormat format, const std::string& path) const {
  if (format != ModelFormat::kTorchScript) {
    return absl::UnimplementedError(
        absl::StrCat("a TorchScript model can only be saved as "
                     "TORCHSCRIPT, not ",
                     ModelFormatName(format)));
  }
  try {
    impl_->module.save(path);
  } catch (const std::exception& e) {
    return TorchError(e, absl::StrCat("saving TorchScript to ", path));
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    if (fd >= 0) close(fd);
    return absl::InternalError(absl::StrCat("fsync ", path));
  }
  close(fd);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> TorchScriptModel::Run(const at::Tensor& x) const {
  c10::IValue result = impl_->module.forward({x});
  if (!result.isTensor()) {
    return absl::FailedPreconditionError(absl::StrCat("the TorchScript module returned a ",
                                                      result.tagKind(), ", expected one tensor"));
  }
  return result.toTensor();
}

}  // namespace modelserver
