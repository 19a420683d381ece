// --precision int8 at load (server/model/int8_network.h) on the fixtures' tiny
// VGG with batch norm: what is refused before anything serves, and the numbers a
// served int8 model reports. (int8_test checks the served outputs against
// PyTorch's own quantization.) And the fixtures' hand-written exported programs.
#include "server/model/int8_network.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "common/npy.h"
#include "server/model/exported_program_model.h"
#include "server/model/model_loader.h"
#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

using testing::FixturesDir;
using ::testing::HasSubstr;

// Samples [n, 3, side, side] from a normal distribution, written as a .npy.
std::string WriteSamples(const std::string& name, int64_t n, float poison = 0, int64_t side = 32) {
  HostTensor t;
  t.dtype = DType::kFloat32;
  t.shape = {n, 3, side, side};
  std::vector<float> v(static_cast<size_t>(t.NumElements()));
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  for (float& x : v) x = normal(gen);
  if (poison != 0) v[17] = poison;
  t.data.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  const std::string path = testing::NewTempDir("int8") + "/" + name;
  EXPECT_TRUE(WriteNpy(path, t).ok());
  return path;
}

ModelLoadOptions TinyBnInt8(const std::string& calibration) {
  ModelLoadOptions o;
  o.path = FixturesDir() + "/tiny_bn/model_weights.pth";
  o.architecture = testing::ReadFile(FixturesDir() + "/tiny_bn/arch.txt");
  o.precision = Precision::kInt8;
  o.calibration_path = calibration;
  o.name = "tiny_bn";
  o.version = 1;
  return o;
}

TEST(Int8NetworkTest, ParsesTheMode) {
  auto p = ParsePrecision("INT8");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, Precision::kInt8);
  EXPECT_STREQ(PrecisionName(*p), "int8");
  EXPECT_THAT(std::string(ParsePrecision("int4").status().message()), HasSubstr("int8"));
}

TEST(Int8NetworkTest, ServesAndReportsItsAccuracy) {
  auto model = LoadModelFromFile(TinyBnInt8(WriteSamples("ok.npy", 12)));
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelInfo& info = (*model)->info();
  EXPECT_EQ(info.precision, "int8");
  EXPECT_EQ(info.int8_samples, 12);
  EXPECT_GE(info.int8_top1_agreement, 0.0);
  EXPECT_LE(info.int8_top1_agreement, 1.0);
  EXPECT_GT(info.int8_worst_cosine, 0.9);
  EXPECT_LE(info.int8_worst_cosine, 1.0 + 1e-9);
  HostTensor x;
  x.dtype = DType::kFloat32;
  x.shape = {2, 3, 32, 32};
  x.data.assign(2 * 3 * 32 * 32 * sizeof(float), '\0');
  auto y = (*model)->Forward(x);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape, (std::vector<int64_t>{2, 10}));
}

TEST(Int8NetworkTest, WithoutSamplesIsRefusedSayingHowToAddThem) {
  auto model = LoadModelFromFile(TinyBnInt8(""));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("no calibration samples"));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("--calibration"));
}

TEST(Int8NetworkTest, NonFiniteSamplesAreRefused) {
  auto model = LoadModelFromFile(
      TinyBnInt8(WriteSamples("nan.npy", 4, std::numeric_limits<float>::quiet_NaN())));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("finite"));
}

TEST(Int8NetworkTest, AnAgreementBarAboveWhatItReachesRefusesWithTheNumbers) {
  ModelLoadOptions o = TinyBnInt8(WriteSamples("bar.npy", 8));
  o.min_int8_agreement = 1.0;
  auto model = LoadModelFromFile(o);
  if (model.ok()) {
    // Every sample agreed: the bar was reached, and the status says so.
    EXPECT_EQ((*model)->info().int8_top1_agreement, 1.0);
    return;
  }
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("top-1 agreement"));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("below --min_int8_agreement 1"));
}

TEST(Int8NetworkTest, OnlyOnACpu) {
  ModelLoadOptions o = TinyBnInt8(WriteSamples("gpu.npy", 2));
  o.device = "cuda:0";
  auto model = LoadModelFromFile(o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("runs on a CPU"));
}

