#include "server/sandbox/sandbox_policy.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace modelserver {
namespace {

namespace fs = std::filesystem;

// Runs `body` in a forked child that first applies the policy; the child
// reports one line per attempt over a pipe ("name errno" or "name ok"), and the
// parent gets them as a map. The child never returns into the test.
std::map<std::string, std::string> InSandbox(
    const SandboxPolicy::Options& options,
    const std::function<void(const std::function<void(const std::string&, bool)>&)>& body) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    const int out = fds[1];
    auto say = [out](const std::string& line) {
      const std::string l = line + "\n";
      (void)!write(out, l.data(), l.size());
    };
    absl::StatusOr<SandboxPolicy::Report> r = SandboxPolicy::Apply(options);
    if (!r.ok()) {
      say("apply " + std::string(r.status().message()));
      _exit(1);
    }
    say("apply ok " + std::to_string(r->landlock_abi));
    // `done`: the attempt succeeded; otherwise errno says why it did not.
    body([&say](const std::string& name, bool done) {
      say(name + " " + (done ? std::string("ok") : std::string(std::strerror(errno))));
    });
    _exit(0);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;)
    text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  EXPECT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status) << ": " << text;
  std::map<std::string, std::string> out;
  size_t at = 0;
  for (size_t eol; (eol = text.find('\n', at)) != std::string::npos; at = eol + 1) {
    const std::string line = text.substr(at, eol - at);
    const size_t sp = line.find(' ');
    out[line.substr(0, sp)] = sp == std::string::npos ? "" : line.substr(sp + 1);
  }
  return out;
}

class SandboxPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("sandbox_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    secret_ = (dir_ / "secret.txt").string();
    std::ofstream(secret_) << "the server's secret\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  std::string secret_;
};

TEST_F(SandboxPolicyTest, NoFilesNoProgramsNoSocketsNoSignalsButThreadsAndPipesWork) {
  const std::string created = (dir_ / "created.txt").string();
  const std::string moved = (dir_ / "moved.txt").string();
  const pid_t parent = getpid();
  const auto got = InSandbox({}, [&](const auto& attempt) {
    int fd = open(secret_.c_str(), O_RDONLY);
    attempt("read_secret", fd >= 0);
    fd = open("/etc/hostname", O_RDONLY);
    attempt("read_etc", fd >= 0);
    fd = open(secret_.c_str(), O_WRONLY | O_TRUNC);
    attempt("overwrite", fd >= 0);
    fd = open(created.c_str(), O_WRONLY | O_CREAT, 0644);
    attempt("create", fd >= 0);
    attempt("unlink", unlink(secret_.c_str()) == 0);
    attempt("rename", rename(secret_.c_str(), moved.c_str()) == 0);
    attempt("mkdir", mkdir((dir_ / "d").c_str(), 0755) == 0);
    attempt("socket_inet", socket(AF_INET, SOCK_STREAM, 0) >= 0);
    attempt("socket_unix", socket(AF_UNIX, SOCK_STREAM, 0) >= 0);
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    char* const envp[] = {nullptr};
    attempt("execve", execve("/bin/true", argv, envp) == 0);
    const pid_t p = fork();
    if (p == 0) _exit(0);  // (only if the filter failed)
    attempt("fork", p > 0);
    attempt("kill_parent", kill(parent, 0) == 0);
    attempt("kill_self", kill(getpid(), 0) == 0);
    int sum = 0;
    std::thread t([&sum] {
      for (int i = 1; i <= 100; ++i) sum += i;
    });
    t.join();
    attempt("thread", sum == 5050);
    std::vector<char> big(64 << 20, 1);  // anonymous memory
    attempt("memory", big[12345] == 1);
  });
  ASSERT_EQ(got.count("apply"), 1u);
  ASSERT_EQ(got.at("apply").rfind("ok", 0), 0u) << got.at("apply");
  for (const char* denied :
       {"read_secret", "read_etc", "overwrite", "create", "unlink", "rename", "mkdir",
        "socket_inet", "socket_unix", "execve", "fork", "kill_parent"}) {
    ASSERT_EQ(got.count(denied), 1u) << denied;
    EXPECT_NE(got.at(denied), "ok") << denied << " succeeded inside the sandbox";
    // Refused with an error the code can handle, not a kill.
    EXPECT_TRUE(got.at(denied) == std::strerror(EPERM) || got.at(denied) == std::strerror(EACCES))
        << denied << ": " << got.at(denied);
  }
  for (const char* allowed : {"kill_self", "thread", "memory"}) {
    EXPECT_EQ(got.count(allowed) ? got.at(allowed) : "missing", "ok") << allowed;
  }
  // Nothing outside changed.
  std::ifstream in(secret_);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "the server's secret");
  EXPECT_FALSE(fs::exists(created));
  EXPECT_FALSE(fs::exists(moved));
  EXPECT_FALSE(fs::exists(dir_ / "d"));
}

