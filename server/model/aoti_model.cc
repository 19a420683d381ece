#include "server/model/aoti_model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/aoti_package.h"
#include "server/checkpoint/zip_reader.h"
#include "server/model/tensor_convert.h"

#if (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6)) && \
    __has_include(<torch/csrc/inductor/aoti_runner/model_container_runner_cpu.h>)
#define MODELSERVER_HAVE_AOTI 1
#include <ATen/DynamicLibrary.h>
#include <torch/csrc/inductor/aoti_runner/model_container_runner_cpu.h>
#endif

namespace modelserver {
namespace {
#ifdef MODELSERVER_HAVE_AOTI

// The library's bytes in a sealed memfd (never a path of the filesystem).
absl::StatusOr<int> LibraryMemfd(const ZipReader& zip, const ZipReader::Entry& library) {
  const int fd = memfd_create("aoti-model.so", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return absl::InternalError(absl::StrCat("memfd_create: ", std::strerror(errno)));
  const uint64_t size = library.size;
  void* map = MAP_FAILED;
  absl::Status s;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    s = absl::ResourceExhaustedError("no memory for the package's library");
  } else if (size > 0) {
    map = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) s = absl::ResourceExhaustedError("no memory for the package's library");
  }
  if (s.ok() && size > 0) s = zip.ReadInto(library, map, /*verify_crc=*/true);
  if (map != MAP_FAILED) munmap(map, size);
  if (s.ok()) (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  if (!s.ok()) {
    close(fd);
    return s;
  }
  return fd;
}

#endif
}  // namespace

#ifdef MODELSERVER_HAVE_AOTI

namespace {
// The runner, with the model library's own entry points it does not wrap.
class Runner : public torch::inductor::AOTIModelContainerRunnerCpu {
 public:
  Runner(const std::string& path, size_t num_models)
      : AOTIModelContainerRunnerCpu(path, num_models) {}
  // The model's count of inputs (its graph's user inputs, flattened).
  absl::StatusOr<size_t> NumInputs() {
    using Fn = decltype(&AOTInductorModelContainerGetNumInputs);
    Fn fn = nullptr;
    try {  // sym() throws for a library without the symbol
      fn = reinterpret_cast<Fn>(model_so_->sym("AOTInductorModelContainerGetNumInputs"));
    } catch (const std::exception&) {
      fn = nullptr;
    }
    size_t n = 0;
    if (fn == nullptr || fn(container_handle_, &n) != AOTI_RUNTIME_SUCCESS) {
      return absl::FailedPreconditionError("the package's library does not tell its inputs");
    }
    return n;
  }
};
}  // namespace

struct AotiModel::Impl {
  ~Impl() {
    runner.reset();
    if (package_fd >= 0) close(package_fd);
  }
  std::unique_ptr<Runner> runner;
  int package_fd = -1;                   // the archive (Save)
  std::vector<exported::InputDim> dims;  // empty: shapes unchecked
  std::vector<int64_t> warmup_shape;
  int64_t batch_piece = 0;  // 0: whole batches
};

bool AotiSupported() { return true; }

#else

struct AotiModel::Impl {
  int package_fd = -1;
  std::vector<exported::InputDim> dims;
  std::vector<int64_t> warmup_shape;
  int64_t batch_piece = 0;
};
bool AotiSupported() { return false; }

#endif

AotiModel::AotiModel(std::unique_ptr<Impl> impl, ModelInfo info, at::Device device,
                     const Numerics& numerics)
    : TorchModel(std::move(info), device, numerics, absl::StatusCode::kInvalidArgument,
                 "the AOTInductor package"),
      impl_(std::move(impl)) {}

AotiModel::~AotiModel() = default;

namespace {
absl::StatusOr<std::shared_ptr<AotiModel>> Unsupported() {
  return absl::UnimplementedError(absl::StrCat(
      "AOTInductor packages are served by builds on LibTorch 2.6 or newer; this one has LibTorch ",
      TORCH_VERSION,
      " (export the model with torch.export.save instead: format "
      "EXPORTED_PROGRAM)"));
}
}  // namespace

absl::StatusOr<std::shared_ptr<AotiModel>> AotiModel::Load(const std::string& path,
                                                           const std::string& device,
                                                           const Numerics& numerics, int num_models,
                                                           const std::string& program_path) {
  std::vector<exported::InputDim> dims;
  std::vector<int64_t> warmup;
  if (!program_path.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(program_path));
    ASSIGN_OR_RETURN(const exported::ExportedProgram program,
                     exported::ReadExportedProgram(std::move(zip), "the package's program"));
    ASSIGN_OR_RETURN(dims, exported::UserInputDims(program, 0, &warmup));
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::DataLossError(absl::StrCat("cannot open ", path));
  absl::StatusOr<std::shared_ptr<AotiModel>> model =
      LoadFromFd(fd, device, numerics, num_models, dims.empty() ? 0 : exported::BatchPiece(dims));
  close(fd);
  if (model.ok()) {
    (*model)->impl_->dims = std::move(dims);
    (*model)->impl_->warmup_shape = std::move(warmup);
  }
  return model;
}

absl::StatusOr<std::shared_ptr<AotiModel>> AotiModel::LoadFromFd(int fd, const std::string& device,
                                                                 const Numerics& numerics,
                                                                 int num_models,
                                                                 int64_t batch_piece) {
  if (!AotiSupported()) return Unsupported();
  if (numerics.precision != Precision::kFp32 || numerics.channels_last) {
    return absl::FailedPreconditionError(
        "an AOTInductor package computes in what it was compiled for: serve it at --precision "
        "fp32 and the contiguous memory format (compile it from a bf16 model for bf16)");
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) return absl::InternalError("fstat of the package");
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip,
                   ZipReader::FromFd(fd, 0, static_cast<uint64_t>(st.st_size), "the package"));
  ASSIGN_OR_RETURN(std::shared_ptr<AotiModel> model,
                   LoadPackage(*zip, fd, device, numerics, num_models));
  model->impl_->batch_piece = batch_piece;
  return model;
}

