#include "server/model/model_loader.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/exported_program.h"
#include "server/checkpoint/state_dict_parser.h"
#include "server/checkpoint/torchscript_archive.h"
#include "server/checkpoint/zip_reader.h"
#include "server/model/aoti_model.h"
#include "server/model/device.h"
#include "server/model/exported_program_model.h"
#include "server/model/int8_network.h"
#include "server/model/pickled_module.h"
#include "server/model/tensor_convert.h"
#include "server/model/tensor_materializer.h"
#include "server/model/torchscript_model.h"
#include "server/model/vgg/vgg.h"
#include "server/model/vgg/vgg_config.h"
#include "server/model/vgg/vgg_model.h"

namespace modelserver {

namespace {

constexpr char kNeedsArchitecture[] =
    " is a state dict, which needs an architecture to serve. Three ways: (1) a torchvision VGG "
    "name (vgg16, vgg11_bn, vgg:cfg=...) with the upload's --architecture, in manifest.json or "
    "as --model NAME=ARCH; (2) an architecture template beside it -- "
    "torch.jit.script(Net()).save('arch.pt'), uploaded with --architecture_file arch.pt (or "
    "copied into the version directory as architecture.pt); (3) the whole model as TorchScript "
    "instead (torch.jit.script(model).save('model.pt'), format TORCHSCRIPT)";

// An exported program in int8: its chain of layers quantized (QuantizeInt8).
absl::StatusOr<std::shared_ptr<const Model>> QuantizeProgram(
    std::shared_ptr<ExportedProgramModel> model, const Int8Options& options) {
  ASSIGN_OR_RETURN(std::vector<FloatLayer> layers, model->Int8Layers());
  return QuantizeInt8(std::move(layers), std::move(model), options);
}

}  // namespace

absl::Status CheckInt8Applies(const ModelLoadOptions& options) {
  if (options.precision != Precision::kInt8) return absl::OkStatus();
  RETURN_IF_ERROR(CheckPrecisionOnDevice(options.precision, options.device));
  const bool native_vgg =
      options.format == ModelFormat::kStateDict && !options.architecture.empty();
  const bool program_template = options.format == ModelFormat::kStateDict &&
                                options.architecture.empty() &&
                                absl::EndsWith(options.architecture_path, ".pt2");
  if (native_vgg || program_template || options.format == ModelFormat::kPickledModule ||
      options.format == ModelFormat::kExportedProgram) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "precision int8 quantizes native VGGs (a state dict with a VGG architecture), pickled "
      "layer stacks and exported programs (a chain of convolutions, batch norms, ReLUs, pooling "
      "and linear layers) at load, and this version is ",
      options.format == ModelFormat::kStateDict ? "a state dict in a TorchScript template"
                                                : ModelFormatName(options.format),
      ": a TorchScript model serves in int8 as its maker quantized it (eager or FX quantization, "
      "traced or scripted); serve this one in fp32 or bf16"));
}

