#include "common/wire_size.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace modelserver {
namespace {

using ::testing::HasSubstr;

constexpr size_t kMax = std::numeric_limits<size_t>::max();

TEST(WireSizeTest, NegativeValuesNeverBecomeSizes) {
  EXPECT_EQ(*WireSize(5, 10, "n"), 5u);
  EXPECT_EQ(*WireSize(10, 10, "n"), 10u);
  absl::StatusOr<size_t> neg = WireSize(-1, kMax, "binary_data_size");
  ASSERT_FALSE(neg.ok());
  EXPECT_EQ(neg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(neg.status().message()), HasSubstr("binary_data_size is -1"));
  EXPECT_FALSE(WireSize(std::numeric_limits<int64_t>::min(), kMax, "n").ok());
  EXPECT_FALSE(WireSize(11, 10, "n").ok());
  EXPECT_FALSE(WireSizeUnsigned(std::numeric_limits<uint64_t>::max(), kMax - 1, "n").ok());
}

TEST(WireSizeTest, TextIsDigitsOnly) {
  EXPECT_EQ(*WireSizeText("0", 10, "h"), 0u);
  EXPECT_EQ(*WireSizeText("1024", 4096, "h"), 1024u);
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "0x10", "1e3", "12a", "18446744073709551616",
                          "99999999999999999999"}) {
    EXPECT_FALSE(WireSizeText(bad, kMax, "h").ok()) << bad;
  }
  EXPECT_FALSE(WireSizeText("4097", 4096, "h").ok());
}

TEST(WireSizeTest, SumsAndProductsDoNotWrap) {
  EXPECT_EQ(*CheckedAdd(3, 4, 7, "a"), 7u);
  EXPECT_FALSE(CheckedAdd(3, 5, 7, "a").ok());
  EXPECT_FALSE(CheckedAdd(kMax, 1, kMax, "a").ok());
  EXPECT_FALSE(CheckedAdd(1, kMax, kMax, "a").ok());
  EXPECT_EQ(*CheckedMul(0, kMax, kMax, "m"), 0u);
  EXPECT_EQ(*CheckedMul(6, 7, 42, "m"), 42u);
  EXPECT_FALSE(CheckedMul(6, 8, 42, "m").ok());
  EXPECT_FALSE(CheckedMul(size_t{1} << 33, size_t{1} << 33, kMax, "m").ok());
}

TEST(WireSizeTest, SpansStayInside) {
  EXPECT_TRUE(CheckSpan(0, 10, 10, "s").ok());
  EXPECT_TRUE(CheckSpan(10, 0, 10, "s").ok());
  EXPECT_FALSE(CheckSpan(11, 0, 10, "s").ok());
  EXPECT_FALSE(CheckSpan(5, 6, 10, "s").ok());
  // The wrap-around that `offset + n > total` misses.
  EXPECT_FALSE(CheckSpan(5, kMax, 10, "s").ok());
  EXPECT_FALSE(CheckSpan(kMax, 2, 10, "s").ok());
}

TEST(WireSizeTest, ElementCounts) {
  EXPECT_EQ(*ElementCount({2, 3, 4}, 4, kMax, "t"), 24u);
  EXPECT_EQ(*ElementCount({}, 4, kMax, "t"), 1u);
  EXPECT_EQ(*ElementCount({0, int64_t{1} << 62, int64_t{1} << 62}, 4, kMax, "t"), 0u);
  EXPECT_FALSE(ElementCount({2, -3}, 4, kMax, "t").ok());
  EXPECT_FALSE(ElementCount({int64_t{1} << 31, int64_t{1} << 31}, 8, kMax, "t").ok());
  EXPECT_FALSE(ElementCount({1 << 20}, 1, 1 << 19, "t").ok());
  absl::StatusOr<size_t> big = ElementCount({int64_t{1} << 40, int64_t{1} << 40}, 4, kMax, "input");
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("too large"));
}

}  // namespace
}  // namespace modelserver
