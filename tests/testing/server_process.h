#ifndef MODELSERVER_TESTS_TESTING_SERVER_PROCESS_H_
#define MODELSERVER_TESTS_TESTING_SERVER_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace modelserver::testing {

// The real model-server binary, started on a free loopback port (it binds port 0
// and reports the port through --port_file). Killed on destruction.
class ServerProcess {
 public:
  // Starts the server with `args` plus --listen/--port_file, and waits until it
  // listens. Its stderr goes to `log_path`.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::vector<std::string>& args,
                                                              const std::string& log_path);
  ~ServerProcess();

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

  // Sends `signal` and waits up to `timeout` for the exit; returns the exit code
  // (or 128 + signal number when killed by a signal).
  absl::StatusOr<int> Stop(int signal, std::chrono::seconds timeout);
  // The server's log so far.
  std::string Log() const;

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
};

// Path of the model-server / model-client binaries and the fixture directory
// (set by CMake through environment variables).
std::string ServerBinary();
std::string ClientBinary();
std::string FixturesDir();
// The source tree (for the Python helper scripts).
std::string SourceDir();
// A fresh empty directory under the build tree (same file system as the fixtures,
// so files can be hard-linked).
std::string NewTempDir(const std::string& name);
// Publishes `file` as <store>/<model>/<version>/<file_name>, hard-linked if
// possible; with `manifest_json` non-empty also writes manifest.json.
void PutVersion(const std::string& store, const std::string& model, int version,
                const std::string& file, const std::string& file_name,
                const std::string& manifest_json);
std::string ReadFile(const std::string& path);
// Runs a command line, returns its exit code and its stdout+stderr.
int RunCommand(const std::string& command, std::string* output);

}  // namespace modelserver::testing

#endif  // MODELSERVER_TESTS_TESTING_SERVER_PROCESS_H_