absl::StatusOr<std::shared_ptr<AotiModel>> AotiModel::LoadPackage(const ZipReader& zip, int fd,
                                                                  const std::string& device,
                                                                  const Numerics& numerics,
                                                                  int num_models) {
#ifndef MODELSERVER_HAVE_AOTI
  (void)zip, (void)fd, (void)device, (void)numerics, (void)num_models;
  return Unsupported();
#else
  ASSIGN_OR_RETURN(const AotiPackage files, ReadAotiPackage(zip));
  if (files.device != "cpu") {
    return absl::FailedPreconditionError(absl::StrCat(
        "the package was compiled for device '", files.device,
        "'; this server runs AOTInductor packages compiled for the CPU (compile on a CPU export)"));
  }
  if (device != "cpu") {
    return absl::FailedPreconditionError(
        absl::StrCat("the package was compiled for the CPU and the model is placed on ", device,
                     " (serve it on the CPU: --model_devices NAME=cpu)"));
  }
  ASSIGN_OR_RETURN(const int so, LibraryMemfd(zip, *files.library));
  // dlopen reads the library through its descriptor; the mapping outlives it.
  const std::string so_path = absl::StrCat("/proc/self/fd/", so);
  auto impl = std::make_unique<AotiModel::Impl>();
  absl::Status s;
  try {
    impl->runner = std::make_unique<Runner>(so_path, static_cast<size_t>(std::max(1, num_models)));
  } catch (const std::exception& e) {
    s = TorchError(e, "opening the package's library", absl::StatusCode::kFailedPrecondition);
  }
  close(so);
  RETURN_IF_ERROR(s);
  ASSIGN_OR_RETURN(const size_t inputs, impl->runner->NumInputs());
  if (inputs != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the package's model takes ", inputs, " inputs; served are models of one tensor input"));
  }
  impl->package_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (impl->package_fd < 0) return absl::InternalError("dup of the package's descriptor");
  ModelInfo info;
  info.architecture = "aoti package";
  info.format = ModelFormat::kAotiPackage;
  info.device = device;
  info.precision = "fp32";
  info.memory_format = "contiguous";
  info.parameter_bytes = static_cast<int64_t>(files.library->size);
  return std::shared_ptr<AotiModel>(
      new AotiModel(std::move(impl), std::move(info), at::Device(at::kCPU), numerics));
#endif
}

