#include "server/checkpoint/module_tree.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<PickledModuleTree> Parse(const std::string& name, std::unique_ptr<ZipReader>* zip) {
  auto z = ZipReader::Open(testing::FixturesDir() + "/" + name + "/model.pth");
  if (!z.ok()) return z.status();
  *zip = *std::move(z);
  return ParsePickledModule(**zip, name);
}

TEST(ModuleTreeTest, TorchvisionVggTreeAsData) {
  std::unique_ptr<ZipReader> zip;
  auto tree = Parse("pickled_tiny", &zip);
  ASSERT_TRUE(tree.ok()) << tree.status();
  const ModuleNode& root = tree->root;
  EXPECT_EQ(root.cls, module_class::kVgg);
  ASSERT_EQ(root.children.size(), 3u);
  EXPECT_EQ(root.children[0].Name(), "features");
  const ModuleNode& conv = root.children[0].children[0];
  EXPECT_EQ(conv.path, "features.0");
  EXPECT_EQ(conv.cls, module_class::kConv);
  EXPECT_EQ(*conv.Int("out_channels"), 8);
  EXPECT_EQ(*conv.Pair("kernel_size"), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(conv.tensors.count("weight"), 1u);
  EXPECT_EQ(conv.tensors.at("weight")->kind, pickle::Kind::kTensor);
  EXPECT_EQ(conv.Int("kernel_size").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ModuleTreeTest, SharedSubmodulesCannotExpandExponentially) {
  std::unique_ptr<ZipReader> zip;
  auto tree = Parse("pickled_shared", &zip);
  EXPECT_EQ(tree.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(tree.status().message()), HasSubstr("more than 20000 modules"));
}

TEST(ModuleTreeTest, UserClassesAreRefusedByName) {
  std::unique_ptr<ZipReader> zip;
  auto tree = Parse("pickled_userclass", &zip);
  EXPECT_EQ(tree.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(tree.status().message()), HasSubstr("MyNet"));
}

}  // namespace
}  // namespace modelserver
