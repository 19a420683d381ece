#include "server/metrics/gpu_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "server/metrics/server_metrics.h"

namespace modelserver {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A machine without the driver (every CPU machine, this one): no library, no
// series, and a reason to log.
TEST(GpuMetricsTest, WithoutNvmlThereAreNoSeries) {
  ServerMetrics m;
  absl::Status s = m.EnableGpuMetrics("libnvidia-ml-not-here.so.1");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("libnvidia-ml-not-here.so.1"));
  EXPECT_THAT(m.Serialize(), Not(HasSubstr("modelserver_gpu_")));
  // A library that is not NVML at all is refused the same way, not called.
  EXPECT_EQ(m.EnableGpuMetrics("libz.so.1").code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(m.Serialize(), Not(HasSubstr("modelserver_gpu_")));
}

// Through a stand-in NVML with two GPUs: one series per device and family, the
// readings converted (percent -> ratio, mW -> W), power left out where NVML
// refuses it.
TEST(GpuMetricsTest, ReadsEveryDeviceThroughNvml) {
  ServerMetrics m;
  ASSERT_TRUE(m.EnableGpuMetrics(FAKE_NVML_LIBRARY).ok());
  const std::string text = m.Serialize();
  EXPECT_THAT(text,
              HasSubstr("modelserver_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-fake-0\"} 0.75"));
  EXPECT_THAT(text,
              HasSubstr("modelserver_gpu_utilization_ratio{gpu=\"1\",uuid=\"GPU-fake-1\"} 0.05"));
  EXPECT_THAT(
      text,
      HasSubstr("modelserver_gpu_memory_used_bytes{gpu=\"1\",uuid=\"GPU-fake-1\"} 2147483648"));
  EXPECT_THAT(
      text,
      HasSubstr("modelserver_gpu_memory_total_bytes{gpu=\"0\",uuid=\"GPU-fake-0\"} 161061273600"));
  EXPECT_THAT(text,
              HasSubstr("modelserver_gpu_power_watts{gpu=\"0\",uuid=\"GPU-fake-0\"} 123.456"));
  EXPECT_THAT(text, Not(HasSubstr("modelserver_gpu_power_watts{gpu=\"1\"")));
}

}  // namespace
}  // namespace modelserver
