#include "server/util/memory_limit.h"

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace modelserver {
namespace {

// A number from a one-line file; 0 for "max", absurdly large values or errors.
int64_t ReadLimit(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!in || !std::getline(in, text)) return 0;
  int64_t v = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &v) || v <= 0 || v >= (1ll << 60)) {
    return 0;
  }
  return v;
}

// "<key>: <n> kB" from a /proc file, in bytes.
int64_t ReadProcKb(const std::string& path, absl::string_view key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, key)) continue;
    // The views point into `rest`, which outlives them (not into a temporary).
    const std::string rest = line.substr(key.size());
    std::vector<absl::string_view> parts =
        absl::StrSplit(rest, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    int64_t kb = 0;
    if (!parts.empty() && absl::SimpleAtoi(parts[0], &kb)) return kb * 1024;
  }
  return 0;
}

int64_t CgroupLimit() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  int64_t limit = 0;
  while (std::getline(in, line)) {
    // "4:memory:/path" (v1) or "0::/path" (v2).
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    int64_t v = 0;
    if (f[1] == "memory" || absl::StrContains(f[1], "memory")) {
      v = ReadLimit("/sys/fs/cgroup/memory" + f[2] + "/memory.limit_in_bytes");
    } else if (f[0] == "0" && f[1].empty()) {
      v = ReadLimit("/sys/fs/cgroup" + f[2] + "/memory.max");
      if (v == 0) v = ReadLimit("/sys/fs/cgroup/unified" + f[2] + "/memory.max");
    }
    if (v > 0 && (limit == 0 || v < limit)) limit = v;
  }
  return limit;
}

}  // namespace

int64_t DetectMemoryLimitBytes(std::string* source) {
  const int64_t total = ReadProcKb("/proc/meminfo", "MemTotal:");
  const int64_t cgroup = CgroupLimit();
  if (cgroup > 0 && (total == 0 || cgroup < total)) {
    if (source != nullptr) *source = "cgroup memory limit";
    return cgroup;
  }
  if (source != nullptr) *source = "MemTotal";
  return total;
}

int64_t ResidentBytes() { return ReadProcKb("/proc/self/status", "VmRSS:"); }

}  // namespace modelserver
