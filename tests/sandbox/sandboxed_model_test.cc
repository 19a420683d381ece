#include "server/sandbox/sandboxed_model.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "server/model/torchscript_model.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

SandboxedModel::Options Options(bool check = true) {
  SandboxedModel::Options o;
  o.worker_path = MODEL_WORKER_BIN;
  o.name = "m";
  o.check = check;
  o.threads = 0;  // LibTorch's default, as in process
  o.max_forward = absl::Seconds(30);
  return o;
}

std::string Fixture(const std::string& name, const std::string& file) {
  return testing::FixturesDir() + "/" + name + "/" + file;
}

// Outputs equal the in-process model's bit for bit, batch after batch, from
// more threads than the worker has channels (2); the worker is confined
// (Landlock here, seccomp always).
TEST(SandboxedModelTest, ServesWhatTheInProcessModelServes) {
  const std::string path = Fixture("tiny_ts_script", "model.pt");
  SandboxedModel::Options options = Options();
  options.channels = 2;
  auto sandboxed = SandboxedModel::Load(ReadFile(path), options);
  ASSERT_TRUE(sandboxed.ok()) << sandboxed.status();
  EXPECT_NE((*sandboxed)->sandbox_summary().find("seccomp filter loaded"), std::string::npos)
      << (*sandboxed)->sandbox_summary();
  // Confined while it had one thread: Landlock binds the intra-op threads it starts later.
  EXPECT_NE((*sandboxed)->sandbox_summary().find(", 1 thread when confined"), std::string::npos)
      << (*sandboxed)->sandbox_summary();
  auto local = TorchScriptModel::Load(path, "cpu");
  ASSERT_TRUE(local.ok()) << local.status();
  const HostTensor input = testing::FixtureNpy("tiny_ts_script", "input.npy");
  auto want = (*local)->Forward(input);
  ASSERT_TRUE(want.ok()) << want.status();
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto got = (*sandboxed)->Forward(input);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->shape, want->shape);
        EXPECT_EQ(got->data, want->data);  // bit for bit
      }
    });
  }
  for (auto& t : threads) t.join();
}

// Two channels run two passes at once: of two endless forwards started together,
// one passes its deadline and stops the worker, and the other, running beside it,
// is stopped with it (run one after the other, the second would instead find the
// worker restarting: "restarts in").
TEST(SandboxedModelTest, ChannelsRunPassesAtOnce) {
  SandboxedModel::Options options = Options();
  options.channels = 2;
  options.max_forward = absl::Seconds(3);
  auto m = SandboxedModel::Load(ReadFile(Fixture("ts_forever", "model.pt")), options);
  ASSERT_TRUE(m.ok()) << m.status();
  const HostTensor input = testing::FixtureNpy("tiny_ts_script", "input.npy");
  std::vector<absl::Status> got(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] { got[t] = (*m)->Forward(input).status(); });
  }
  for (auto& t : threads) t.join();
  // Both end when the first deadline stops the worker; the one whose own deadline
  // did not stop it says so (DEADLINE_EXCEEDED or UNAVAILABLE by which noticed first).
  int stopped_for_other = 0;
  for (const absl::Status& s : got) {
    EXPECT_TRUE(s.code() == absl::StatusCode::kDeadlineExceeded ||
                s.code() == absl::StatusCode::kUnavailable)
        << s;
    if (s.message().find("stopped for another batch") != std::string::npos) ++stopped_for_other;
  }
  EXPECT_EQ(stopped_for_other, 1) << got[0] << " / " << got[1];
}

