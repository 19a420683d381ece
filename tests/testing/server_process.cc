#include "tests/testing/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

namespace modelserver::testing {
namespace fs = std::filesystem;

namespace {
std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}
}  // namespace

std::string ServerBinary() { return Env("MODELSERVER_SERVER_BIN", "model-server"); }
std::string ClientBinary() { return Env("MODELSERVER_CLIENT_BIN", "model-client"); }
std::string FixturesDir() { return Env("MODELSERVER_FIXTURES", "fixtures"); }
std::string SourceDir() { return Env("MODELSERVER_SOURCE_DIR", "."); }

namespace {
// Removes the directories NewTempDir made when every test of the binary passed (a
// failed run keeps them to look at). Stores of copied VGG checkpoints add up to GBs
// per suite, and CI runs the suites three times on one disk.
class TempDirCleanup : public ::testing::Environment {
 public:
  void Add(const std::string& dir) {
    std::lock_guard<std::mutex> lock(mu_);
    dirs_.push_back(dir);
  }
  void TearDown() override {
    if (!::testing::UnitTest::GetInstance()->Passed()) return;
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& dir : dirs_) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
    dirs_.clear();
  }

 private:
  std::mutex mu_;
  std::vector<std::string> dirs_;
};

TempDirCleanup* Cleanup() {
  // Owned by gtest once registered.
  static TempDirCleanup* cleanup = [] {
    auto* c = new TempDirCleanup;
    ::testing::AddGlobalTestEnvironment(c);
    return c;
  }();
  return cleanup;
}
}  // namespace

std::string NewTempDir(const std::string& name) {
  const fs::path base = fs::path(Env("MODELSERVER_TEST_TMP", "/tmp"));
  fs::create_directories(base);
  std::string templ = (base / (name + "-XXXXXX")).string();
  if (mkdtemp(templ.data()) == nullptr) std::abort();
  Cleanup()->Add(templ);
  return templ;
}

void PutVersion(const std::string& store, const std::string& model, int version,
                const std::string& file, const std::string& file_name,
                const std::string& manifest_json) {
  const fs::path dir = fs::path(store) / model / std::to_string(version);
  fs::create_directories(dir);
  std::error_code ec;
  fs::create_hard_link(file, dir / file_name, ec);
  if (ec) fs::copy_file(file, dir / file_name, fs::copy_options::overwrite_existing);
  if (!manifest_json.empty()) std::ofstream(dir / "manifest.json") << manifest_json;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int RunCommand(const std::string& command, std::string* output) {
  output->clear();
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& args, const std::string& log_path) {
  const std::string port_file = log_path + ".port";
  std::remove(port_file.c_str());
  const std::string metrics_port_file = log_path + ".metrics_port";
  std::remove(metrics_port_file.c_str());
  // Free ports for gRPC and metrics; a short drain so stopping is quick (tests
  // that time the drain pass their own --shutdown_grace_seconds, which wins).
  std::vector<std::string> argv = {ServerBinary(),
                                   "--listen=127.0.0.1:0",
                                   "--port_file=" + port_file,
                                   "--metrics_listen=127.0.0.1:0",
                                   "--metrics_port_file=" + metrics_port_file,
                                   "--http_listen=127.0.0.1:0",
                                   "--shutdown_grace_seconds=1"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  p->log_path_ = log_path;
  p->pid_ = fork();
  if (p->pid_ < 0) return absl::InternalError("fork failed");
  if (p->pid_ == 0) {
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
      p->pid_ = -1;
      return absl::InternalError(absl::StrCat("model-server exited early: ", ReadFile(log_path)));
    }
    const std::string text = ReadFile(port_file);
    int port = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) && port > 0) {
      p->port_ = port;
      int metrics_port = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadFile(metrics_port_file)),
                           &metrics_port)) {
        p->metrics_port_ = metrics_port;
      }
      return p;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("model-server did not listen: ", ReadFile(log_path)));
}

absl::StatusOr<int> ServerProcess::Stop(int signal, std::chrono::seconds timeout) {
  if (pid_ < 0) return absl::FailedPreconditionError("not running");
  kill(pid_, signal);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError("server did not exit in time");
}

std::string ServerProcess::Log() const { return ReadFile(log_path_); }

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

}  // namespace modelserver::testing
