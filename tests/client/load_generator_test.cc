#include "client/load_generator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace modelserver {
namespace {

using ::testing::HasSubstr;

TEST(LoadGeneratorTest, QuantilesAreNearestRank) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(Quantile(v, 0.5), 50);
  EXPECT_EQ(Quantile(v, 0.9), 90);
  EXPECT_EQ(Quantile(v, 0.99), 99);
  EXPECT_EQ(Quantile(v, 1.0), 100);
  EXPECT_EQ(Quantile({}, 0.5), 0);
  EXPECT_EQ(Quantile({7}, 0.99), 7);
}

TEST(LoadGeneratorTest, Formats) {
  LevelResult r;
  r.concurrency = 4;
  r.requests = 10;
  r.samples = 20;
  r.seconds = 2;
  r.samples_per_second = 10;
  r.p50 = 1.5;
  r.errors["UNAVAILABLE"] = 3;
  EXPECT_THAT(FormatTable({r}), HasSubstr("UNAVAILABLE=3"));
  EXPECT_THAT(FormatCsv({r}), HasSubstr("4,10,20,2.000,"));
  const std::string json = FormatJson({r});
  EXPECT_THAT(json, HasSubstr("\"concurrency\": 4"));
  EXPECT_THAT(json, HasSubstr("\"errors\": {\"UNAVAILABLE\": 3}"));
}

}  // namespace
}  // namespace modelserver
