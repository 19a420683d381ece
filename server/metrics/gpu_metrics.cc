#include "server/metrics/gpu_metrics.h"

#include <dlfcn.h>

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace modelserver {
namespace {

// The few NVML types used here, as the driver's nvml.h defines them (stable C ABI).
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
constexpr nvmlReturn_t kNvmlSuccess = 0;
struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};
struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

}  // namespace

struct GpuMetrics::Api {
  void* library = nullptr;
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  nvmlReturn_t (*count)(unsigned int*) = nullptr;
  nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*power)(nvmlDevice_t, unsigned int*) = nullptr;  // milliwatts
  absl::Mutex mu;  // one reading at a time (concurrent scrapes)

  ~Api() {
    if (shutdown != nullptr) shutdown();
    if (library != nullptr) dlclose(library);
  }
};

namespace {

template <typename F>
bool Resolve(void* library, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(library, name));
  return *out != nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GpuMetrics>> GpuMetrics::Create(prometheus::Registry& registry,
                                                               const std::string& library) {
  auto api = std::make_unique<Api>();
  api->library = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (api->library == nullptr) {
    const char* why = dlerror();
    return absl::NotFoundError(absl::StrCat("cannot load ", library, ": ", why ? why : "?"));
  }
  void* l = api->library;
  if (!Resolve(l, "nvmlInit_v2", &api->init) || !Resolve(l, "nvmlShutdown", &api->shutdown) ||
      !Resolve(l, "nvmlDeviceGetCount_v2", &api->count) ||
      !Resolve(l, "nvmlDeviceGetHandleByIndex_v2", &api->handle) ||
      !Resolve(l, "nvmlDeviceGetUUID", &api->uuid) ||
      !Resolve(l, "nvmlDeviceGetUtilizationRates", &api->utilization) ||
      !Resolve(l, "nvmlDeviceGetMemoryInfo", &api->memory) ||
      !Resolve(l, "nvmlDeviceGetPowerUsage", &api->power)) {
    api->shutdown = nullptr;
    return absl::UnavailableError(absl::StrCat(library, " lacks an NVML entry point"));
  }
  if (api->init() != kNvmlSuccess) {
    api->shutdown = nullptr;
    return absl::UnavailableError(absl::StrCat("nvmlInit failed (", library, ")"));
  }
  unsigned int n = 0;
  if (api->count(&n) != kNvmlSuccess || n == 0) {
    return absl::UnavailableError("NVML reports no GPU");
  }
  std::unique_ptr<GpuMetrics> m(new GpuMetrics());
  auto& util = prometheus::BuildGauge()
                   .Name("modelserver_gpu_utilization_ratio")
                   .Help("Share of the last NVML sample period in which a kernel ran on the GPU")
                   .Register(registry);
  auto& used = prometheus::BuildGauge()
                   .Name("modelserver_gpu_memory_used_bytes")
                   .Help("GPU memory in use (all processes), from NVML")
                   .Register(registry);
  auto& total = prometheus::BuildGauge()
                    .Name("modelserver_gpu_memory_total_bytes")
                    .Help("GPU memory in all, from NVML")
                    .Register(registry);
  auto& power = prometheus::BuildGauge()
                    .Name("modelserver_gpu_power_watts")
                    .Help("GPU board power draw, from NVML")
                    .Register(registry);
  for (unsigned int i = 0; i < n; ++i) {
    nvmlDevice_t h = nullptr;
    if (api->handle(i, &h) != kNvmlSuccess) continue;
    char uuid[96] = {0};
    if (api->uuid(h, uuid, sizeof(uuid) - 1) != kNvmlSuccess) uuid[0] = '\0';
    std::map<std::string, std::string> labels = {{"gpu", absl::StrCat(i)}, {"uuid", uuid}};
    m->devices_.push_back(
        Device{h, &util.Add(labels), &used.Add(labels), &total.Add(labels), &power, labels});
  }
  m->api_ = std::move(api);
  m->Update();
  return m;
}

GpuMetrics::~GpuMetrics() = default;

void GpuMetrics::Update() {
  absl::MutexLock lock(&api_->mu);
  for (Device& d : devices_) {
    nvmlUtilization_t u{};
    if (api_->utilization(d.handle, &u) == kNvmlSuccess) d.utilization->Set(u.gpu / 100.0);
    nvmlMemory_t mem{};
    if (api_->memory(d.handle, &mem) == kNvmlSuccess) {
      d.memory_used->Set(static_cast<double>(mem.used));
      d.memory_total->Set(static_cast<double>(mem.total));
    }
    unsigned int mw = 0;
    if (api_->power(d.handle, &mw) == kNvmlSuccess) {
      if (d.power == nullptr) d.power = &d.power_family->Add(d.labels);
      d.power->Set(mw / 1000.0);
    }
  }
}

}  // namespace modelserver
