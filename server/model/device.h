#ifndef MODELSERVER_SERVER_MODEL_DEVICE_H_
#define MODELSERVER_SERVER_MODEL_DEVICE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Resolves a --device value: "auto" is "cuda:0" when LibTorch was built with CUDA
// and sees a GPU, else "cpu"; "cuda" is "cuda:0"; "cuda:N" must exist.
// INVALID_ARGUMENT for anything else or for CUDA without a GPU.
absl::StatusOr<std::string> ResolveDevice(absl::string_view spec);
// GPUs LibTorch sees (0 on a CPU build).
int CudaDeviceCount();

// Sets LibTorch's intra-op thread count; n <= 0 means one per core. Call once at
// startup, before any forward pass.
void SetIntraOpThreads(int n);
int IntraOpThreads();
// Sets the intra-op thread count of the calling thread's own parallel regions
// (OpenMP), leaving other threads alone: concurrent forward passes can split the
// cores between them.
void SetThisThreadIntraOpThreads(int n);

// Sets LibTorch's quantized engine (the int8 kernels int8 models run on, and
// which repack their weights when loaded): "onednn", "qnnpack", "fbgemm", "x86"
// (any case) where this LibTorch has it; "" keeps LibTorch's default. A model
// computes Python's int8 outputs only on the engine it was quantized for.
// Process-wide: call at startup, before any model loads. INVALID_ARGUMENT
// naming the engines this LibTorch has otherwise.
absl::Status SetQuantizedEngine(absl::string_view name);
// OK when this LibTorch has engine `name` (any case); the same INVALID_ARGUMENT
// as SetQuantizedEngine otherwise. Changes nothing.
absl::Status CheckQuantizedEngine(absl::string_view name);
// The current one, lower case ("onednn").
std::string QuantizedEngine();

// On a CUDA device: cuDNN benchmark mode (it times the convolution algorithms per
// input shape on first use and keeps the fastest; the registry's warm-up runs
// every batch size). No-op on a CPU. Call once at startup.
void ConfigureDevice(absl::string_view device);

// Bytes the device's allocator has handed out (current), or -1 where it cannot
// tell (a CPU, or a LibTorch built without CUDA).
int64_t DeviceAllocatedBytes(absl::string_view device);

// "1.13.1"; "yes" / "no" for whether LibTorch has CUDA (for build info).
std::string TorchVersion();
std::string TorchHasCuda();

// "LibTorch 1.13.1, CUDA: no, BLAS/LAPACK: ..." for the startup log.
std::string TorchBuildSummary();

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_DEVICE_H_
