#ifndef MODELSERVER_SERVER_UTIL_MEMORY_LIMIT_H_
#define MODELSERVER_SERVER_UTIL_MEMORY_LIMIT_H_

#include <cstdint>
#include <string>

namespace modelserver {

// The memory this process may use: its cgroup's limit (v2 memory.max, v1
// memory.limit_in_bytes, found through /proc/self/cgroup) when it has one, else
// the machine's MemTotal; the smaller of the two. `source` (may be null) says
// which. 0 when neither can be read. Thread-safe.
int64_t DetectMemoryLimitBytes(std::string* source);

// This process's resident set size (VmRSS), in bytes; 0 when unreadable.
int64_t ResidentBytes();

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_UTIL_MEMORY_LIMIT_H_
