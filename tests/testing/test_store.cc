#include "tests/testing/test_store.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/npy.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "tests/testing/server_process.h"

namespace modelserver::testing {

std::string StateDictManifest(const std::string& file, const std::string& architecture) {
  const std::string sha = *Sha256File(file);
  return absl::StrCat(R"({"format": "STATE_DICT", "architecture": ")", architecture,
                      R"(", "file": "model_weights.pth", "sha256": ")", sha, R"(", "size_bytes": )",
                      std::filesystem::file_size(file),
                      R"(, "created_at": "2026-11-28T00:00:00Z", "source": "test"})");
}

bool WaitForModels(const ModelClient& client, const std::vector<std::string>& names,
                   std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    for (const std::string& n : names) {
      modelserving::v1::ModelStatus s;
      if (!client.GetModelStatus(n, &s).ok() ||
          (s.state() != modelserving::v1::READY && s.state() != modelserving::v1::FAILED)) {
        all = false;
        break;
      }
    }
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

absl::StatusOr<Serving> StartServing(const std::vector<std::string>& args,
                                     const std::string& log_path,
                                     const std::vector<std::string>& models) {
  Serving s;
  ASSIGN_OR_RETURN(s.server, ServerProcess::Start(args, log_path));
  s.client = ModelClient::Create(s.server->target());
  if (!WaitForModels(*s.client, models, std::chrono::seconds(120))) {
    return absl::DeadlineExceededError("models did not load in 120 s: " + s.server->Log());
  }
  return s;
}

HostTensor FixtureNpy(const std::string& name, const std::string& file) {
  auto t = ReadNpy(FixturesDir() + "/" + name + "/" + file);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : HostTensor();
}

float MaxAbsDiff(const HostTensor& a, const HostTensor& b) {
  if (a.shape != b.shape || a.dtype != DType::kFloat32 || b.dtype != DType::kFloat32 ||
      a.data.size() != b.data.size()) {
    return std::numeric_limits<float>::infinity();
  }
  const auto* x = reinterpret_cast<const float*>(a.data.data());
  const auto* y = reinterpret_cast<const float*>(b.data.data());
  float m = 0;
  for (size_t i = 0; i < a.data.size() / 4; ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

}  // namespace modelserver::testing