// A forward that reads a server file (torch.from_file): in process (trusted) it
// returns the file's bytes to the caller; in the worker, even with the early
// checks off, the read is refused and nothing comes back.
TEST(SandboxedModelTest, AModelThatReadsAFileGetsNothing) {
  const std::string path = Fixture("ts_from_file", "model.pt");
  const HostTensor input = testing::FixtureNpy("tiny_ts_script", "input.npy");
  auto trusted = TorchScriptModel::Load(path, "cpu", /*trusted=*/true);
  ASSERT_TRUE(trusted.ok()) << trusted.status();
  auto leaked = (*trusted)->Forward(input);
  ASSERT_TRUE(leaked.ok()) << "the attack fixture no longer reads its file in process";
  const float first = reinterpret_cast<const float*>(leaked->data.data())[0];
  EXPECT_EQ(first, static_cast<float>('S'));  // "SECRET-..." as numbers

  auto sandboxed = SandboxedModel::Load(ReadFile(path), Options(/*check=*/false));
  ASSERT_TRUE(sandboxed.ok()) << sandboxed.status();
  auto got = (*sandboxed)->Forward(input);
  ASSERT_FALSE(got.ok()) << "the sandboxed model read the server's file";
  EXPECT_NE(got.status().code(), absl::StatusCode::kUnavailable)
      << got.status();  // it failed cleanly
  EXPECT_EQ(got.status().message().find("SECRET"), std::string::npos);
}

// __setstate__ that overwrites a server file while LibTorch loads the module: in
// the worker the load fails and the file is untouched.
TEST(SandboxedModelTest, ASetstateThatWritesAFileChangesNothing) {
  const std::string path = Fixture("ts_setstate", "model.pt");
  const std::string marker = Fixture("ts_setstate", "marker.bin");
  const std::string before = ReadFile(marker);
  auto sandboxed = SandboxedModel::Load(ReadFile(path), Options(/*check=*/false));
  EXPECT_FALSE(sandboxed.ok()) << "the sandboxed load wrote the file";
  EXPECT_EQ(sandboxed.status().code(), absl::StatusCode::kFailedPrecondition) << sandboxed.status();
  EXPECT_EQ(ReadFile(marker), before);
  EXPECT_EQ(before, std::string(16, '\0'));
}

// The same with each spelling of the method that LibTorch runs (make_fixtures
// kept the ones it saw run at load) and on a TorchScript class held as an
// attribute, the early checks off: the worker, not the text check, stops them.
TEST(SandboxedModelTest, EverySpelledSetstateChangesNothing) {
  std::ifstream list(Fixture("sandbox", "setstate_spellings.txt"));
  ASSERT_TRUE(list.good());
  std::vector<std::string> names = {"class"};
  for (std::string name; std::getline(list, name);) {
    if (!name.empty()) names.push_back(name);
  }
  ASSERT_GE(names.size(), 2u);
  for (const std::string& name : names) {
    const std::string file = name == "class" ? "class_setstate.pt" : "setstate_" + name + ".pt";
    const std::string marker = Fixture("sandbox", "marker_" + name + ".bin");
    const std::string before = ReadFile(marker);
    auto sandboxed =
        SandboxedModel::Load(ReadFile(Fixture("sandbox", file)), Options(/*check=*/false));
    EXPECT_FALSE(sandboxed.ok()) << name << ": the sandboxed load wrote the file";
    EXPECT_EQ(ReadFile(marker), before) << name;
    EXPECT_EQ(before, std::string(16, '\0')) << name;
  }
}

// A worker killed mid-flight answers UNAVAILABLE naming the signal; the next
// Forward starts a new worker and serves.
TEST(SandboxedModelTest, AKilledWorkerIsRestarted) {
  auto m = SandboxedModel::Load(ReadFile(Fixture("tiny_ts_script", "model.pt")), Options());
  ASSERT_TRUE(m.ok()) << m.status();
  const HostTensor input = testing::FixtureNpy("tiny_ts_script", "input.npy");
  ASSERT_TRUE((*m)->Forward(input).ok());
  const pid_t first = (*m)->worker_pid();
  ASSERT_GT(first, 0);
  ASSERT_EQ(kill(first, SIGKILL), 0);
  auto failed = (*m)->Forward(input);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(failed.status().message().find("signal 9"), std::string::npos) << failed.status();
  auto backing_off = (*m)->Forward(input);  // within the first backoff (0.1 s)
  EXPECT_EQ(backing_off.status().code(), absl::StatusCode::kUnavailable) << backing_off.status();
  EXPECT_NE(backing_off.status().message().find("restarts in"), std::string::npos);
  absl::SleepFor(absl::Milliseconds(250));
  auto again = (*m)->Forward(input);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE((*m)->worker_pid(), first);
}