absl::StatusOr<std::shared_ptr<const Model>> LoadModelFromFile(const ModelLoadOptions& options) {
  if (!options.quantized_engine.empty() &&
      !absl::EqualsIgnoreCase(options.quantized_engine, QuantizedEngine())) {
    // One engine per process: LibTorch's is global.
    RETURN_IF_ERROR(CheckQuantizedEngine(options.quantized_engine));
    return absl::FailedPreconditionError(absl::StrCat(
        "the version was quantized for engine ", options.quantized_engine,
        " (manifest \"quantized_engine\"), and models in this process run on ", QuantizedEngine(),
        ": serve it in a sandboxed worker (without --trust_torchscript), or ",
        "start the server with --quantized_engine ", options.quantized_engine));
  }
  // Int8 is made at load from the float32 network, for the networks whose layers
  // are ours to quantize.
  const bool int8 = options.precision == Precision::kInt8;
  RETURN_IF_ERROR(CheckInt8Applies(options));
  Int8Options int8_options;
  int8_options.calibration_path = options.calibration_path;
  int8_options.calibration_samples = options.calibration_samples;
  int8_options.min_agreement = options.min_int8_agreement;
  int8_options.what = options.name.empty() ? "the model"
                      : options.version > 0
                          ? absl::StrCat("model '", options.name, "' version ", options.version)
                          : absl::StrCat("model '", options.name, "' (upload check)");
  // Native VGGs and layer stacks are written for any layout; TorchScript code may
  // assume a contiguous one, so it is channels-last only when asked.
  ASSIGN_OR_RETURN(
      const Numerics numerics,
      ResolveNumerics(int8 ? Precision::kFp32 : options.precision,
                      int8 ? MemoryLayout::kContiguous : options.memory_layout, options.device,
                      options.format != ModelFormat::kTorchScript &&
                          options.format != ModelFormat::kExportedProgram &&
                          options.format != ModelFormat::kAotiPackage));
  switch (options.format) {
    case ModelFormat::kStateDict: {
      if (options.architecture.empty() && absl::EndsWith(options.architecture_path, ".pt2")) {
        ASSIGN_OR_RETURN(
            std::shared_ptr<ExportedProgramModel> model,
            ExportedProgramModel::LoadTemplate(options.architecture_path, options.path,
                                               options.device, numerics, options.verify_crc));
        model->SetForwardMemoryBudget(options.forward_memory_bytes);
        return int8 ? QuantizeProgram(std::move(model), int8_options)
                    : std::shared_ptr<const Model>(std::move(model));
      }
      if (options.architecture.empty() && !options.architecture_path.empty()) {
        ASSIGN_OR_RETURN(std::shared_ptr<TorchScriptModel> model,
                         TorchScriptModel::LoadTemplate(options.architecture_path, options.path,
                                                        options.device, options.trust_torchscript,
                                                        numerics, options.verify_crc));
        return std::shared_ptr<const Model>(std::move(model));
      }
      if (options.architecture.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(options.path, kNeedsArchitecture));
      }
      ASSIGN_OR_RETURN(VggConfig config, ParseVggArchitecture(options.architecture));
      CheckpointReadOptions read;
      read.verify_crc = options.verify_crc;
      try {
        ASSIGN_OR_RETURN(StateDict state, ReadStateDict(options.path, read));
        ASSIGN_OR_RETURN(std::shared_ptr<VggImpl> vgg,
                         VggImpl::Create(config, std::move(state), numerics));
        std::vector<FloatLayer> layers;
        if (int8) layers = vgg->Layers();
        ASSIGN_OR_RETURN(
            std::shared_ptr<VggModel> model,
            VggModel::Create(std::move(vgg), options.format, options.device, numerics));
        if (int8) return QuantizeInt8(std::move(layers), std::move(model), int8_options);
        return std::shared_ptr<const Model>(std::move(model));
      } catch (const std::exception& e) {
        return TorchError(e, absl::StrCat("loading ", options.path));
      }
    }
    case ModelFormat::kTorchScript: {
      ASSIGN_OR_RETURN(std::shared_ptr<TorchScriptModel> model,
                       TorchScriptModel::Load(options.path, options.device,
                                              options.trust_torchscript, numerics));
      return std::shared_ptr<const Model>(std::move(model));
    }
    case ModelFormat::kExportedProgram: {
      ASSIGN_OR_RETURN(
          std::shared_ptr<ExportedProgramModel> model,
          ExportedProgramModel::Load(options.path, options.device, numerics, options.verify_crc));
      model->SetForwardMemoryBudget(options.forward_memory_bytes);
      return int8 ? QuantizeProgram(std::move(model), int8_options)
                  : std::shared_ptr<const Model>(std::move(model));
    }
    case ModelFormat::kAotiPackage: {
      // Native code, in this process: the caller trusts it (--trust_compiled_models);
      // otherwise server/sandbox loads it in a worker.
      ASSIGN_OR_RETURN(
          std::shared_ptr<AotiModel> model,
          AotiModel::Load(options.path, options.device, numerics, std::max(1, options.concurrency),
                          options.architecture_path));
      return std::shared_ptr<const Model>(std::move(model));
    }
    case ModelFormat::kPickledModule:
      try {
        std::vector<FloatLayer> layers;
        ASSIGN_OR_RETURN(std::shared_ptr<const Model> model,
                         LoadPickledModule(options.path, options.device, options.verify_crc,
                                           numerics, int8 ? &layers : nullptr));
        if (int8) return QuantizeInt8(std::move(layers), std::move(model), int8_options);
        return model;
      } catch (const std::exception& e) {
        return TorchError(e, absl::StrCat("loading ", options.path));
      }
    case ModelFormat::kUnspecified:
      break;
  }
  return absl::InvalidArgumentError("checkpoint format is unspecified");
}

absl::Status CheckLoadable(const std::string& path, ModelFormat format,
                           const std::string& architecture, bool trust_torchscript,
                           const std::string& architecture_path) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  if (format == ModelFormat::kTorchScript) {
    RETURN_IF_ERROR(CheckTorchScriptFormatVersion(*zip, "the file"));
    return trust_torchscript ? absl::OkStatus() : CheckTorchScriptArchive(*zip, "the file");
  }
  if (format != ModelFormat::kStateDict) return absl::OkStatus();
  if (architecture.empty() && !architecture_path.empty()) {
    ASSIGN_OR_RETURN(PickledStateDict sd, ParseStateDictPickle(*zip, "the file", 64ull << 20));
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& [k, v] : sd.pickled->root()->entries) shapes[k->s] = v->tensor.sizes;
    if (absl::EndsWith(architecture_path, ".pt2")) {
      ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> arch, ZipReader::Open(architecture_path));
      ASSIGN_OR_RETURN(exported::ExportedProgram program,
                       exported::ReadExportedProgram(std::move(arch), "the architecture template"));
      return exported::CheckStateDictFitsProgram(program, shapes, "the file");
    }
    return CheckTemplateStateDict(architecture_path, shapes, trust_torchscript);
  }
  if (architecture.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("the file", kNeedsArchitecture));
  }
  ASSIGN_OR_RETURN(VggConfig config, ParseVggArchitecture(architecture));
  ASSIGN_OR_RETURN(PickledStateDict sd, ParseStateDictPickle(*zip, "the file", 64ull << 20));
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [k, v] : sd.pickled->root()->entries) shapes[k->s] = v->tensor.sizes;
  return CheckVggStateDict(config, shapes);
}

absl::Status CheckArchitecture(const std::string& architecture) {
  return ParseVggArchitecture(architecture).status();
}

}  // namespace modelserver
