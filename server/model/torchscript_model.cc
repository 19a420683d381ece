#include "server/model/torchscript_model.h"

#include <caffe2/serialize/file_adapter.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <caffe2/serialize/versions.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <torch/script.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/checkpoint/state_dict_parser.h"
#include "server/checkpoint/torchscript_archive.h"
#include "server/checkpoint/zip_reader.h"
#include "server/model/model_warnings.h"
#include "server/model/packed_params_check.h"
#include "server/model/state_dict_writer.h"
#include "server/model/tensor_convert.h"
#include "server/model/tensor_materializer.h"
#include "server/model/torch_compat.h"
#include "server/model/torchscript_ops.h"
#include "server/util/logging.h"

namespace modelserver {

struct TorchScriptModel::Impl {
  mutable torch::jit::Module module;
  std::unique_ptr<ModelWarningLog> warnings;  // what its forward warns
  mutable std::atomic<bool> told_outputs{false};
};

TorchScriptModel::TorchScriptModel(std::unique_ptr<Impl> impl, ModelInfo info, at::Device device,
                                   const Numerics& numerics)
    // The module's own checks (shapes, dtypes) are the caller's input errors.
    : TorchModel(std::move(info), device, numerics, absl::StatusCode::kInvalidArgument,
                 "the TorchScript module rejected the input"),
      impl_(std::move(impl)) {}

TorchScriptModel::~TorchScriptModel() = default;

absl::Status CheckTorchScriptFormatVersion(const ZipReader& zip, const std::string& what) {
  absl::StatusOr<uint64_t> version = TorchScriptFormatVersion(zip);
  const uint64_t newest = caffe2::serialize::kMaxSupportedFileFormatVersion;
  if (!version.ok() || *version <= newest) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " is TorchScript file format version ", *version, ", written by a newer torch than ",
      "this server's LibTorch ", TORCH_VERSION, " reads (format versions up to ", newest,
      "): save it with a torch that writes version ", newest,
      " or older, or serve it from a build with a newer LibTorch"));
}

namespace {

// TORCHSCRIPT or STATE_DICT; UNIMPLEMENTED naming any other format.
absl::Status CheckSaveFormat(ModelFormat format) {
  if (format == ModelFormat::kTorchScript || format == ModelFormat::kStateDict) {
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrCat("a TorchScript model can be saved as TORCHSCRIPT or STATE_DICT, not ",
                   ModelFormatName(format)));
}

// LibTorch's archive reader over bytes [offset, offset + size) of an open file,
// read in place with pread (no copy of the file first).
class FdReadAdapter : public caffe2::serialize::ReadAdapterInterface {
 public:
  FdReadAdapter(int fd, uint64_t offset, uint64_t size) : fd_(fd), offset_(offset), size_(size) {}
  size_t size() const override { return static_cast<size_t>(size_); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= size_) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, size_ - pos));
    size_t done = 0;
    while (done < n) {
      const ssize_t got = pread(fd_, static_cast<char*>(buf) + done, n - done,
                                static_cast<off_t>(offset_ + pos + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }

 private:
  const int fd_;  // outlives the load
  const uint64_t offset_, size_;
};

// A TorchScript archive loaded onto `device` in eval mode, after the checks that
// make it safe to hand to LibTorch (unless `trusted`). `what` names the file in
// messages. With `fd` >= 0 the archive is bytes [offset, offset + size) of that
// open file instead of `path` (a sandboxed worker opens no path).
absl::Status OpenModule(const std::string& path, const std::string& what, const at::Device& device,
                        bool trusted, torch::jit::Module* module, int fd = -1, uint64_t offset = 0,
                        uint64_t size = 0) {
  // A readable archive that holds TorchScript code and runs none while loading,
  // before LibTorch sees it.
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip,
                   fd >= 0 ? ZipReader::FromFd(fd, offset, size, what) : ZipReader::Open(path));
  RETURN_IF_ERROR(CheckTorchScriptFormatVersion(*zip, what));
  if (!trusted) {
    RETURN_IF_ERROR(CheckTorchScriptArchive(*zip, what));
  } else if (!HasTorchScriptCode(*zip)) {
    return absl::FailedPreconditionError(
        absl::StrCat(what,
                     " is not a TorchScript archive (no code/ records); a file written by "
                     "torch.save(model.state_dict()) is format STATE_DICT"));
  }
  std::shared_ptr<caffe2::serialize::ReadAdapterInterface> source;
  if (fd >= 0) {
    source = std::make_shared<FdReadAdapter>(fd, offset, size);
  } else {
    source = std::make_shared<caffe2::serialize::FileAdapter>(path);
  }
  RETURN_IF_ERROR(CheckPackedParams(*zip, what));
  *module = torch::jit::load(source, device);
  module->eval();
  if (!trusted) RETURN_IF_ERROR(CheckTorchScriptOperators(*module));
  return absl::OkStatus();
}

