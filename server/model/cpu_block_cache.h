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
// nothing. Thread-safe.
void InstallCpuBlockCache(uint64_t max_cached_bytes);

// Bytes held by the cache now (0 when it is not installed).
uint64_t CpuBlockCacheBytes();

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_CPU_BLOCK_CACHE_H_
