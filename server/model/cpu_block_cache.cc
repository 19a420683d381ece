#include "server/model/cpu_block_cache.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <map>
#include <mutex>
#include <unordered_map>

#include "server/model/torch_compat.h"

namespace modelserver {
namespace {

constexpr size_t kMinCachedBlock = size_t{256} << 10;

class CpuBlockCache final : public torch_compat::AllocatorBase {
 public:
  explicit CpuBlockCache(uint64_t max_cached) : max_cached_(max_cached) {}

  c10::DataPtr Allocate(size_t n) const override {
    void* p = Take(n);
    return {p, p, &Release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Release; }

  uint64_t cached() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  static void Release(void* p);

  void* Take(size_t n) const {
    if (n >= kMinCachedBlock) {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = free_.find(n); it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= n;
        live_[p] = n;
        return p;
      }
    }
    void* p = nullptr;
    try {
      p = c10::alloc_cpu(n);
    } catch (const c10::Error&) {
      // Over the process's cap with blocks kept: give them back and try again.
      if (!Flush()) throw;
      p = c10::alloc_cpu(n);
    }
    if (n >= kMinCachedBlock && p != nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = n;
    }
    return p;
  }

  void Give(void* p) const {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = live_.find(p);
      if (it != live_.end()) {
        const size_t n = it->second;
        live_.erase(it);
        if (cached_ + n <= max_cached_) {
          free_.emplace(n, p);
          cached_ += n;
          return;
        }
      }
    }
    c10::free_cpu(p);
  }

  // Frees every kept block; whether there was any.
  bool Flush() const {
    std::multimap<size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
      cached_ = 0;
    }
    for (const auto& [n, p] : blocks) c10::free_cpu(p);
    return !blocks.empty();
  }

  const uint64_t max_cached_;
  mutable std::mutex mu_;
  mutable std::multimap<size_t, void*> free_;       // kept blocks by size
  mutable std::unordered_map<void*, size_t> live_;  // handed out, >= kMinCachedBlock
  mutable uint64_t cached_ = 0;
};

CpuBlockCache* g_cache = nullptr;

void CpuBlockCache::Release(void* p) {
  if (p != nullptr) g_cache->Give(p);
}

}  // namespace

void InstallCpuBlockCache(uint64_t max_cached_bytes) {
  if (g_cache != nullptr) return;
  g_cache = new CpuBlockCache(max_cached_bytes);  // lives as long as the process
  c10::SetCPUAllocator(g_cache, /*priority=*/1);
}

uint64_t CpuBlockCacheBytes() { return g_cache == nullptr ? 0 : g_cache->cached(); }

}  // namespace modelserver