// The tensors of a forward pass's result in order, depth first, with their names
// (Model::ForwardAll): `name` for a tensor; a tuple's or list's element i is
// `prefix` + i ("output1", "output1.0"), a dict's entry its key (nested:
// "key.0"). None counted in `*nones`; other values (ints, strings) skipped.
// Nesting past 8 levels is not looked into.
void CollectTensors(const c10::IValue& v, const std::string& name, const std::string& prefix,
                    TorchModel::NamedOutputs* tensors, int64_t* nones, int depth) {
  if (v.isTensor()) {
    tensors->emplace_back(name, v.toTensor());
  } else if (v.isNone()) {
    ++*nones;
  } else if (depth >= 8) {
    return;
  } else if (v.isTuple() || v.isList()) {
    size_t i = 0;
    auto each = [&](const c10::IValue& e) {
      const std::string n = absl::StrCat(prefix, i++);
      CollectTensors(e, n, n + ".", tensors, nones, depth + 1);
    };
    if (v.isTuple()) {
      for (const c10::IValue& e : v.toTupleRef().elements()) each(e);
    } else {
      for (const c10::IValue& e : v.toListRef()) each(e);
    }
  } else if (v.isGenericDict()) {
    const std::string stem = depth == 0 ? "" : name + ".";
    for (const auto& entry : v.toGenericDict()) {
      const c10::IValue& key = entry.key();
      std::string n = stem;
      if (key.isString()) {
        absl::StrAppend(&n, key.toStringRef());
      } else if (key.isInt()) {
        absl::StrAppend(&n, key.toInt());
      } else {
        absl::StrAppend(&n, key.tagKind());  // made unique or refused by the caller
      }
      CollectTensors(entry.value(), n, n + ".", tensors, nones, depth + 1);
    }
  }
}

// The module's parameters and buffers by state-dict key ("features.0.weight").
std::map<std::string, at::Tensor> NamedTensors(const torch::jit::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.name] = p.value;
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.name] = b.value;
  return out;
}

// OK when `given` (key -> shape) is exactly the module's parameters and buffers,
// as load_state_dict(strict=True) checks; else FAILED_PRECONDITION listing the
// missing and unexpected keys and the shape mismatches. `what` names the state dict.
absl::Status CheckStateDictFitsModule(const torch::jit::Module& module,
                                      const std::map<std::string, std::vector<int64_t>>& given,
                                      const std::string& what) {
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& [k, t] : NamedTensors(module)) {
    expected[k] = std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
  }
  const std::string mismatch = StateDictMismatch(expected, given, "the template");
  if (mismatch.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " does not fit the architecture template ", module.type()->name()->qualifiedName(),
      " (load_state_dict(strict=True) would fail): ", mismatch));
}

}  // namespace

absl::Status CheckTemplateStateDict(const std::string& template_path,
                                    const std::map<std::string, std::vector<int64_t>>& given,
                                    bool trusted) {
  try {
    torch::jit::Module module;
    RETURN_IF_ERROR(OpenModule(template_path, "the architecture template", at::Device(at::kCPU),
                               trusted, &module));
    return CheckStateDictFitsModule(module, given, "the state dict");
  } catch (const std::exception& e) {
    return TorchError(e, "loading the architecture template",
                      absl::StatusCode::kFailedPrecondition);
  }
}

absl::StatusOr<std::shared_ptr<TorchScriptModel>> TorchScriptModel::Load(const std::string& path,
                                                                         const std::string& device,
                                                                         bool trusted,
                                                                         const Numerics& numerics) {
  return LoadFrom(path, nullptr, device, trusted, numerics);
}

absl::StatusOr<std::shared_ptr<TorchScriptModel>> TorchScriptModel::LoadFromFd(
    int fd, const std::string& device, bool trusted, const Numerics& numerics) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return absl::InternalError("fstat of the TorchScript file");
  const FdWindow window{fd, 0, static_cast<uint64_t>(st.st_size)};
  return LoadFrom("the TorchScript file", &window, device, trusted, numerics);
}