// A compiled package's library is opened by the dynamic loader as
// /proc/self/fd/N of a memfd: that mode allows read-only opens, Landlock keeps
// every path of the filesystem closed, and ForbidOpen closes even the memfd.
TEST_F(SandboxPolicyTest, ReadOnlyOpenReachesAMemfdAndNoPathUntilForbidden) {
  if (SandboxPolicy::LandlockAbi() == 0) {
    SandboxPolicy::Options options;
    options.allow_read_only_open = true;
    const auto got = InSandbox(options, [](const auto&) {});
    ASSERT_EQ(got.count("apply"), 1u);
    EXPECT_NE(got.at("apply").find("no Landlock"), std::string::npos) << got.at("apply");
    GTEST_SKIP() << "this kernel has no Landlock: the mode is refused (checked above)";
  }
  const std::string created = (dir_ / "created.txt").string();
  SandboxPolicy::Options options;
  options.allow_read_only_open = true;
  const auto got = InSandbox(options, [&](const auto& attempt) {
    const int mem = memfd_create("library", MFD_CLOEXEC);
    (void)!write(mem, "ELF?", 4);
    const std::string via_proc = "/proc/self/fd/" + std::to_string(mem);
    int fd = open(via_proc.c_str(), O_RDONLY | O_CLOEXEC);
    char buf[4] = {};
    attempt("memfd_read", fd >= 0 && pread(fd, buf, 4, 0) == 4 && std::memcmp(buf, "ELF?", 4) == 0);
    if (fd >= 0) close(fd);
    fd = open(via_proc.c_str(), O_RDWR);
    attempt("memfd_write", fd >= 0);
    fd = open(secret_.c_str(), O_RDONLY);
    attempt("read_secret", fd >= 0);
    fd = open("/etc/hostname", O_RDONLY);
    attempt("read_etc", fd >= 0);
    fd = open("/proc/self/status", O_RDONLY);
    attempt("read_proc", fd >= 0);
    fd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
    attempt("read_dir", fd >= 0);
    fd = open(created.c_str(), O_WRONLY | O_CREAT, 0644);
    attempt("create", fd >= 0);
    fd = open(secret_.c_str(), O_RDONLY | O_TRUNC);
    attempt("truncate", fd >= 0);
    fd = open(secret_.c_str(), O_RDONLY | O_APPEND);
    attempt("append", fd >= 0);
    const absl::Status forbid = SandboxPolicy::ForbidOpen();
    attempt("forbid", forbid.ok());
    fd = open(via_proc.c_str(), O_RDONLY);
    attempt("memfd_after", fd >= 0);
    std::thread t([&] {
      const int f = open(via_proc.c_str(), O_RDONLY);
      attempt("memfd_after_thread", f >= 0);
    });
    t.join();
  });
  ASSERT_EQ(got.count("apply"), 1u);
  ASSERT_EQ(got.at("apply").rfind("ok", 0), 0u) << got.at("apply");
  EXPECT_EQ(got.count("memfd_read") ? got.at("memfd_read") : "missing", "ok");
  EXPECT_EQ(got.count("forbid") ? got.at("forbid") : "missing", "ok");
  for (const char* denied : {"memfd_write", "read_secret", "read_etc", "read_proc", "read_dir",
                             "create", "truncate", "append", "memfd_after", "memfd_after_thread"}) {
    ASSERT_EQ(got.count(denied), 1u) << denied;
    EXPECT_NE(got.at(denied), "ok") << denied << " succeeded inside the sandbox";
  }
  EXPECT_FALSE(fs::exists(created));
  std::ifstream in(secret_);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "the server's secret");
}

TEST_F(SandboxPolicyTest, LandlockIsUsedWhereTheKernelHasIt) {
  const int abi = SandboxPolicy::LandlockAbi();
  if (abi == 0) GTEST_SKIP() << "this kernel has no Landlock (or it is disabled): seccomp alone";
  const auto got = InSandbox({}, [](const auto& attempt) { attempt("nothing", true); });
  EXPECT_EQ(got.at("apply"), "ok " + std::to_string(abi));
}

TEST_F(SandboxPolicyTest, MemoryCapRefusesAllocationsPastIt) {
  if (std::getenv("MODELSERVER_SANITIZER") != nullptr) {
    GTEST_SKIP() << "under a sanitizer the process already maps terabytes of shadow memory, "
                    "so any RLIMIT_AS refuses everything (checked by the plain build)";
  }
  // The cap counts what the test process has mapped already (LibTorch, thread
  // stacks and malloc arenas of earlier tests): 1 GiB on top of that.
  uint64_t mapped_pages = 0;
  std::ifstream("/proc/self/statm") >> mapped_pages;
  SandboxPolicy::Options options;
  options.address_space_bytes =
      mapped_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) + (uint64_t{1} << 30);
  const auto got = InSandbox(options, [](const auto& attempt) {
    void* small = std::malloc(64 << 20);
    attempt("small", small != nullptr);
    void* huge = std::malloc(size_t{2} << 30);
    attempt("huge", huge != nullptr);
  });
  EXPECT_EQ(got.at("small"), "ok");
  EXPECT_NE(got.at("huge"), "ok");
}

TEST_F(SandboxPolicyTest, DescriptorCapAndNoCoreDumps) {
  SandboxPolicy::Options options;
  options.max_open_files = 8;
  const auto got = InSandbox(options, [](const auto& attempt) {
    int pipes = 0;
    for (int p[2]; pipes < 16 && pipe(p) == 0;) ++pipes;
    attempt("pipes_capped", pipes < 8);
    struct rlimit core {};
    getrlimit(RLIMIT_CORE, &core);
    attempt("no_core", core.rlim_max == 0);
  });
  EXPECT_EQ(got.at("pipes_capped"), "ok");
  EXPECT_EQ(got.at("no_core"), "ok");
}

}  // namespace
}  // namespace modelserver