TEST(Int8NetworkTest, TorchScriptIsItsMakersToQuantize) {
  ModelLoadOptions o = TinyBnInt8(WriteSamples("ts.npy", 2));
  o.path = FixturesDir() + "/tiny_ts_script/model.pt";
  o.format = ModelFormat::kTorchScript;
  o.architecture.clear();
  auto model = LoadModelFromFile(o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("quantizes native VGGs"));
}

// The fixtures' hand-written torch.export programs (torch 2.6's layout, written on
// both platforms) of a small CNN: conv2d, batch_norm, relu, mean over height and
// width, linear.
double Cosine(const HostTensor& a, const HostTensor& b) {
  const auto* x = reinterpret_cast<const float*>(a.data.data());
  const auto* y = reinterpret_cast<const float*>(b.data.data());
  double dot = 0, nx = 0, ny = 0;
  for (size_t i = 0; i < std::min(a.data.size(), b.data.size()) / 4; ++i) {
    dot += double{x[i]} * y[i];
    nx += double{x[i]} * x[i];
    ny += double{y[i]} * y[i];
  }
  return dot / std::sqrt(nx * ny);
}

// Fixture `dir`'s `file` in int8 (a state dict with `architecture` as its template,
// when given) serves close to the same in fp32.
void ServesCloseToItsFloatModel(const std::string& dir, const std::string& file,
                                const std::string& architecture = "") {
  ModelLoadOptions o;
  o.path = FixturesDir() + "/export/" + dir + "/" + file;
  o.format = architecture.empty() ? ModelFormat::kExportedProgram : ModelFormat::kStateDict;
  if (!architecture.empty()) {
    o.architecture_path = FixturesDir() + "/export/" + dir + "/" + architecture;
  }
  o.precision = Precision::kInt8;
  o.name = dir;
  o.version = 1;
  o.calibration_path = WriteSamples(o.name + ".npy", 16, 0, 8);
  ModelLoadOptions fp32 = o;
  fp32.precision = Precision::kFp32;
  auto f = LoadModelFromFile(fp32);
  ASSERT_TRUE(f.ok()) << f.status();
  o.min_int8_agreement = 0;  // two random classes: a near tie flips top-1
  auto q = LoadModelFromFile(o);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)->info().precision, "int8");
  EXPECT_EQ((*q)->info().int8_samples, 16);
  EXPECT_GT((*q)->info().int8_worst_cosine, 0.9);
  auto x = ReadNpy(FixturesDir() + "/export/" + dir + "/input.npy");
  ASSERT_TRUE(x.ok()) << x.status();
  auto want = (*f)->Forward(*x);
  auto got = (*q)->Forward(*x);
  ASSERT_TRUE(want.ok() && got.ok()) << want.status() << " " << got.status();
  EXPECT_EQ(got->shape, want->shape);
  EXPECT_GT(Cosine(*got, *want), 0.99);
}

TEST(Int8NetworkTest, AnExportedChainIsQuantized) {
  ServesCloseToItsFloatModel("handmade_26", "model.pt2");
}

TEST(Int8NetworkTest, AStateDictInAProgramTemplateIsQuantized) {
  ServesCloseToItsFloatModel("handmade_template", "model_weights.pth", "architecture.pt2");
}

// Layers that are not the float model's network (here: one weight doubled, as a
// misread graph would give) are refused before they serve.
TEST(Int8NetworkTest, LayersThatAreNotTheFloatModelsAreRefused) {
  auto program = ExportedProgramModel::Load(FixturesDir() + "/export/handmade_26/model.pt2", "cpu");
  ASSERT_TRUE(program.ok()) << program.status();
  auto layers = (*program)->Int8Layers();
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_FALSE(layers->empty());
  ASSERT_EQ(layers->front().kind, FloatLayer::Kind::kConv);
  Int8Options o;
  o.calibration_path = WriteSamples("misread.npy", 8, 0, 8);
  o.min_agreement = 0;
  auto right = QuantizeInt8(*layers, *program, o);
  EXPECT_TRUE(right.ok()) << right.status();
  layers->front().weight = layers->front().weight * 2;
  auto wrong = QuantizeInt8(*layers, *program, o);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("do not compute what"));
}

}  // namespace
}  // namespace modelserver
