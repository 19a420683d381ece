#ifndef MODELSERVER_SERVER_SANDBOX_SANDBOXED_LOADER_H_
#define MODELSERVER_SERVER_SANDBOX_SANDBOXED_LOADER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/model/model.h"
#include "server/model/model_loader.h"

namespace modelserver {

struct SandboxLoaderOptions {
  std::string worker_path;                          // the model-worker binary (DefaultWorkerPath())
  absl::Duration max_forward = absl::Seconds(300);  // --max_forward_seconds
  absl::Duration max_load = absl::Seconds(600);
  uint64_t memory_bytes = 0;     // each worker's RLIMIT_DATA (0: none)
  int threads = 0;               // each worker's intra-op threads (0: LibTorch's default)
  int channels = 1;              // forward passes at once per worker (--batch_workers)
  std::string quantized_engine;  // each worker's (--quantized_engine; "": LibTorch's default)
  // AOTInductor packages in process (--trust_compiled_models), not in a worker.
  bool trust_compiled_models = false;
  // A worker of `model` was stopped for `reason` ("crash", "deadline", "memory").
  std::function<void(const std::string& model, const std::string& reason)> on_restart;
};

using ModelLoaderFunction =
    std::function<absl::StatusOr<std::shared_ptr<const Model>>(const ModelLoadOptions&)>;

// A loader for ModelRegistry::Options::loader: what carries code (a TorchScript
// file, a state dict in an architecture template, unless the load options trust
// TorchScript; an AOTInductor package, unless these options trust compiled
// models) loads and runs in a SandboxedModel: the server reads the files'
// bytes and hands them over; nothing of them runs in this process. Data-only
// formats (state dicts into native VGGs, pickled layer stacks) go to
// LoadModelFromFile as before.
ModelLoaderFunction MakeSandboxedLoader(SandboxLoaderOptions options);

// model-worker beside the running executable (/proc/self/exe's folder).
std::string DefaultWorkerPath();

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SANDBOX_SANDBOXED_LOADER_H_
