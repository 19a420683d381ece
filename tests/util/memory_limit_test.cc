#include "server/util/memory_limit.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace modelserver {
namespace {

// MemTotal read here independently (sscanf, not the code under test), in bytes.
int64_t MemTotalBytes() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return 0;
  char line[256];
  long long kb = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "MemTotal: %lld kB", &kb) == 1) break;
  }
  std::fclose(f);
  return static_cast<int64_t>(kb) * 1024;
}

TEST(MemoryLimitTest, ReadsThisMachinesMemTotalOrAStricterCgroupLimit) {
  const int64_t total = MemTotalBytes();
  ASSERT_GT(total, 0) << "no MemTotal in /proc/meminfo";
  std::string source;
  const int64_t limit = DetectMemoryLimitBytes(&source);
  if (source == "MemTotal") {
    EXPECT_EQ(limit, total);
  } else {
    EXPECT_EQ(source, "cgroup memory limit");
    EXPECT_GT(limit, 0);
    EXPECT_LT(limit, total);
  }
}

TEST(MemoryLimitTest, ResidentBytesIsPlausible) {
  const int64_t rss = ResidentBytes();
  EXPECT_GT(rss, 1 << 20);
  EXPECT_LT(rss, MemTotalBytes());
}

}  // namespace
}  // namespace modelserver
