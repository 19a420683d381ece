#ifndef MODELSERVER_SERVER_MODEL_MODEL_LOADER_H_
#define MODELSERVER_SERVER_MODEL_MODEL_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/model/model.h"

namespace modelserver {

struct ModelLoadOptions {
  std::string path;  // the checkpoint file
  ModelFormat format = ModelFormat::kStateDict;
  std::string architecture;    // required for kStateDict ("vgg16", ...)
  std::string device = "cpu";  // a ResolveDevice() result
  // Check zip CRCs; the store turns this off once it verified the file's sha256.
  bool verify_crc = true;
  // Serve TorchScript without the __setstate__ and operator allowlist checks
  // (--trust_torchscript).
  bool trust_torchscript = false;
};

// Reads a checkpoint and builds an eval-mode model on the device. Blocks for the
// whole load. Errors: those of ReadStateDict, INVALID_ARGUMENT for an unknown
// architecture, FAILED_PRECONDITION when the checkpoint does not fit it,
// RESOURCE_EXHAUSTED when the device is out of memory, UNIMPLEMENTED for formats
// not served yet. Thread-safe.
absl::StatusOr<std::shared_ptr<const Model>> LoadModelFromFile(const ModelLoadOptions& options);

// OK when `architecture` names an architecture LoadModelFromFile can build a
// state dict into ("vgg16", "vgg:cfg=..."); INVALID_ARGUMENT naming the problem
// otherwise. Thread-safe.
absl::Status CheckArchitecture(const std::string& architecture);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_MODEL_LOADER_H_
