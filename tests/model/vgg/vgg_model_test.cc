#include "server/model/vgg/vgg_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/npy.h"
#include "server/model/model_loader.h"
#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

using testing::FixturesDir;
using ::testing::HasSubstr;

std::shared_ptr<const Model> LoadTiny() {
  ModelLoadOptions o;
  o.path = FixturesDir() + "/tiny/model_weights.pth";
  o.architecture = testing::ReadFile(FixturesDir() + "/tiny/arch.txt");
  auto m = LoadModelFromFile(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : nullptr;
}

TEST(VggModelTest, ValidateInput) {
  auto model = LoadTiny();
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->info().architecture, "vgg:cfg=8-M-16-M:classes=10:hidden=32:pool=2");
  EXPECT_EQ(model->info().device, "cpu");
  EXPECT_TRUE(model->ValidateInput(DType::kFloat32, {2, 3, 32, 32}).ok());
  EXPECT_TRUE(model->ValidateInput(DType::kFloat32, {3, 4, 4}).ok());
  struct Case {
    DType dtype;
    std::vector<int64_t> shape;
    const char* message;
  } cases[] = {
      {DType::kFloat32, {3, 32}, "has rank 2, expected [N,3,H,W] or [3,H,W]"},
      {DType::kFloat32, {1, 1, 3, 32, 32}, "has rank 5"},
      {DType::kFloat32, {1, 1, 32, 32}, "has 1 channels, expected [N,3,H,W]"},
      {DType::kFloat32, {1, 3, 224}, "(read as [C,H,W]) has 1 channels"},
      {DType::kFloat32, {0, 3, 32, 32}, "is empty"},
      {DType::kFloat32, {1, 3, 3, 32}, "too small"},
      {DType::kFloat32, {1, 3, 32, 100000}, "at most"},
      {DType::kInt32, {1, 3, 32, 32}, "dtype int32 is not supported, expected float32"},
      {DType::kFloat64, {1, 3, 32, 32}, "dtype float64"},
  };
  for (const Case& c : cases) {
    absl::Status s = model->ValidateInput(c.dtype, c.shape);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << ShapeString(c.shape);
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.message)) << ShapeString(c.shape);
  }
}

TEST(VggModelTest, UnbatchedInputGivesUnbatchedOutput) {
  auto model = LoadTiny();
  ASSERT_NE(model, nullptr);
  auto x = ReadNpy(FixturesDir() + "/tiny/input.npy");
  ASSERT_TRUE(x.ok());
  auto batched = model->Forward(*x);
  ASSERT_TRUE(batched.ok()) << batched.status();
  EXPECT_EQ(batched->shape, (std::vector<int64_t>{4, 10}));
  HostTensor one;
  one.dtype = DType::kFloat32;
  one.shape = {3, 32, 32};
  one.data = x->data.substr(0, 3 * 32 * 32 * 4);
  auto single = model->Forward(one);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->shape, (std::vector<int64_t>{10}));
  // The same sample alone or in a batch: equal up to float rounding (BLAS blocks
  // differently per batch size).
  const auto* a = reinterpret_cast<const float*>(single->data.data());
  const auto* b = reinterpret_cast<const float*>(batched->data.data());
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << i;
}

TEST(VggModelTest, LoaderErrors) {
  ModelLoadOptions o;
  o.path = FixturesDir() + "/tiny/model_weights.pth";
  EXPECT_EQ(LoadModelFromFile(o).status().code(), absl::StatusCode::kFailedPrecondition);
  o.architecture = "resnet50";
  EXPECT_EQ(LoadModelFromFile(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.architecture = "vgg16";
  auto m = LoadModelFromFile(o);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("does not fit architecture vgg16"));
  o.format = ModelFormat::kTorchScript;  // a state dict is no TorchScript archive
  m = LoadModelFromFile(o);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("not a TorchScript archive"));
  o.format = ModelFormat::kPickledModule;  // a state dict is no pickled module
  m = LoadModelFromFile(o);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("not a module"));
}

}  // namespace
}  // namespace modelserver
