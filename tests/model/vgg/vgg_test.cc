#include "server/model/vgg/vgg.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "common/npy.h"
#include "server/model/tensor_convert.h"
#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

using testing::FixturesDir;
using ::testing::HasSubstr;

StateDict Load(const std::string& name) {
  auto sd = ReadStateDict(FixturesDir() + "/" + name + "/model_weights.pth", {});
  EXPECT_TRUE(sd.ok()) << sd.status();
  return sd.ok() ? *std::move(sd) : StateDict();
}

std::string Arch(const std::string& name) {
  return testing::ReadFile(FixturesDir() + "/" + name + "/arch.txt");
}

TEST(VggTest, KeysAreTorchvisionsAndWeightsAreNotCopied) {
  for (const char* name : {"tiny", "tiny_bn"}) {
    StateDict sd = Load(name);
    std::vector<std::string> file_keys;
    std::vector<const void*> ptrs;
    for (const auto& [k, t] : sd) {
      file_keys.push_back(k);
      ptrs.push_back(t.data_ptr());
    }
    auto config = ParseVggArchitecture(Arch(name));
    ASSERT_TRUE(config.ok());
    auto vgg = VggImpl::Create(*config, sd);
    ASSERT_TRUE(vgg.ok()) << vgg.status();
    // Same keys, same order as torchvision's state_dict().
    StateDict out = (*vgg)->state_dict();
    std::vector<std::string> keys;
    for (const auto& [k, t] : out) keys.push_back(k);
    EXPECT_EQ(keys, file_keys) << name;
    std::set<std::string> module_keys;
    for (const auto& p : (*vgg)->named_parameters()) module_keys.insert(p.key());
    for (const auto& b : (*vgg)->named_buffers()) module_keys.insert(b.key());
    EXPECT_EQ(module_keys, std::set<std::string>(file_keys.begin(), file_keys.end()));
    // The checkpoint's memory became the parameters: nothing was initialised or copied.
    for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].second.data_ptr(), ptrs[i]) << keys[i];
  }
}

TEST(VggTest, ForwardMatchesPython) {
  for (const char* name : {"tiny", "tiny_bn", "tiny_proto4"}) {
    auto config = ParseVggArchitecture(Arch(name));
    ASSERT_TRUE(config.ok());
    auto vgg = VggImpl::Create(*config, Load(name));
    ASSERT_TRUE(vgg.ok()) << vgg.status();
    auto x = ReadNpy(FixturesDir() + "/" + name + "/input.npy");
    auto y = ReadNpy(FixturesDir() + "/" + name + "/output.npy");
    ASSERT_TRUE(x.ok() && y.ok());
    c10::InferenceMode guard;
    at::Tensor out = (*vgg)->forward(*ViewHostTensor(*x));
    at::Tensor expected = *ViewHostTensor(*y);
    ASSERT_EQ(out.sizes(), expected.sizes());
    EXPECT_LE((out - expected).abs().max().item<float>(), 1e-4) << name;
  }
}

TEST(VggTest, StrictLoadingListsEveryProblem) {
  auto config = ParseVggArchitecture(Arch("tiny"));
  ASSERT_TRUE(config.ok());
  StateDict sd = Load("tiny");
  sd.erase(sd.begin() + 1);                               // features.0.bias missing
  sd[0].second = at::zeros({8, 3, 5, 5});                 // features.0.weight wrong shape
  sd.emplace_back("features.99.weight", at::zeros({3}));  // unexpected
  sd.emplace_back("extra", at::zeros({1}));
  auto vgg = VggImpl::Create(*config, sd);
  ASSERT_EQ(vgg.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string msg(vgg.status().message());
  EXPECT_THAT(msg, HasSubstr("missing keys: features.0.bias"));
  EXPECT_THAT(msg, HasSubstr("unexpected keys: extra, features.99.weight"));
  EXPECT_THAT(msg, HasSubstr("features.0.weight is [8,3,5,5], expected [8,3,3,3]"));
  // A whole VGG16 checkpoint against vgg11: one error, not a crash.
  auto vgg11 = ParseVggArchitecture("vgg11:classes=10:hidden=32:pool=2");
  ASSERT_TRUE(vgg11.ok());
  EXPECT_EQ(VggImpl::Create(*vgg11, Load("tiny")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VggTest, IntegerWeightsAreRefused) {
  auto config = ParseVggArchitecture(Arch("tiny"));
  StateDict sd = Load("tiny");
  sd[0].second = sd[0].second.to(at::kInt);
  auto vgg = VggImpl::Create(*config, sd);
  EXPECT_EQ(vgg.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(vgg.status().message()), HasSubstr("floating"));
}

}  // namespace
}  // namespace modelserver
