#include "server/sandbox/worker_protocol.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace modelserver {
namespace {

// A forward reply for one float32 output of `shape` whose memfd holds `bytes`.
WorkerReply ForwardReply(std::vector<int64_t> shape, uint64_t bytes) {
  WorkerReply r;
  r.num_outputs = 1;
  WorkerOutput& o = r.outputs[0];
  o.dtype = static_cast<uint32_t>(DType::kFloat32);
  o.rank = static_cast<uint32_t>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) o.shape[i] = shape[i];
  o.bytes = bytes;
  std::strcpy(o.name, "output");
  r.bytes = bytes;
  return r;
}

struct Memfd {
  explicit Memfd(const std::string& bytes) : fd(BytesToMemfd("test", bytes)) {}
  ~Memfd() { close(fd); }
  int fd;
};

HostTensor Floats(std::vector<int64_t> shape, char fill) {
  HostTensor t;
  t.dtype = DType::kFloat32;
  t.shape = std::move(shape);
  t.data.assign(static_cast<size_t>(t.NumElements()) * 4, fill);
  return t;
}

TEST(WorkerProtocolTest, AWellFormedOutputIsRead) {
  std::string payload(24, '\x01');
  Memfd m(payload);
  auto t = OutputsFromReply(ForwardReply({2, 3}, 24), m.fd);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 1u);
  EXPECT_EQ((*t)[0].name, "output");
  EXPECT_EQ((*t)[0].tensor.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ((*t)[0].tensor.data, payload);
}

// Several outputs go through the wire in order, by name, each with its bytes.
TEST(WorkerProtocolTest, SeveralOutputsRoundTrip) {
  std::vector<NamedTensor> sent = {{"output1", Floats({2, 3}, '\x01')},
                                   {"output2", Floats({2, 5, 1}, '\x02')},
                                   {"scores.0", Floats({2}, '\x03')}};
  sent[2].tensor.dtype = DType::kInt64;
  sent[2].tensor.data.assign(16, '\x03');
  WorkerReply r;
  ASSERT_TRUE(OutputsToReply(sent, &r).ok());
  EXPECT_EQ(r.num_outputs, 3u);
  EXPECT_EQ(r.bytes, 24u + 40u + 16u);
  std::string bytes;
  for (const NamedTensor& t : sent) bytes += t.tensor.data;
  Memfd m(bytes);
  auto got = OutputsFromReply(r, m.fd);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*got)[i].name, sent[i].name);
    EXPECT_EQ((*got)[i].tensor.dtype, sent[i].tensor.dtype);
    EXPECT_EQ((*got)[i].tensor.shape, sent[i].tensor.shape);
    EXPECT_EQ((*got)[i].tensor.data, sent[i].tensor.data);
  }
  // What does not fit the wire is refused on the worker's side.
  WorkerReply full;
  std::vector<NamedTensor> many(kMaxModelOutputs + 1, {"x", Floats({1}, 0)});
  EXPECT_EQ(OutputsToReply(many, &full).code(), absl::StatusCode::kInternal);
  std::vector<NamedTensor> long_name = {
      {std::string(kMaxOutputNameBytes + 1, 'n'), Floats({1}, 0)}};
  EXPECT_EQ(OutputsToReply(long_name, &full).code(), absl::StatusCode::kInternal);
}