absl::Status AotiModel::ValidateInput(DType dtype, const std::vector<int64_t>& shape) const {
  if (dtype != DType::kFloat32) {
    return absl::InvalidArgumentError(
        absl::StrCat("the package takes FP32 input, not ", DTypeName(dtype)));
  }
  if (!impl_->dims.empty()) {
    return exported::CheckInputShape(impl_->dims, shape, "the package was compiled");
  }
  if (shape.empty() || shape[0] < 1) {
    return absl::InvalidArgumentError("the input needs a batch dimension of at least 1");
  }
  return absl::OkStatus();
}

std::vector<int64_t> AotiModel::WarmupShape() const { return impl_->warmup_shape; }

absl::Status AotiModel::Save(ModelFormat format, const std::string& path) const {
  if (format != ModelFormat::kAotiPackage) {
    return absl::UnimplementedError(absl::StrCat(
        "an AOTInductor package can be saved as AOTI_PACKAGE only, not ", ModelFormatName(format)));
  }
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path));
  bool ok = true;
  char buffer[1 << 16];
  for (off_t at = 0;;) {
    const ssize_t n = pread(impl_->package_fd, buffer, sizeof(buffer), at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    for (ssize_t done = 0; ok && done < n;) {
      const ssize_t w = write(fd, buffer + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      ok = w > 0;
      if (ok) done += w;
    }
    if (!ok) break;
    at += n;
  }
  ok = ok && fsync(fd) == 0;
  close(fd);
  return ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path));
}

absl::StatusOr<TorchModel::NamedOutputs> AotiModel::RunAll(const at::Tensor& x) const {
#ifdef MODELSERVER_HAVE_AOTI
  const int64_t n = x.size(0);
  const int64_t piece = impl_->batch_piece;
  std::vector<at::Tensor> outputs;
  if (piece <= 0 || n <= piece) {
    outputs = impl_->runner->run({x.contiguous()});
  } else {  // in pieces inside the compiled range, joined
    std::vector<std::vector<at::Tensor>> parts;
    for (int64_t start = 0; start < n; start += piece) {
      parts.push_back(
          impl_->runner->run({x.narrow(0, start, std::min(piece, n - start)).contiguous()}));
    }
    for (size_t i = 0; i < parts.front().size(); ++i) {
      std::vector<at::Tensor> column;
      for (const auto& p : parts) {
        if (p.size() != parts.front().size() || p[i].dim() == 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "the batch of ", n, " runs in pieces of ", piece,
              " and an output has no batch dimension to join them by: send at most ", piece));
        }
        column.push_back(p[i]);
      }
      outputs.push_back(at::cat(column, 0));
    }
  }
  NamedOutputs named;
  for (size_t i = 0; i < outputs.size(); ++i) {
    named.emplace_back(outputs.size() == 1 ? std::string("output") : absl::StrCat("output", i),
                       std::move(outputs[i]));
  }
  if (named.empty()) return absl::FailedPreconditionError("the package's model has no outputs");
  return named;
#else
  (void)x;
  return absl::UnimplementedError("AOTInductor packages are not served by this build");
#endif
}

absl::StatusOr<at::Tensor> AotiModel::Run(const at::Tensor& x) const {
  ASSIGN_OR_RETURN(NamedOutputs all, RunAll(x));
  return std::move(all.front().second);
}

}  // namespace modelserver
