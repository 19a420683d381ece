#ifndef MODELSERVER_SERVER_METRICS_PROCESS_METRICS_H_
#define MODELSERVER_SERVER_METRICS_PROCESS_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "absl/synchronization/mutex.h"

namespace modelserver {

// The standard process_* series that Prometheus clients export (the names and
// meanings of the Go and Python clients), read from /proc at each scrape:
// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds. Linux only; a value that cannot be read is left.
// Thread-safe.
class ProcessMetrics {
 public:
  explicit ProcessMetrics(prometheus::Registry& registry);
  void Update() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  prometheus::Counter& cpu_seconds_;
  prometheus::Gauge& resident_bytes_;
  prometheus::Gauge& virtual_bytes_;
  prometheus::Gauge& open_fds_;
  prometheus::Gauge& max_fds_;
  prometheus::Gauge& start_time_;
  absl::Mutex mu_;
  double cpu_reported_ ABSL_GUARDED_BY(mu_) = 0;  // counters only go up by deltas
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_METRICS_PROCESS_METRICS_H_
