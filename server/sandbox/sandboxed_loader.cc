#include "server/sandbox/sandboxed_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/exported_program.h"
#include "server/checkpoint/zip_reader.h"
#include "server/sandbox/sandboxed_model.h"
#include "server/util/logging.h"

namespace modelserver {
namespace {

// The whole file in one buffer of its size (a stringstream copy of a 528 MB file
// took 8.8 s here; this takes what the disk takes).
absl::StatusOr<std::string> ReadWhole(const std::string& path, const char* what) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::DataLossError(absl::StrCat("cannot open ", what));
  struct stat st {};
  std::string bytes;
  bool ok = fstat(fd, &st) == 0;
  if (ok) bytes.resize(static_cast<size_t>(st.st_size));
  for (size_t done = 0; ok && done < bytes.size();) {
    const ssize_t n = read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  close(fd);
  if (!ok) return absl::DataLossError(absl::StrCat("cannot read ", what));
  return bytes;
}

}  // namespace

std::string DefaultWorkerPath() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "model-worker";
  return (self.parent_path() / "model-worker").string();
}

ModelLoaderFunction MakeSandboxedLoader(SandboxLoaderOptions options) {
  return [options = std::move(options)](
             const ModelLoadOptions& lo) -> absl::StatusOr<std::shared_ptr<const Model>> {
    // TorchScript templates run code; an exported program (architecture.pt2) is data
    // run by the interpreter's allowlist, in process like a program itself.
    const bool is_template = lo.format == ModelFormat::kStateDict && lo.architecture.empty() &&
                             !lo.architecture_path.empty() &&
                             !absl::EndsWith(lo.architecture_path, ".pt2");
    const bool compiled = lo.format == ModelFormat::kAotiPackage;
    RETURN_IF_ERROR(CheckInt8Applies(lo));  // never for what runs in a worker
    if (compiled
            ? options.trust_compiled_models
            : (lo.trust_torchscript || (lo.format != ModelFormat::kTorchScript && !is_template))) {
      return LoadModelFromFile(lo);
    }
    SandboxedModel::Options so;
    so.worker_path = options.worker_path;
    so.name = lo.name.empty()  ? "the model"
              : lo.version > 0 ? absl::StrCat("model '", lo.name, "' version ", lo.version)
                               : absl::StrCat("model '", lo.name, "' (upload check)");
    so.compiled = compiled;
    if (compiled && !lo.architecture_path.empty()) {
      // The program the package was compiled from: its input shapes, read here
      // torch-free (it is data).
      ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(lo.architecture_path));
      ASSIGN_OR_RETURN(const exported::ExportedProgram program,
                       exported::ReadExportedProgram(std::move(zip), "the package's program"));
      ASSIGN_OR_RETURN(so.input_dims, exported::UserInputDims(program, 0, &so.warmup_shape));
    }
    so.device = lo.device;
    so.precision = lo.precision;
    so.memory_layout = lo.memory_layout;
    so.verify_crc = lo.verify_crc;
    so.threads = options.threads;
    so.channels = options.channels;
    so.quantized_engine =
        lo.quantized_engine.empty() ? options.quantized_engine : lo.quantized_engine;
    so.data_bytes = options.memory_bytes;
    so.max_forward = options.max_forward;
    so.max_load = options.max_load;
    so.on_failed = lo.on_failed;
    if (options.on_restart && !lo.name.empty()) {
      so.on_restart = [f = options.on_restart, name = lo.name](const std::string& reason) {
        f(name, reason);
      };
    }
    std::string bytes;
    if (is_template) {
      ASSIGN_OR_RETURN(bytes, ReadWhole(lo.architecture_path, "the architecture template"));
      so.template_bytes = bytes.size();
      ASSIGN_OR_RETURN(std::string weights, ReadWhole(lo.path, "the state dict"));
      bytes += weights;
    } else {
      ASSIGN_OR_RETURN(bytes,
                       ReadWhole(lo.path, compiled ? "the package" : "the TorchScript file"));
    }
    const std::string name = so.name;
    ASSIGN_OR_RETURN(std::shared_ptr<SandboxedModel> model,
                     SandboxedModel::Load(std::move(bytes), std::move(so)));
    LOG_INFO(name, " runs in a sandboxed worker (pid ", model->worker_pid(),
             "): ", model->sandbox_summary());
    return std::shared_ptr<const Model>(std::move(model));
  };
}

}  // namespace modelserver
