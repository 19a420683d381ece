// Integration: precision and memory-format modes on the real server (CPU).
// Outputs are compared with Python's float32 outputs of the same fixtures: bf16
// within a stated tolerance (and provably not the float32 path), fp32 in either
// layout within 1e-4; fp16 on a CPU is refused naming the mode; status reports
// the mode; inputs in float64 / float16 are answered in their own dtype.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "client/model_client.h"
#include "common/dtype_convert.h"
#include "common/npy.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;
using testing::FixturesDir;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return FixturesDir() + "/" + name + "/model_weights.pth";
}
std::string Arch(const std::string& name) {
  return testing::ReadFile(FixturesDir() + "/" + name + "/arch.txt");
}

// bf16 keeps 8 significant bits: each output may be off by about 2^-8 of the
// magnitudes summed into it. Stated tolerance: 3% of the largest |output| + 1e-3.
float Bf16Tolerance(const HostTensor& expected) {
  const auto* y = reinterpret_cast<const float*>(expected.data.data());
  float largest = 0;
  for (int64_t i = 0; i < expected.NumElements(); ++i) largest = std::max(largest, std::abs(y[i]));
  return 0.03f * largest + 1e-3f;
}

class PrecisionTest : public ::testing::Test {
 protected:
  // A server whose store holds tiny (and tiny_bn) under several names, started
  // with `flags`.
  void Start(const std::vector<std::string>& flags, const std::vector<std::string>& models) {
    store_ = testing::NewTempDir("precision_store");
    std::vector<std::string> args = {"--store=" + store_};
    for (const std::string& m : models) {
      const std::string fixture = m.rfind("tiny_bn", 0) == 0 ? "tiny_bn" : "tiny";
      std::string manifest = testing::StateDictManifest(Fixture(fixture), Arch(fixture));
      for (const char* p : {"fp32", "fp16"}) {
        if (m == absl::StrCat("tiny_manifest_", p)) {
          manifest.insert(manifest.rfind('}'), absl::StrCat(",\n  \"precision\": \"", p, "\"\n"));
        }
      }
      testing::PutVersion(store_, m, 1, Fixture(fixture), "model_weights.pth", manifest);
      args.push_back("--model=" + m);
    }
    args.insert(args.end(), flags.begin(), flags.end());
    auto serving = testing::StartServing(args, store_ + "/server.log", models);
    ASSERT_TRUE(serving.ok()) << serving.status();
    server_ = std::move(serving->server);
    client_ = std::move(serving->client);
  }

  v1::ModelStatus Status(const std::string& name) {
    v1::ModelStatus st;
    EXPECT_TRUE(client_->GetModelStatus(name, &st).ok());
    return st;
  }