absl::StatusOr<std::shared_ptr<TorchScriptModel>> TorchScriptModel::LoadFrom(
    const std::string& path, const FdWindow* window, const std::string& device, bool trusted,
    const Numerics& numerics) {
  auto impl = std::make_unique<Impl>();
  ModelInfo info;
  info.format = ModelFormat::kTorchScript;
  info.device = device;
  at::Device dev(at::kCPU);
  try {
    dev = at::Device(device);
    RETURN_IF_ERROR(window != nullptr ? OpenModule(path, path, dev, trusted, &impl->module,
                                                   window->fd, window->offset, window->size)
                                      : OpenModule(path, path, dev, trusted, &impl->module));
  } catch (const std::exception& e) {
    return TorchError(e, absl::StrCat("loading TorchScript ", path),
                      absl::StatusCode::kFailedPrecondition);
  }
  return Finish(std::move(impl), std::move(info), dev, numerics);
}

absl::StatusOr<std::shared_ptr<TorchScriptModel>> TorchScriptModel::LoadTemplate(
    const std::string& template_path, const std::string& weights_path, const std::string& device,
    bool trusted, const Numerics& numerics, bool verify_crc) {
  return LoadTemplateFrom(template_path, weights_path, nullptr, nullptr, device, trusted, numerics,
                          verify_crc);
}

absl::StatusOr<std::shared_ptr<TorchScriptModel>> TorchScriptModel::LoadTemplateFromFd(
    int fd, uint64_t template_size, const std::string& device, bool trusted,
    const Numerics& numerics, bool verify_crc) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) <= template_size) {
    return absl::InvalidArgumentError("the template's size is past the file's memory");
  }
  const FdWindow architecture{fd, 0, template_size};
  const FdWindow weights{fd, template_size, static_cast<uint64_t>(st.st_size) - template_size};
  return LoadTemplateFrom("the architecture template", "the state dict", &architecture, &weights,
                          device, trusted, numerics, verify_crc);
}

absl::StatusOr<std::shared_ptr<TorchScriptModel>> TorchScriptModel::LoadTemplateFrom(
    const std::string& template_path, const std::string& weights_path,
    const FdWindow* template_window, const FdWindow* weights_window, const std::string& device,
    bool trusted, const Numerics& numerics, bool verify_crc) {
  auto impl = std::make_unique<Impl>();
  ModelInfo info;
  info.format = ModelFormat::kStateDict;
  info.device = device;
  info.from_template = true;
  at::Device dev(at::kCPU);
  try {
    dev = at::Device(device);
    RETURN_IF_ERROR(template_window != nullptr
                        ? OpenModule(template_path, "the architecture template",
                                     at::Device(at::kCPU), trusted, &impl->module,
                                     template_window->fd, template_window->offset,
                                     template_window->size)
                        : OpenModule(template_path, "the architecture template",
                                     at::Device(at::kCPU), trusted, &impl->module));
    CheckpointReadOptions read;
    read.verify_crc = verify_crc;
    ASSIGN_OR_RETURN(StateDict state,
                     weights_window != nullptr
                         ? ReadStateDictFromFd(weights_window->fd, weights_window->offset,
                                               weights_window->size, weights_path, read)
                         : ReadStateDict(weights_path, read));
    std::map<std::string, std::vector<int64_t>> given;
    for (const auto& [k, t] : state)
      given[k] = std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
    RETURN_IF_ERROR(CheckStateDictFitsModule(impl->module, given, weights_path));
    // The checkpoint's tensors become the module's (no copy when the dtype is the
    // template's; the device move and the precision conversion below copy once).
    std::map<std::string, at::Tensor> slots = NamedTensors(impl->module);
    for (auto& [k, t] : state) {
      at::Tensor& slot = slots.at(k);
      slot.set_data(t.scalar_type() == slot.scalar_type() ? t : t.to(slot.scalar_type()));
    }
    state.clear();
    if (!dev.is_cpu()) impl->module.to(dev);
  } catch (const std::exception& e) {
    return TorchError(e, absl::StrCat("loading ", weights_path, " into its architecture template"),
                      absl::StatusCode::kFailedPrecondition);
  }
  return Finish(std::move(impl), std::move(info), dev, numerics);
}

