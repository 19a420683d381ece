#include "server/model/cpu_block_cache.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace modelserver {
namespace {

// Its own binary: the cache is installed once per process, here with a 1 MiB cap.
class CpuBlockCacheTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InstallCpuBlockCache(uint64_t{1} << 20); }
};

constexpr int64_t kFloats = 128 * 1024;  // 512 KiB: cached
constexpr uint64_t kBytes = kFloats * 4;

TEST_F(CpuBlockCacheTest, AFreedBlockIsHandedBackForTheSameSize) {
  ASSERT_EQ(CpuBlockCacheBytes(), 0u);
  const void* first = nullptr;
  {
    torch::Tensor t = torch::ones({kFloats});
    first = t.data_ptr();
  }
  EXPECT_EQ(CpuBlockCacheBytes(), kBytes);
  torch::Tensor again = torch::empty({kFloats});
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_EQ(CpuBlockCacheBytes(), 0u);
  // A reused block holds what its new owner writes.
  again.fill_(3.0f);
  EXPECT_EQ(again.sum().item<float>(), 3.0f * kFloats);
}

TEST_F(CpuBlockCacheTest, SmallBlocksAreNotKeptAndTheCapHolds) {
  torch::Tensor drain = torch::empty({kFloats});  // whatever an earlier test left
  ASSERT_EQ(CpuBlockCacheBytes(), 0u);
  { torch::Tensor small = torch::ones({1024}); }  // 4 KiB
  EXPECT_EQ(CpuBlockCacheBytes(), 0u);
  {
    torch::Tensor a = torch::ones({kFloats}), b = torch::ones({kFloats}),
                  c = torch::ones({kFloats});
  }
  // Three 512 KiB blocks freed under a 1 MiB cap: two kept, the third freed.
  EXPECT_EQ(CpuBlockCacheBytes(), 2 * kBytes);
  torch::Tensor x = torch::empty({kFloats}), y = torch::empty({kFloats});
  EXPECT_EQ(CpuBlockCacheBytes(), 0u);
}

}  // namespace
}  // namespace modelserver
