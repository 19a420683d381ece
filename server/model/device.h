#ifndef MODELSERVER_SERVER_MODEL_DEVICE_H_
#define MODELSERVER_SERVER_MODEL_DEVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Resolves a --device value: "auto" is "cuda:0" when LibTorch was built with CUDA
// and sees a GPU, else "cpu"; "cuda" is "cuda:0"; "cuda:N" must exist.
// INVALID_ARGUMENT for anything else or for CUDA without a GPU.
absl::StatusOr<std::string> ResolveDevice(absl::string_view spec);

// Sets LibTorch's intra-op thread count; n <= 0 means one per core. Call once at
// startup, before any forward pass.
void SetIntraOpThreads(int n);
int IntraOpThreads();
// Sets the intra-op thread count of the calling thread's own parallel regions
// (OpenMP), leaving other threads alone: concurrent forward passes can split the
// cores between them.
void SetThisThreadIntraOpThreads(int n);

// "LibTorch 1.13.1, CUDA: no, BLAS/LAPACK: ..." for the startup log.
std::string TorchBuildSummary();

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_DEVICE_H_
