#include "server/model/model_loader.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/model/pickled_module.h"
#include "server/model/tensor_convert.h"
#include "server/model/tensor_materializer.h"
#include "server/model/torchscript_model.h"
#include "server/model/vgg/vgg.h"
#include "server/model/vgg/vgg_config.h"
#include "server/model/vgg/vgg_model.h"

namespace modelserver {

absl::StatusOr<std::shared_ptr<const Model>> LoadModelFromFile(const ModelLoadOptions& options) {
  switch (options.format) {
    case ModelFormat::kStateDict: {
      if (options.architecture.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat(options.path,
                         " is a state dict, which needs an architecture (e.g. vgg16): give it "
                         "in manifest.json or as --model NAME=ARCH"));
      }
      ASSIGN_OR_RETURN(VggConfig config, ParseVggArchitecture(options.architecture));
      CheckpointReadOptions read;
      read.verify_crc = options.verify_crc;
      try {
        ASSIGN_OR_RETURN(StateDict state, ReadStateDict(options.path, read));
        ASSIGN_OR_RETURN(std::shared_ptr<VggImpl> vgg, VggImpl::Create(config, std::move(state)));
        ASSIGN_OR_RETURN(std::shared_ptr<VggModel> model,
                         VggModel::Create(std::move(vgg), options.format, options.device));
        return std::shared_ptr<const Model>(std::move(model));
      } catch (const std::exception& e) {
        return TorchError(e, absl::StrCat("loading ", options.path));
      }
    }
    case ModelFormat::kTorchScript: {
      ASSIGN_OR_RETURN(
          std::shared_ptr<TorchScriptModel> model,
          TorchScriptModel::Load(options.path, options.device, options.trust_torchscript));
      return std::shared_ptr<const Model>(std::move(model));
    }
    case ModelFormat::kPickledModule:
      try {
        return LoadPickledModule(options.path, options.device, options.verify_crc);
      } catch (const std::exception& e) {
        return TorchError(e, absl::StrCat("loading ", options.path));
      }
    case ModelFormat::kUnspecified:
      break;
  }
  return absl::InvalidArgumentError("checkpoint format is unspecified");
}

absl::Status CheckArchitecture(const std::string& architecture) {
  return ParseVggArchitecture(architecture).status();
}

}  // namespace modelserver
