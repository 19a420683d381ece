#ifndef MODELSERVER_SERVER_MODEL_CPU_BLOCK_CACHE_H_
#define MODELSERVER_SERVER_MODEL_CPU_BLOCK_CACHE_H_

#include <cstddef>
#include <cstdint>

namespace modelserver {

// Makes LibTorch's CPU allocator keep freed blocks of 256 KiB and more (up to
// `max_cached_bytes` in all) and hand them back for the next allocation of the
// same size, instead of returning them to the kernel. A forward pass allocates
// the same activation and im2col sizes on every batch; glibc serves blocks over
// 32 MiB with mmap, so without a cache each batch faults every page of them in
// again (measured for VGG16 at batch 8: ~25,000 page faults and a quarter of the
// CPU time per sample in the kernel). An allocation that fails with blocks
// cached frees them all and retries. The server installs it with its share of
// --memory_limit_bytes (--cpu_block_cache_bytes), a sandboxed model-worker with
// a quarter of its own cap. Call once, before any model loads; later calls do
// nothing. Thread-safe. With `max_cached_bytes` 0 nothing is kept, and the
// allocator still counts ScopedCpuMemoryBudget's blocks.
void InstallCpuBlockCache(uint64_t max_cached_bytes);

// Bytes held by the cache now (0 when it is not installed).
uint64_t CpuBlockCacheBytes();

// While alive, bounds the CPU memory that allocations made on the calling thread
// (through the allocator InstallCpuBlockCache put in; every size) hold at once: an allocation that
// would take them past `bytes` throws the c10::Error LibTorch throws when memory runs out ("... out
// of memory ..."; TorchError makes it RESOURCE_EXHAUSTED), before anything is allocated. Blocks are
// counted until they are freed, on any thread, also after the scope ends. Nested scopes: the
// innermost applies. Without the allocator installed nothing is bounded (Enforced() says so). For
// work whose memory is not known in advance: an exported program's forward pass.
class ScopedCpuMemoryBudget {
 public:
  explicit ScopedCpuMemoryBudget(uint64_t bytes);
  ~ScopedCpuMemoryBudget();
  ScopedCpuMemoryBudget(const ScopedCpuMemoryBudget&) = delete;
  ScopedCpuMemoryBudget& operator=(const ScopedCpuMemoryBudget&) = delete;
  // The most the scope's blocks held at once so far.
  uint64_t peak_bytes() const;
  static bool Enforced();

  struct State;

 private:
  State* previous_;
  State* state_;  // shared with the blocks allocated under it (reference-counted)
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_CPU_BLOCK_CACHE_H_
