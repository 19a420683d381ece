#include "server/model/vgg/vgg_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace modelserver {
namespace {

using ::testing::HasSubstr;

TEST(VggConfigTest, StandardNamesRoundTrip) {
  for (const char* name :
       {"vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"}) {
    auto c = ParseVggArchitecture(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status();
    EXPECT_EQ(c->Name(), name);
    EXPECT_EQ(c->MinInputSize(), 32);
  }
}

TEST(VggConfigTest, Vgg16KeysAreTorchvisions) {
  auto c = ParseVggArchitecture("vgg16");
  ASSERT_TRUE(c.ok());
  const auto shapes = c->StateDictShapes();
  // 13 convs x 2 + 3 linears x 2.
  ASSERT_EQ(shapes.size(), 32u);
  EXPECT_EQ(shapes[0].first, "features.0.weight");
  EXPECT_EQ(shapes[0].second, (std::vector<int64_t>{64, 3, 3, 3}));
  EXPECT_EQ(shapes[2].first, "features.2.weight");
  EXPECT_EQ(shapes[4].first, "features.5.weight");  // after the first max-pool at 4
  EXPECT_EQ(shapes[25].first, "features.28.bias");
  EXPECT_EQ(shapes[26].first, "classifier.0.weight");
  EXPECT_EQ(shapes[26].second, (std::vector<int64_t>{4096, 25088}));
  EXPECT_EQ(shapes[31].first, "classifier.6.bias");
  EXPECT_EQ(shapes[31].second, (std::vector<int64_t>{1000}));
  int64_t params = 0;
  for (const auto& [k, s] : shapes) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    params += n;
  }
  EXPECT_EQ(params, 138357544);  // torchvision's vgg16 parameter count
}

TEST(VggConfigTest, BatchNormKeys) {
  auto c = ParseVggArchitecture("vgg11_bn");
  ASSERT_TRUE(c.ok());
  const auto shapes = c->StateDictShapes();
  EXPECT_EQ(shapes[2].first, "features.1.weight");
  EXPECT_EQ(shapes[4].first, "features.1.running_mean");
  EXPECT_EQ(shapes[6].first, "features.1.num_batches_tracked");
  EXPECT_TRUE(shapes[6].second.empty());
  EXPECT_EQ(shapes[7].first, "features.4.weight");  // conv, bn, relu, pool = 0..3
}

TEST(VggConfigTest, CustomConfig) {
  auto c = ParseVggArchitecture("vgg:cfg=8-M-16-M:bn:classes=10:hidden=32:pool=2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->batch_norm);
  EXPECT_EQ(c->num_classes, 10);
  EXPECT_EQ(c->hidden, 32);
  EXPECT_EQ(c->pool, 2);
  EXPECT_EQ(c->MinInputSize(), 4);
  EXPECT_EQ(c->Name(), "vgg:cfg=8-M-16-M:bn:classes=10:hidden=32:pool=2");
  const auto shapes = c->StateDictShapes();
  EXPECT_EQ(shapes.back().first, "classifier.6.bias");
  EXPECT_EQ(shapes[shapes.size() - 6].second, (std::vector<int64_t>{32, 16 * 2 * 2}));
  auto v = ParseVggArchitecture("vgg16:classes=10");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->Name(), "vgg16:classes=10");
}

TEST(VggConfigTest, RejectsBadNames) {
  for (const char* bad : {"resnet50", "vgg17", "vgg", "vgg:cfg=", "vgg:cfg=M-M", "vgg16:classes=0",
                          "vgg16:hidden=x", "vgg16:color=blue", "vgg:cfg=8-Q"}) {
    auto c = ParseVggArchitecture(bad);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("architecture")) << bad;
  }
}

TEST(VggConfigTest, DepthIsBoundedSoTheWarmUpShapeStaysSmall) {
  // 16 max-pools would make the smallest input 65536 x 65536 (a 51 GB warm-up).
  std::string deep = "vgg:cfg=8";
  for (int i = 0; i < 16; ++i) deep += "-M";
  auto c = ParseVggArchitecture(deep);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("max-pools"));
  std::string ok = "vgg:cfg=8";
  for (int i = 0; i < VggConfig::kMaxMaxPools; ++i) ok += "-M";
  auto fine = ParseVggArchitecture(ok);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->MinInputSize(), 1 << VggConfig::kMaxMaxPools);
  std::string wide = "vgg:cfg=8";
  for (int i = 0; i < 70; ++i) wide += "-8";
  EXPECT_EQ(ParseVggArchitecture(wide).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modelserver
