#ifndef MODELSERVER_SERVER_SERVICE_SHARED_MEMORY_REGIONS_H_
#define MODELSERVER_SERVER_SERVICE_SHARED_MEMORY_REGIONS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace modelserver {

// Triton's system shared memory extension: named regions of POSIX shared memory
// objects (shm_open keys such as "/input0") that same-host clients register, and
// that inference inputs are read from and outputs written to instead of going
// through gRPC messages.
//
// A region is an open descriptor, never a mapping: bytes move with pread/pwrite,
// so a client that shrinks (ftruncate) the object after registering it gets a
// clear error instead of killing the server with SIGBUS, and the server holds no
// address space for regions. Each read and write is bounded by what was
// registered, which is checked against the object's size (fstat) at
// registration; the number of regions and their registered bytes are bounded.
// Regions are closed on Unregister and when this is destroyed (server stop).
//
//   SharedMemoryRegions regions({.max_regions = 64});
//   RETURN_IF_ERROR(regions.Register("in0", "/in0", 0, 602112));
//   ASSIGN_OR_RETURN(std::string bytes, regions.Read("in0", 0, 602112, 64 << 20));
//
// Thread-safe: reads and writes of a region that is unregistered meanwhile
// finish on the descriptor they started with.
class SharedMemoryRegions {
 public:
  struct Options {
    int max_regions = 64;
    uint64_t max_total_bytes = uint64_t{8} << 30;
  };
  // What a region was registered with (SystemSharedMemoryStatus).
  struct Region {
    std::string name;
    std::string key;
    uint64_t offset = 0;
    uint64_t byte_size = 0;
  };

  explicit SharedMemoryRegions(Options options) : options_(options) {}
  SharedMemoryRegions(const SharedMemoryRegions&) = delete;
  SharedMemoryRegions& operator=(const SharedMemoryRegions&) = delete;

  // Opens `key` read/write and keeps [offset, offset + byte_size) of it as
  // region `name`. INVALID_ARGUMENT for a bad name or key, a zero size, or a
  // range past the object's end; NOT_FOUND when no such object exists;
  // PERMISSION_DENIED when it cannot be opened read/write; ALREADY_EXISTS for a
  // name in use; RESOURCE_EXHAUSTED past the region count or byte bound.
  absl::Status Register(const std::string& name, const std::string& key, uint64_t offset,
                        uint64_t byte_size) ABSL_LOCKS_EXCLUDED(mu_);
  // Closes region `name`, or every region for "". A name not registered is not
  // an error (as Triton).
  void Unregister(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  // Region `name`, or every region for "" (by name); NOT_FOUND for an unknown one.
  absl::StatusOr<std::vector<Region>> Status(const std::string& name) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // The `byte_size` bytes at `offset` of region `name`. NOT_FOUND for an
  // unknown region; INVALID_ARGUMENT for a range outside the region or an object
  // that shrank below it; RESOURCE_EXHAUSTED for more than `max_bytes`.
  absl::StatusOr<std::string> Read(const std::string& name, uint64_t offset, uint64_t byte_size,
                                   uint64_t max_bytes) const ABSL_LOCKS_EXCLUDED(mu_);
  // Writes `data` at `offset` of region `name`, into a window of `byte_size`
  // bytes there: INVALID_ARGUMENT when `data` is larger than the window or the
  // window leaves the region; NOT_FOUND for an unknown region.
  absl::Status Write(const std::string& name, uint64_t offset, uint64_t byte_size,
                     absl::string_view data) const ABSL_LOCKS_EXCLUDED(mu_);

  int size() const ABSL_LOCKS_EXCLUDED(mu_);

  // The name and key rules: a name of 1-128 characters [A-Za-z0-9._-]; a key
  // "/" followed by 1-250 of those, not "." or "..".
  static absl::Status ValidateName(absl::string_view name);
  static absl::Status ValidateKey(absl::string_view key);

 private:
  struct Open;  // a registered region and its descriptor

  // The region `name` with [offset, offset + byte_size) inside it.
  absl::StatusOr<std::shared_ptr<const Open>> Find(const std::string& name, uint64_t offset,
                                                   uint64_t byte_size) const
      ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;  // constant after construction
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const Open>> regions_ ABSL_GUARDED_BY(mu_);
  uint64_t total_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_SHARED_MEMORY_REGIONS_H_
