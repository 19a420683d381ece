#include "server/model/torchscript_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "server/checkpoint/torchscript_archive.h"
#include "server/checkpoint/zip_reader.h"
#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

using ::testing::HasSubstr;

TEST(TorchScriptOpsTest, Allowlist) {
  for (const char* op : {"aten::conv2d", "aten::relu_", "aten::add_", "aten::_convolution",
                         "aten::__getitem__", "prim::If", "prim::GetAttr", "aten::format"}) {
    EXPECT_TRUE(IsAllowedTorchScriptOperator(op)) << op;
  }
  for (const char* op :
       {"aten::from_file", "aten::save", "aten::empty", "aten::empty_like", "prim::Print",
        "aten::warn", "prim::SetAttr", "prim::PythonOp", "prim::fork", "aten::wait",
        "prim::CallMethod", "aten::__getitem___", "quantized::conv2d", "aten::", "conv2d"}) {
    EXPECT_FALSE(IsAllowedTorchScriptOperator(op)) << op;
  }
}

torch::jit::Module Load(const std::string& name) {
  return torch::jit::load(testing::FixturesDir() + "/" + name + "/model.pt");
}

TEST(TorchScriptOpsTest, TorchvisionAndFixtureModelsPass) {
  std::vector<std::string> names = {"tiny_ts_script", "tiny_ts_trace"};
  for (const char* full : {"vgg16_ts_script", "resnet18_ts_script", "resnet18_ts_trace"}) {
    if (std::ifstream(testing::FixturesDir() + "/" + full + "/model.pt")) {
      names.push_back(full);
    } else {
      std::printf("note: %s not made (fixtures written with --no-full); not checked\n", full);
    }
  }
  for (const std::string& name : names) {
    absl::Status s = CheckTorchScriptOperators(Load(name));
    EXPECT_TRUE(s.ok()) << name << ": " << s;
  }
}

TEST(TorchScriptOpsTest, FileReadingForwardIsRefusedByName) {
  absl::Status s = CheckTorchScriptOperators(Load("ts_from_file"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("aten::from_file"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("forward"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("--trust_torchscript"));
}

TEST(TorchScriptOpsTest, SetStateIsFoundBeforeLoading) {
  auto zip = ZipReader::Open(testing::FixturesDir() + "/ts_setstate/model.pt");
  ASSERT_TRUE(zip.ok()) << zip.status();
  absl::Status s = CheckTorchScriptArchive(**zip, "model.pt");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("__setstate__"));
  auto fine = ZipReader::Open(testing::FixturesDir() + "/tiny_ts_script/model.pt");
  ASSERT_TRUE(fine.ok());
  EXPECT_TRUE(CheckTorchScriptArchive(**fine, "model.pt").ok());
  auto state_dict = ZipReader::Open(testing::FixturesDir() + "/tiny/model_weights.pth");
  ASSERT_TRUE(state_dict.ok());
  EXPECT_THAT(std::string(CheckTorchScriptArchive(**state_dict, "w.pth").message()),
              HasSubstr("not a TorchScript archive"));
}

}  // namespace
}  // namespace modelserver
