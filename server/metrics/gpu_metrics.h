#ifndef MODELSERVER_SERVER_METRICS_GPU_METRICS_H_
#define MODELSERVER_SERVER_METRICS_GPU_METRICS_H_

#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace modelserver {

// Per-GPU series read through NVML at each scrape, with labels {gpu (index),
// uuid}: modelserver_gpu_utilization_ratio (0..1, the share of the last sample
// period a kernel ran), modelserver_gpu_memory_used_bytes,
// modelserver_gpu_memory_total_bytes, modelserver_gpu_power_watts.
//
// NVML is loaded at run time (dlopen of `library`, by default
// "libnvidia-ml.so.1", the driver's): no build dependency, and a machine without
// the driver (every CPU machine) gets no series. A reading NVML refuses (power on
// some boards) leaves that series out.
//
// Thread-safe: Update() may run on concurrent scrapes.
class GpuMetrics {
 public:
  static constexpr char kDefaultLibrary[] = "libnvidia-ml.so.1";

  // The families in `registry` when `library` loads, initialises and reports at
  // least one GPU; otherwise the reason (NOT_FOUND: no library; UNAVAILABLE:
  // NVML refused, or no GPU), and nothing is registered.
  static absl::StatusOr<std::unique_ptr<GpuMetrics>> Create(prometheus::Registry& registry,
                                                            const std::string& library);
  ~GpuMetrics();

  void Update();
  int device_count() const { return static_cast<int>(devices_.size()); }

  struct Api;  // the NVML entry points, resolved with dlsym

 private:
  struct Device {
    void* handle;
    prometheus::Gauge* utilization;
    prometheus::Gauge* memory_used;
    prometheus::Gauge* memory_total;
    prometheus::Family<prometheus::Gauge>* power_family;
    std::map<std::string, std::string> labels;
    prometheus::Gauge* power = nullptr;  // added on the first reading NVML gives
  };
  GpuMetrics() = default;

  std::unique_ptr<Api> api_;
  std::vector<Device> devices_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_METRICS_GPU_METRICS_H_
