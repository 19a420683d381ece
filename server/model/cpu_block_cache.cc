#include "server/model/cpu_block_cache.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "server/model/torch_compat.h"

namespace modelserver {

struct ScopedCpuMemoryBudget::State {
  explicit State(uint64_t l) : limit(l) {}
  const uint64_t limit;
  std::atomic<uint64_t> live{0};
  std::atomic<uint64_t> peak{0};
  std::atomic<int> refs{1};  // the scope, and each block counted against it
  void Unref() {
    if (refs.fetch_sub(1) == 1) delete this;
  }
};

namespace {

constexpr size_t kMinCachedBlock = size_t{256} << 10;
thread_local ScopedCpuMemoryBudget::State* t_budget = nullptr;

using Budget = ScopedCpuMemoryBudget::State;

// Counts `n` bytes against the calling thread's budget, or throws as LibTorch does
// when memory runs out. The budget, or null when none applies.
Budget* Charge(size_t n) {
  Budget* b = t_budget;
  if (b == nullptr) return nullptr;
  const uint64_t now = b->live.fetch_add(n) + n;
  if (now > b->limit) {
    b->live.fetch_sub(n);
    TORCH_CHECK(false, "out of memory: the forward pass would hold ", now,
                " bytes of CPU memory at once, over its budget of ", b->limit,
                " bytes (--memory_limit_bytes / (2 x --batch_workers))");
  }
  uint64_t peak = b->peak.load();
  while (now > peak && !b->peak.compare_exchange_weak(peak, now)) {
  }
  b->refs.fetch_add(1);
  return b;
}

void Uncharge(Budget* b, size_t n) {
  if (b == nullptr) return;
  b->live.fetch_sub(n);
  b->Unref();
}

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
    Budget* budget = Charge(n);  // throws past the thread's budget
    if (n >= kMinCachedBlock) {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = free_.find(n); it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= n;
        live_[p] = {n, budget};
        return p;
      }
    }
    void* p = nullptr;
    try {
      try {
        p = c10::alloc_cpu(n);
      } catch (const c10::Error&) {
        // Over the process's cap with blocks kept: give them back and try again.
        if (!Flush()) throw;
        p = c10::alloc_cpu(n);
      }
    } catch (...) {
      Uncharge(budget, n);
      throw;
    }
    if ((n >= kMinCachedBlock || budget != nullptr) && p != nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = {n, budget};
    } else {
      Uncharge(budget, n);
    }
    return p;
  }

  void Give(void* p) const {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = live_.find(p);
      if (it != live_.end()) {
        const size_t n = it->second.first;
        Uncharge(it->second.second, n);
        live_.erase(it);
        if (n >= kMinCachedBlock && cached_ + n <= max_cached_) {
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
  mutable std::multimap<size_t, void*> free_;  // kept blocks by size
  // handed out, >= kMinCachedBlock or under a budget: size, and the budget it
  // counts against
  mutable std::unordered_map<void*, std::pair<size_t, Budget*>> live_;
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

ScopedCpuMemoryBudget::ScopedCpuMemoryBudget(uint64_t bytes)
    : previous_(t_budget), state_(new State(bytes)) {
  t_budget = state_;
}

ScopedCpuMemoryBudget::~ScopedCpuMemoryBudget() {
  t_budget = previous_;
  state_->Unref();
}

uint64_t ScopedCpuMemoryBudget::peak_bytes() const { return state_->peak.load(); }

bool ScopedCpuMemoryBudget::Enforced() { return g_cache != nullptr; }

}  // namespace modelserver