  // The model's output for `fixture`'s input sent as `dtype`, back in float32.
  HostTensor Predict(const std::string& name, const std::string& fixture, DType dtype,
                     DType* answered = nullptr) {
    HostTensor x = testing::FixtureNpy(fixture, "input.npy");
    auto sent = ConvertFloat(x, dtype);
    EXPECT_TRUE(sent.ok());
    v1::PredictResponse r;
    grpc::Status s = client_->Predict(MakePredictRequest(name, *sent, 0), &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    HostTensor out = OutputTensor(r);
    if (answered != nullptr) *answered = out.dtype;
    auto f32 = ConvertFloat(out, DType::kFloat32);
    EXPECT_TRUE(f32.ok()) << f32.status();
    return f32.ok() ? *f32 : HostTensor();
  }

  std::string store_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<ModelClient> client_;
};

TEST_F(PrecisionTest, Bf16ServesWithinToleranceAndReportsTheMode) {
  Start({"--precision=bf16", "--model_precision=tiny_fp32=fp32"},
        {"tiny", "tiny_bn", "tiny_fp32", "tiny_manifest_fp32"});
  for (const char* name : {"tiny", "tiny_bn"}) {
    const std::string fixture = std::string(name) == "tiny" ? "tiny" : "tiny_bn";
    v1::ModelStatus st = Status(name);
    EXPECT_EQ(st.state(), v1::READY) << st.last_error();
    EXPECT_EQ(st.precision(), "bf16") << name;
    EXPECT_EQ(st.memory_format(), "channels_last") << name;
    const HostTensor expected = testing::FixtureNpy(fixture, "output.npy");
    const float diff = testing::MaxAbsDiff(Predict(name, fixture, DType::kFloat32), expected);
    EXPECT_LE(diff, Bf16Tolerance(expected)) << name;
    EXPECT_GT(diff, 0.0f) << name << ": bit-identical to float32, so bf16 did not run";
  }
  // --model_precision and the manifest's "precision" override --precision.
  for (const char* name : {"tiny_fp32", "tiny_manifest_fp32"}) {
    EXPECT_EQ(Status(name).precision(), "fp32") << name;
    EXPECT_LE(testing::MaxAbsDiff(Predict(name, "tiny", DType::kFloat32),
                                  testing::FixtureNpy("tiny", "output.npy")),
              1e-4)
        << name;
  }
}

// TorchScript (kept contiguous under auto: its code may assume the layout) and a
// pickled layer stack (channels-last under auto) in bf16.
TEST_F(PrecisionTest, TorchScriptAndLayerStacksServeBf16) {
  Start({"--precision=bf16"}, {"tiny"});
  testing::PutVersion(store_, "ts", 1, FixturesDir() + "/tiny_ts_script/model.pt", "model.pt", "");
  testing::PutVersion(store_, "seq", 1, FixturesDir() + "/pickled_seq/model.pth", "model.pth", "");
  const std::vector<std::pair<std::string, std::string>> cases = {{"ts", "tiny_ts_script"},
                                                                  {"seq", "pickled_seq"}};
  for (const auto& [name, fixture] : cases) {
    v1::LoadModelResponse lr;
    grpc::Status s = client_->LoadModel(name, 0, &lr);
    ASSERT_TRUE(s.ok()) << name << ": " << s.error_message();
    EXPECT_EQ(lr.status().precision(), "bf16") << name;
    EXPECT_EQ(lr.status().memory_format(), name == "ts" ? "contiguous" : "channels_last");
    const HostTensor expected = testing::FixtureNpy(fixture, "output.npy");
    const float diff = testing::MaxAbsDiff(Predict(name, fixture, DType::kFloat32), expected);
    EXPECT_LE(diff, Bf16Tolerance(expected)) << name;
    EXPECT_GT(diff, 0.0f) << name << ": bit-identical to float32, so bf16 did not run";
  }
}

TEST_F(PrecisionTest, WireDtypesAreConvertedAndAnsweredInKind) {
  Start({}, {"tiny"});
  EXPECT_EQ(Status("tiny").precision(), "fp32");
  const HostTensor expected = testing::FixtureNpy("tiny", "output.npy");
  DType answered = DType::kUnspecified;
  EXPECT_LE(testing::MaxAbsDiff(Predict("tiny", "tiny", DType::kFloat64, &answered), expected),
            1e-4);
  EXPECT_EQ(answered, DType::kFloat64);
  // float16 on the wire: the input loses precision on the way (tolerance as bf16's).
  EXPECT_LE(testing::MaxAbsDiff(Predict("tiny", "tiny", DType::kFloat16, &answered), expected),
            Bf16Tolerance(expected));
  EXPECT_EQ(answered, DType::kFloat16);
  EXPECT_LE(testing::MaxAbsDiff(Predict("tiny", "tiny", DType::kBFloat16, &answered), expected),
            Bf16Tolerance(expected));
  EXPECT_EQ(answered, DType::kBFloat16);
}

TEST_F(PrecisionTest, BothMemoryFormatsMatchPython) {
  for (const char* format : {"contiguous", "channels_last"}) {
    Start({absl::StrCat("--memory_format=", format)}, {"tiny", "tiny_bn"});
    for (const char* name : {"tiny", "tiny_bn"}) {
      EXPECT_EQ(Status(name).memory_format(), format);
      EXPECT_LE(testing::MaxAbsDiff(Predict(name, name, DType::kFloat32),
                                    testing::FixtureNpy(name, "output.npy")),
                1e-4)
          << name << " " << format;
    }
  }
}

TEST_F(PrecisionTest, Fp16OnCpuIsRefusedNamingTheMode) {
  // A version whose manifest asks for fp16: its load fails FAILED_PRECONDITION;
  // the other model serves.
  Start({}, {"tiny", "tiny_manifest_fp16"});
  v1::ModelStatus st = Status("tiny_manifest_fp16");
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_THAT(st.last_error(), HasSubstr("fp16"));
  EXPECT_THAT(st.last_error(), HasSubstr("FAILED_PRECONDITION"));
  EXPECT_EQ(Status("tiny").state(), v1::READY);
  // Server-wide or per model by flag: the server does not start, and says why.
  for (const char* flag : {"--precision=fp16", "--model_precision=tiny=FP16"}) {
    const std::string dir = testing::NewTempDir("precision_fp16");
    auto server = testing::ServerProcess::Start({"--store=" + dir, flag}, dir + "/server.log");
    EXPECT_FALSE(server.ok()) << flag;
    EXPECT_THAT(testing::ReadFile(dir + "/server.log"), HasSubstr("precision fp16 needs a CUDA"))
        << flag;
  }
}

TEST_F(PrecisionTest, UploadCarriesThePrecisionIntoTheManifest) {
  Start({}, {"tiny"});
  v1::UploadHeader header;
  header.set_model_name("up");
  header.set_format(v1::STATE_DICT);
  header.set_architecture(Arch("tiny"));
  header.set_precision("BF16");
  v1::UploadCheckpointResponse ur;
  grpc::Status s = client_->Upload(Fixture("tiny"), header, &ur);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(testing::ReadFile(store_ + "/up/1/manifest.json"),
              HasSubstr("\"precision\": \"bf16\""));
  v1::LoadModelResponse lr;
  ASSERT_TRUE(client_->LoadModel("up", 0, &lr).ok());
  EXPECT_EQ(lr.status().precision(), "bf16");
  header.set_precision("fp8");
  s = client_->Upload(Fixture("tiny"), header, &ur);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("fp8"));
}

}  // namespace
}  // namespace modelserver
