#include "server/metrics/process_metrics.h"

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace modelserver {
namespace {

prometheus::Gauge& NewGauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

// The fields of /proc/self/stat after the command name (field 3 onwards).
std::vector<std::string> StatFields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  std::getline(in, line);
  const size_t paren = line.rfind(')');
  std::vector<std::string> fields;
  if (paren == std::string::npos) return fields;
  std::istringstream rest(line.substr(paren + 2));
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

// Seconds since the epoch at which the machine booted.
double BootTime() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      double t = 0;
      in >> t;
      return t;
    }
  }
  return 0;
}

}  // namespace

ProcessMetrics::ProcessMetrics(prometheus::Registry& registry)
    : cpu_seconds_(prometheus::BuildCounter()
                       .Name("process_cpu_seconds_total")
                       .Help("Total user and system CPU time spent in seconds.")
                       .Register(registry)
                       .Add({})),
      resident_bytes_(
          NewGauge(registry, "process_resident_memory_bytes", "Resident memory size in bytes.")),
      virtual_bytes_(
          NewGauge(registry, "process_virtual_memory_bytes", "Virtual memory size in bytes.")),
      open_fds_(NewGauge(registry, "process_open_fds", "Number of open file descriptors.")),
      max_fds_(NewGauge(registry, "process_max_fds", "Maximum number of open file descriptors.")),
      start_time_(NewGauge(registry, "process_start_time_seconds",
                           "Start time of the process since unix epoch in seconds.")) {}

void ProcessMetrics::Update() {
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const std::vector<std::string> f = StatFields();  // f[0] is field 3 (state)
  if (f.size() > 21 && ticks > 0) {
    const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;  // utime + stime
    {
      absl::MutexLock lock(&mu_);
      if (cpu > cpu_reported_) {
        cpu_seconds_.Increment(cpu - cpu_reported_);
        cpu_reported_ = cpu;
      }
    }
    start_time_.Set(BootTime() + std::stod(f[19]) / ticks);  // starttime
    virtual_bytes_.Set(std::stod(f[20]));                    // vsize
    resident_bytes_.Set(std::stod(f[21]) * static_cast<double>(sysconf(_SC_PAGESIZE)));  // rss
  }
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  if (!ec) open_fds_.Set(fds);
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) max_fds_.Set(static_cast<double>(limit.rlim_cur));
}

}  // namespace modelserver