// A worker started from a thread that then ends keeps running (PR_SET_PDEATHSIG
// is per thread: the server loads models on threads that come and go).
TEST(SandboxedModelTest, AWorkerOutlivesTheThreadThatLoadedIt) {
  absl::StatusOr<std::shared_ptr<SandboxedModel>> m;
  std::thread([&] {
    m = SandboxedModel::Load(ReadFile(Fixture("tiny_ts_script", "model.pt")), Options());
  }).join();
  ASSERT_TRUE(m.ok()) << m.status();
  absl::SleepFor(absl::Milliseconds(200));
  auto out = (*m)->Forward(testing::FixtureNpy("tiny_ts_script", "input.npy"));
  EXPECT_TRUE(out.ok()) << out.status();
}

// Repeated deaths: each is counted (on_restart), and max_deaths of them fail the
// model for good (on_failed once, FAILED_PRECONDITION from then on, no restart).
TEST(SandboxedModelTest, RepeatedDeathsFailTheModel) {
  SandboxedModel::Options options = Options();
  options.max_deaths = 2;
  std::vector<std::string> restarts, failures;
  options.on_restart = [&](const std::string& reason) { restarts.push_back(reason); };
  options.on_failed = [&](const std::string& reason) { failures.push_back(reason); };
  auto m = SandboxedModel::Load(ReadFile(Fixture("tiny_ts_script", "model.pt")), options);
  ASSERT_TRUE(m.ok()) << m.status();
  const HostTensor input = testing::FixtureNpy("tiny_ts_script", "input.npy");
  for (int death = 0; death < 2; ++death) {
    absl::StatusOr<HostTensor> out;
    for (int i = 0; i < 100; ++i) {  // past the backoff
      out = (*m)->Forward(input);
      if (out.ok()) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(kill((*m)->worker_pid(), SIGKILL), 0);
    EXPECT_EQ((*m)->Forward(input).status().code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(restarts, (std::vector<std::string>{"crash", "crash"}));
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].find("2 times"), std::string::npos) << failures[0];
  absl::SleepFor(absl::Seconds(1));
  auto after = (*m)->Forward(input);
  EXPECT_EQ(after.status().code(), absl::StatusCode::kFailedPrecondition) << after.status();
  EXPECT_EQ((*m)->worker_pid(), 0);
}

// A forward that never ends is stopped at max_forward: DEADLINE_EXCEEDED, the
// worker killed, and the next batch gets a new worker.
TEST(SandboxedModelTest, AForwardPastItsDeadlineIsKilled) {
  SandboxedModel::Options options = Options();
  options.max_forward = absl::Seconds(1);
  auto m = SandboxedModel::Load(ReadFile(Fixture("ts_forever", "model.pt")), options);
  ASSERT_TRUE(m.ok()) << m.status();
  const HostTensor input = testing::FixtureNpy("tiny_ts_script", "input.npy");
  const pid_t first = (*m)->worker_pid();
  const absl::Time start = absl::Now();
  auto stuck = (*m)->Forward(input);
  EXPECT_EQ(stuck.status().code(), absl::StatusCode::kDeadlineExceeded) << stuck.status();
  EXPECT_NE(stuck.status().message().find("--max_forward_seconds"), std::string::npos);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));  // bounded, not a timing assertion
  EXPECT_EQ((*m)->worker_pid(), 0);                   // killed and reaped
  EXPECT_NE(kill(first, 0), 0);                       // gone
  absl::SleepFor(absl::Milliseconds(250));            // the first restart's backoff
  auto again = (*m)->Forward(input);                  // a new worker, stopped again
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDeadlineExceeded) << again.status();
}

