// model-client: predict, list, status against a model-server.
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/model_client.h"
#include "client/npy.h"

ABSL_FLAG(std::string, target, "localhost:50051", "server address host:port");
ABSL_FLAG(std::string, model, "", "model name (predict)");
ABSL_FLAG(int64_t, version, 0, "model version; 0 = the serving version");
ABSL_FLAG(std::string, input, "", "predict: input tensor as a .npy file");
ABSL_FLAG(std::string, shape, "1,3,224,224",
          "predict: random float32 input of this shape when "
          "--input is not given");
ABSL_FLAG(int, seed, 0, "predict: seed of the random input");
ABSL_FLAG(int, top_k, 5, "predict: classes to print per sample (0 = none)");
ABSL_FLAG(std::string, output, "", "predict: write the output tensor to this .npy file");
ABSL_FLAG(int, timeout_ms, 60000, "deadline of each call");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "largest message sent or received");

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;

int Fail(const std::string& what, const grpc::Status& s) {
  std::fprintf(stderr, "%s failed: %s: %s\n", what.c_str(),
               absl::StrCat("code ", s.error_code()).c_str(), s.error_message().c_str());
  return 1;
}

void PrintStatus(const v1::ModelStatus& m) {
  std::printf("%-24s %-8s serving=%lld store=[%s] format=%s arch=%s device=%s%s%s\n",
              m.model_name().c_str(), v1::ModelState_Name(m.state()).c_str(),
              static_cast<long long>(m.serving_version()),
              absl::StrJoin(m.store_versions(), ",").c_str(),
              v1::CheckpointFormat_Name(m.format()).c_str(), m.architecture().c_str(),
              m.device().c_str(), m.last_error().empty() ? "" : " error=", m.last_error().c_str());
}

int Predict(const ModelClient& client) {
  HostTensor input;
  if (!absl::GetFlag(FLAGS_input).empty()) {
    auto t = ReadNpy(absl::GetFlag(FLAGS_input));
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 2;
    }
    input = *std::move(t);
  } else {
    input.dtype = DType::kFloat32;
    for (absl::string_view d : absl::StrSplit(absl::GetFlag(FLAGS_shape), ',')) {
      int64_t v = 0;
      if (!absl::SimpleAtoi(d, &v) || v < 0) {
        std::fprintf(stderr, "--shape %s is not a list of sizes\n",
                     absl::GetFlag(FLAGS_shape).c_str());
        return 2;
      }
      input.shape.push_back(v);
    }
    std::mt19937 rng(absl::GetFlag(FLAGS_seed));
    std::normal_distribution<float> normal;
    std::vector<float> values(static_cast<size_t>(input.NumElements()));
    for (float& v : values) v = normal(rng);
    input.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }
  v1::PredictResponse response;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status s =
      client.Predict(MakePredictRequest(absl::GetFlag(FLAGS_model), input,
                                        absl::GetFlag(FLAGS_top_k), absl::GetFlag(FLAGS_version)),
                     &response);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) return Fail("predict", s);
  std::printf(
      "model %s version %lld: output %s in %.1f ms\n", response.model_name().c_str(),
      static_cast<long long>(response.version()),
      ShapeString({response.output().shape().begin(), response.output().shape().end()}).c_str(),
      ms);
  for (int i = 0; i < response.top_k_size(); ++i) {
    std::printf("sample %d:", i);
    for (const auto& c : response.top_k(i).classes()) {
      std::printf(" %lld (%.4f)", static_cast<long long>(c.index()), c.probability());
    }
    std::printf("\n");
  }
  if (!absl::GetFlag(FLAGS_output).empty()) {
    if (auto w = WriteNpy(absl::GetFlag(FLAGS_output), OutputTensor(response)); !w.ok()) {
      std::fprintf(stderr, "%s\n", w.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

int Run(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Talks to a model-server.\n"
      "  model-client [--target host:port] predict --model NAME [--input x.npy | --shape "
      "1,3,224,224]"
      " [--top_k 5] [--output y.npy]\n"
      "  model-client [--target host:port] list\n"
      "  model-client [--target host:port] status NAME");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  ModelClient::Options options;
  options.target = absl::GetFlag(FLAGS_target);
  options.timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  auto client = ModelClient::Create(options);
  const std::string command = args[1];
  if (command == "predict") {
    if (absl::GetFlag(FLAGS_model).empty()) {
      std::fprintf(stderr, "predict needs --model NAME\n");
      return 2;
    }
    return Predict(*client);
  }
  if (command == "list") {
    v1::ListModelsResponse response;
    grpc::Status s = client->ListModels(&response);
    if (!s.ok()) return Fail("list", s);
    for (const auto& m : response.models()) PrintStatus(m);
    return 0;
  }
  if (command == "status") {
    const std::string name = args.size() > 2 ? args[2] : absl::GetFlag(FLAGS_model);
    v1::ModelStatus response;
    grpc::Status s = client->GetModelStatus(name, &response);
    if (!s.ok()) return Fail("status", s);
    PrintStatus(response);
    return 0;
  }
  std::fprintf(stderr, "unknown command '%s'\n%s\n", command.c_str(),
               absl::ProgramUsageMessage().data());
  return 2;
}

}  // namespace
}  // namespace modelserver

int main(int argc, char** argv) { return modelserver::Run(argc, argv); }