// A worker is as hostile as its file: every lie about the output is refused
// before the server copies anything.
TEST(WorkerProtocolTest, MalformedOutputsAreRefused) {
  Memfd m(std::string(24, '\0'));
  auto code = [&](const WorkerReply& r) { return OutputsFromReply(r, m.fd).status().code(); };
  EXPECT_EQ(OutputsFromReply(ForwardReply({2, 3}, 24), -1).status().code(),
            absl::StatusCode::kInternal);  // no memfd
  WorkerReply none = ForwardReply({2, 3}, 24);
  none.num_outputs = 0;
  EXPECT_EQ(code(none), absl::StatusCode::kInternal);
  WorkerReply many = ForwardReply({2, 3}, 24);
  many.num_outputs = kMaxModelOutputs + 1;
  EXPECT_EQ(code(many), absl::StatusCode::kInternal);
  WorkerReply deep = ForwardReply({1}, 4);
  deep.outputs[0].rank = kWorkerMaxRank + 1;
  EXPECT_EQ(code(deep), absl::StatusCode::kInternal);
  WorkerReply dtype = ForwardReply({2, 3}, 24);
  dtype.outputs[0].dtype = 1000;
  EXPECT_EQ(code(dtype), absl::StatusCode::kInternal);
  WorkerReply unnamed = ForwardReply({2, 3}, 24);
  unnamed.outputs[0].name[0] = '\0';
  EXPECT_EQ(code(unnamed), absl::StatusCode::kInternal);
  WorkerReply unterminated = ForwardReply({2, 3}, 24);
  std::memset(unterminated.outputs[0].name, 'a', sizeof(unterminated.outputs[0].name));
  EXPECT_EQ(code(unterminated), absl::StatusCode::kInternal);
  WorkerReply twice = ForwardReply({1, 3}, 12);
  twice.num_outputs = 2;
  twice.outputs[1] = twice.outputs[0];
  twice.bytes = 24;
  EXPECT_EQ(code(twice), absl::StatusCode::kInternal);  // two outputs named "output"
  std::strcpy(twice.outputs[1].name, "other");
  EXPECT_TRUE(OutputsFromReply(twice, m.fd).ok());  // the same, named apart, is fine
  twice.bytes = 12;
  EXPECT_EQ(code(twice), absl::StatusCode::kInternal);  // a total other than the outputs'
  EXPECT_EQ(code(ForwardReply({2, 4}, 24)), absl::StatusCode::kInternal);  // bytes vs shape
  EXPECT_EQ(code(ForwardReply({2, 4}, 32)), absl::StatusCode::kInternal);  // memfd size
  EXPECT_EQ(code(ForwardReply({-2, 3}, 24)), absl::StatusCode::kInternal);
  const int64_t huge = int64_t{1} << 29;  // 2^29 x 2 floats = 4 GiB
  EXPECT_EQ(code(ForwardReply({huge, 2}, uint64_t(huge) * 8)),
            absl::StatusCode::kResourceExhausted);
  // Two outputs each under the cap, together over it.
  WorkerReply pair = ForwardReply({int64_t{1} << 27, 2}, uint64_t{1} << 30);
  pair.num_outputs = 2;
  pair.outputs[1] = pair.outputs[0];
  std::strcpy(pair.outputs[1].name, "output1");
  pair.bytes = uint64_t{1} << 31;
  EXPECT_EQ(code(pair), absl::StatusCode::kResourceExhausted);
}

TEST(WorkerProtocolTest, ASavedFileOverItsCapIsRefusedBeforeItIsRead) {
  Memfd m(std::string(100, 'x'));
  WorkerReply r;
  r.bytes = 100;
  auto fine = FileFromReply(r, m.fd, 100);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->size(), 100u);
  auto big = FileFromReply(r, m.fd, 99);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  r.bytes = 101;
  EXPECT_EQ(FileFromReply(r, m.fd, 1000).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(FileFromReply(r, -1, 1000).status().code(), absl::StatusCode::kInternal);
}

TEST(WorkerProtocolTest, ReplyStatusIsBoundedAndKnown) {
  WorkerReply r;
  EXPECT_TRUE(StatusFromReply(r).ok());
  r.code = 5;
  std::memset(r.message, 'a', sizeof(r.message));  // no NUL
  absl::Status s = StatusFromReply(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message().size(), sizeof(r.message));
  r.code = 1234;
  EXPECT_EQ(StatusFromReply(r).code(), absl::StatusCode::kUnknown);
  r.code = -3;
  EXPECT_EQ(StatusFromReply(r).code(), absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace modelserver