// A worker is as hostile as the file it runs: one that answers a forward with a
// 2 GiB output (a sparse memfd here, a stand-in worker written in Python that
// speaks the protocol's structs) is refused before the server copies a byte of it.
TEST(SandboxedModelTest, AnOversizedWorkerOutputIsRefusedBeforeItIsCopied) {
  const std::string script = ::testing::TempDir() + "/fake_worker_" + std::to_string(getpid());
  {
    std::ofstream out(script);
    out << R"(#!/usr/bin/python3
import os, socket, struct
REPLY = '<i1024s4xq256s16s16sQI4x' + 'II8qQ128s' * 32  # WorkerReply: 8000 bytes
assert struct.calcsize(REPLY) == 8000
s = socket.socket(fileno=3)
def reply(code=0, rank=0, shape=(), nbytes=0, fds=()):
    shape = list(shape) + [0] * (8 - len(shape))
    first = [1, rank, *shape, nbytes, b'output']  # dtype float32
    rest = [0, 0] + [0] * 8 + [0, b'']
    data = struct.pack(REPLY, code, b'fake', 0, b'fake', b'fp32', b'contiguous', nbytes,
                       1 if nbytes else 0, *first, *(rest * 31))
    socket.send_fds(s, [data], list(fds))
reply()                                       # hello
for _ in range(2):                            # the load, then one forward
    msg, fds, _, _ = socket.recv_fds(s, 4096, 1)
    for fd in fds:
        os.close(fd)
    if struct.unpack_from('<I', msg)[0] == 1:  # kLoad
        reply()
    else:                                     # kForward: float32 [1, 2^29] = 2 GiB
        fd = os.memfd_create('out')
        os.ftruncate(fd, 1 << 31)
        reply(rank=2, shape=(1, 1 << 29), nbytes=1 << 31, fds=[fd])
)";
  }
  ASSERT_EQ(chmod(script.c_str(), 0755), 0);
  SandboxedModel::Options options = Options();
  options.worker_path = script;
  auto m = SandboxedModel::Load("any bytes", options);
  ASSERT_TRUE(m.ok()) << m.status();
  auto out = (*m)->Forward(testing::FixtureNpy("tiny_ts_script", "input.npy"));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted) << out.status();
  EXPECT_NE(out.status().message().find("over the limit of 1073741824 bytes"), std::string::npos)
      << out.status();
  std::remove(script.c_str());
}

TEST(SandboxedModelTest, BadFilesAndInputsAreClearErrors) {
  auto not_zip = SandboxedModel::Load("this is not a TorchScript file", Options());
  ASSERT_FALSE(not_zip.ok());
  EXPECT_NE(not_zip.status().code(), absl::StatusCode::kUnavailable) << not_zip.status();
  auto m = SandboxedModel::Load(ReadFile(Fixture("tiny_ts_script", "model.pt")), Options());
  ASSERT_TRUE(m.ok()) << m.status();
  HostTensor scalar;
  scalar.dtype = DType::kFloat32;
  scalar.data.assign(4, '\0');
  EXPECT_EQ((*m)->Forward(scalar).status().code(), absl::StatusCode::kInvalidArgument);
  HostTensor wrong = testing::FixtureNpy("tiny_ts_script", "input.npy");
  wrong.shape = {1, 1, 2, 2};
  wrong.data.assign(16, '\0');
  auto rejected = (*m)->Forward(wrong);  // the module refuses a 1-channel input
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument) << rejected.status();
  EXPECT_TRUE((*m)->Forward(testing::FixtureNpy("tiny_ts_script", "input.npy")).ok());
}

}  // namespace
}  // namespace modelserver