absl::StatusOr<std::shared_ptr<TorchScriptModel>> TorchScriptModel::Finish(
    std::unique_ptr<Impl> impl, ModelInfo info, const at::Device& device,
    const Numerics& numerics) {
  try {
    if (numerics.dtype() != at::kFloat) impl->module.to(numerics.dtype());
    if (numerics.channels_last) {
      for (at::Tensor p : impl->module.parameters()) {
        if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
      }
    }
    info.architecture = impl->module.type()->name()->qualifiedName();
    if (info.from_template) info.architecture = "template " + info.architecture;
    std::string label = ModelWarningLog::ProcessLabel();
    if (label.empty()) label = "TorchScript model " + info.architecture;
    impl->warnings = std::make_unique<ModelWarningLog>(std::move(label));
    for (const auto& p : impl->module.parameters()) info.parameter_bytes += p.nbytes();
    for (const auto& b : impl->module.buffers()) info.parameter_bytes += b.nbytes();
  } catch (const std::exception& e) {
    return TorchError(e, "preparing the TorchScript module", absl::StatusCode::kFailedPrecondition);
  }
  return std::shared_ptr<TorchScriptModel>(
      new TorchScriptModel(std::move(impl), std::move(info), device, numerics));
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

absl::Status TorchScriptModel::SaveToFd(ModelFormat format, int fd) const {
  RETURN_IF_ERROR(CheckSaveFormat(format));
  if (format == ModelFormat::kStateDict) {
    try {
      return WriteStateDictToFd(StateDictForSave(), fd);
    } catch (const std::exception& e) {
      return TorchError(e, "writing the state dict");
    }
  }
  std::ostringstream out;
  try {
    impl_->module.save(out);
  } catch (const std::exception& e) {
    return TorchError(e, "saving TorchScript");
  }
  const std::string bytes = out.str();
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError("writing the TorchScript file");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

StateDict TorchScriptModel::StateDictForSave() const {
  StateDict state;
  for (auto& [k, t] : NamedTensors(impl_->module)) {
    at::Tensor c = t.to(at::kCPU);
    if (c.scalar_type() == numerics().dtype() && c.scalar_type() != at::kFloat)
      c = c.to(at::kFloat);
    state.emplace_back(k, c.contiguous());
  }
  return state;
}

absl::Status TorchScriptModel::Save(ModelFormat format, const std::string& path) const {
  RETURN_IF_ERROR(CheckSaveFormat(format));
  if (format == ModelFormat::kStateDict) {
    // Its parameters and buffers by key, float32 on the CPU whatever it serves in:
    // what load_state_dict(strict=True) of the original nn.Module takes.
    try {
      return WriteStateDict(StateDictForSave(), path);
    } catch (const std::exception& e) {
      return TorchError(e, "writing the state dict");
    }
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
  ASSIGN_OR_RETURN(NamedOutputs all, RunAll(x));
  return std::move(all.front().second);
}

absl::StatusOr<TorchModel::NamedOutputs> TorchScriptModel::RunAll(const at::Tensor& x) const {
  c10::IValue result;
  {
    torch_compat::WarningHandlerGuard warnings(impl_->warnings.get());
    result = impl_->module.forward({x});
  }
  NamedOutputs tensors;
  if (result.isTensor()) {
    tensors.emplace_back("output", result.toTensor());
    return tensors;
  }
  // Several outputs (a tuple, a named tuple, a list, a dict of tensors): each
  // tensor an output of its own, None elements skipped.
  int64_t nones = 0;
  CollectTensors(result, "output", "output", &tensors, &nones, /*depth=*/0);
  if (tensors.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the TorchScript module returned a ", result.tagKind(), " holding no tensor"));
  }
  if (tensors.size() > kMaxModelOutputs) {
    return absl::FailedPreconditionError(
        absl::StrCat("the TorchScript module returned a ", result.tagKind(), " of ", tensors.size(),
                     " tensors; at most ", kMaxModelOutputs, " outputs are served"));
  }
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name.size() > kMaxOutputNameBytes) {
      return absl::FailedPreconditionError(
          absl::StrCat("the TorchScript module returned an output named \"", name.substr(0, 40),
                       name.size() > 40 ? "..." : "", "\" (", name.size(),
                       " bytes); output names are 1 to ", kMaxOutputNameBytes, " bytes"));
    }
    if (!seen.insert(name).second) {
      return absl::FailedPreconditionError(
          absl::StrCat("the TorchScript module returned two outputs named \"", name, "\""));
    }
  }
  if (!impl_->told_outputs.exchange(true)) {
    std::vector<std::string> names;
    for (const auto& [name, t] : tensors) names.push_back(name);
    LOG_INFO(impl_->warnings->label(), " returns a ", result.tagKind(), " of ", tensors.size(),
             " tensor(s)", nones > 0 ? absl::StrCat(" and ", nones, " None") : "", ": outputs ",
             absl::StrJoin(names, ", "), "; Predict returns ", names.front(),
             " unless the request names another");
  }
  return tensors;
}

}  // namespace modelserver
