#include "server/model/device.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/cuda.h>
#include <torch/version.h>
#ifdef MODELSERVER_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace modelserver {

int CudaDeviceCount() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

absl::StatusOr<std::string> ResolveDevice(absl::string_view spec) {
  const int64_t gpus = CudaDeviceCount();
  if (spec == "auto") return gpus > 0 ? std::string("cuda:0") : std::string("cpu");
  if (spec == "cpu") return std::string("cpu");
  int index = 0;
  if (spec == "cuda" ||
      (absl::StartsWith(spec, "cuda:") && absl::SimpleAtoi(spec.substr(5), &index) && index >= 0)) {
    if (index >= gpus) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--device ", spec, ": ", gpus == 0 ? "LibTorch sees no CUDA device" : "no such GPU", " (",
          gpus, " visible); use --device cpu or auto"));
    }
    return absl::StrCat("cuda:", index);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device '", spec, "' is not one of auto, cpu, cuda, cuda:N"));
}

namespace {

// The engine of this LibTorch named `name` (any case), or INVALID_ARGUMENT
// naming those it has.
absl::StatusOr<at::QEngine> FindQuantizedEngine(absl::string_view name) {
  std::vector<std::string> names;
  for (const at::QEngine engine : at::globalContext().supportedQEngines()) {
    const std::string known = absl::AsciiStrToLower(c10::toString(engine));
    if (known == "noqengine") continue;
    if (absl::EqualsIgnoreCase(known, name)) return engine;
    names.push_back(known);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("quantized engine '", name, "' is not in this LibTorch ", TORCH_VERSION,
                   " (it has ", names.empty() ? "none" : absl::StrJoin(names, ", "),
                   "); quantize the model for one of those"));
}

}  // namespace

absl::Status CheckQuantizedEngine(absl::string_view name) {
  return FindQuantizedEngine(name).status();
}

absl::Status SetQuantizedEngine(absl::string_view name) {
  if (name.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(const at::QEngine engine, FindQuantizedEngine(name));
  at::globalContext().setQEngine(engine);
  return absl::OkStatus();
}

std::string QuantizedEngine() {
  return absl::AsciiStrToLower(c10::toString(at::globalContext().qEngine()));
}

void SetIntraOpThreads(int n) {
  // LibTorch's own default can be 1 (Debian's build); 0 means one per core.
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  // OpenBLAS (the classifier's matrix products) keeps the thread count it read
  // when it was loaded; tell it too when it is the BLAS in use.
  using SetThreads = void (*)(int);
  if (auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(n);
  }
}

int IntraOpThreads() { return at::get_num_threads(); }

void SetThisThreadIntraOpThreads(int n) {
  // ATen's OpenMP backend and oneDNN size their parallel regions from the calling
  // thread's omp_get_max_threads(); OpenBLAS (openmp build) follows it too.
  at::get_num_threads();  // lets ATen initialise this thread's count first
  using SetThreads = void (*)(int);
  static auto* omp_set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (omp_set != nullptr && n > 0) omp_set(n);
}

void ConfigureDevice(absl::string_view device) {
  if (absl::StartsWith(device, "cuda")) at::globalContext().setBenchmarkCuDNN(true);
}

int64_t DeviceAllocatedBytes(absl::string_view device) {
#ifdef MODELSERVER_WITH_CUDA
  int index = 0;
  if (device == "cuda" ||
      (absl::StartsWith(device, "cuda:") && absl::SimpleAtoi(device.substr(5), &index))) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    return stats.allocated_bytes[0].current;  // StatType::AGGREGATE
  }
#else
  (void)device;
#endif
  return -1;
}

std::string TorchVersion() { return TORCH_VERSION; }

std::string TorchHasCuda() {
#ifdef MODELSERVER_WITH_CUDA
  return "yes";
#else
  return "no";
#endif
}

std::string TorchBuildSummary() {
  return absl::StrCat("LibTorch ", TORCH_VERSION, ", CUDA ",
                      torch::cuda::is_available() ? "available" : "not available",
                      ", intra-op threads ", at::get_num_threads(), ", quantized engine ",
                      QuantizedEngine());
}

}  // namespace modelserver
