#ifndef MODELSERVER_TESTS_TESTING_TEST_STORE_H_
#define MODELSERVER_TESTS_TESTING_TEST_STORE_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "client/model_client.h"
#include "common/host_tensor.h"
#include "tests/testing/server_process.h"

namespace modelserver::testing {

// A manifest.json for a state-dict fixture file (sha256 and size computed).
std::string StateDictManifest(const std::string& file, const std::string& architecture);

// Polls GetModelStatus until every model is READY or FAILED; false on timeout.
bool WaitForModels(const ModelClient& client, const std::vector<std::string>& names,
                   std::chrono::seconds timeout);

// A running server and a client of it.
struct Serving {
  std::unique_ptr<ServerProcess> server;
  std::unique_ptr<ModelClient> client;
};
// Starts the server with `args` (log at `log_path`) and waits up to 120 s until
// each of `models` is READY or FAILED; an error carrying the log otherwise.
absl::StatusOr<Serving> StartServing(const std::vector<std::string>& args,
                                     const std::string& log_path,
                                     const std::vector<std::string>& models);

// <fixtures>/<name>/<file> read as a .npy tensor (fails the test when unreadable).
HostTensor FixtureNpy(const std::string& name, const std::string& file);

// Largest |a - b| over two float32 tensors of equal shape; +inf when the shapes differ.
float MaxAbsDiff(const HostTensor& a, const HostTensor& b);

}  // namespace modelserver::testing

#endif  // MODELSERVER_TESTS_TESTING_TEST_STORE_H_
