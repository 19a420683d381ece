#ifndef MODELSERVER_SERVER_MODEL_MODEL_LOADER_H_
#define MODELSERVER_SERVER_MODEL_MODEL_LOADER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/model/model.h"
#include "server/model/precision.h"

namespace modelserver {

struct ModelLoadOptions {
  std::string path;  // the checkpoint file
  ModelFormat format = ModelFormat::kStateDict;
  std::string architecture;  // for kStateDict: "vgg16", ... or empty with a template
  // For kStateDict: an architecture template (TorchScript or an exported program)
  // the state dict fills. For kAotiPackage: the exported program the package was
  // compiled from (its input shapes), or empty.
  std::string architecture_path;
  std::string device = "cpu";  // a ResolveDevice() result
  // Check zip CRCs; the store turns this off once it verified the file's sha256.
  bool verify_crc = true;
  // Serve TorchScript without the __setstate__ and operator allowlist checks
  // (--trust_torchscript).
  bool trust_torchscript = false;
  // What the weights compute in (fp16 needs CUDA) and the activation layout
  // (kAuto: channels-last for native VGGs and pickled layer stacks, contiguous
  // for TorchScript).
  Precision precision = Precision::kFp32;
  MemoryLayout memory_layout = MemoryLayout::kAuto;
  // The quantized engine the version was made for (manifest "quantized_engine");
  // empty: the server's. A sandboxed worker runs on it; in process (one engine
  // per process) a version asking for another one than the process's is
  // FAILED_PRECONDITION.
  std::string quantized_engine;
  // For messages and the sandbox (server/sandbox): the model's name and store
  // version (0: an upload being checked), and what to call when the loaded model
  // fails for good while serving (its sandboxed worker died too often).
  std::string name;
  int64_t version = 0;
  std::function<void(const std::string& reason)> on_failed;
  // Forward passes that may run at once (the batch workers): an AOTInductor
  // package's runner holds that many model instances.
  int concurrency = 1;
  // What one forward pass of an exported program may hold in CPU memory at once
  // (ExportedProgramModel::SetForwardMemoryBudget; 0: unbounded).
  uint64_t forward_memory_bytes = 0;
  // Precision int8 (native VGGs and pickled layer stacks): the version's
  // calibration samples (calibration.npy; empty: none, and int8 is refused) and
  // the top-1 agreement with the float model below which it is refused
  // (--min_int8_agreement).
  std::string calibration_path;
  // Or the samples themselves (the version's calibration/ images, preprocessed).
  std::shared_ptr<const HostTensor> calibration_samples;
  double min_int8_agreement = 0.99;
};

// OK unless `options` ask for precision int8 where it does not apply:
// FAILED_PRECONDITION for TorchScript (its maker quantizes it) and TorchScript
// templates -- native VGGs' state dicts, pickled layer stacks and exported programs
// (and state dicts in program templates) are quantized at load -- or for a device
// other than the CPU. LoadModelFromFile checks it; so does the
// sandboxed loader before it starts a worker.
absl::Status CheckInt8Applies(const ModelLoadOptions& options);

// Reads a checkpoint and builds an eval-mode model on the device. Blocks for the
// whole load. Errors: those of ReadStateDict, INVALID_ARGUMENT for an unknown
// architecture, FAILED_PRECONDITION when the checkpoint does not fit it,
// RESOURCE_EXHAUSTED when the device is out of memory, UNIMPLEMENTED for formats
// not served yet. Thread-safe.
absl::StatusOr<std::shared_ptr<const Model>> LoadModelFromFile(const ModelLoadOptions& options);

// Whether a checkpoint file would load, checked without reading its tensors
// (for uploads, before anything is published): for STATE_DICT the architecture
// or the template at `architecture_path` (one is required) and the state dict's
// key names and shapes as load_state_dict(strict) checks them; for TORCHSCRIPT no __setstate__
// unless `trust_torchscript`. FAILED_PRECONDITION / INVALID_ARGUMENT naming the problem.
// Thread-safe.
absl::Status CheckLoadable(const std::string& path, ModelFormat format,
                           const std::string& architecture, bool trust_torchscript,
                           const std::string& architecture_path = "");

// OK when `architecture` names an architecture LoadModelFromFile can build a
// state dict into ("vgg16", "vgg:cfg=..."); INVALID_ARGUMENT naming the problem
// otherwise. Thread-safe.
absl::Status CheckArchitecture(const std::string& architecture);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_MODEL_LOADER_H_
