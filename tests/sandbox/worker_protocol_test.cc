#include "server/sandbox/worker_protocol.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace modelserver {
namespace {

// A forward reply for a float32 tensor of `shape` whose memfd holds `payload`.
WorkerReply ForwardReply(std::vector<int64_t> shape, uint64_t bytes) {
  WorkerReply r;
  r.dtype = static_cast<uint32_t>(DType::kFloat32);
  r.rank = static_cast<uint32_t>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) r.shape[i] = shape[i];
  r.bytes = bytes;
  return r;
}

struct Memfd {
  explicit Memfd(const std::string& bytes) : fd(BytesToMemfd("test", bytes)) {}
  ~Memfd() { close(fd); }
  int fd;
};

TEST(WorkerProtocolTest, AWellFormedOutputIsRead) {
  std::string payload(24, '\x01');
  Memfd m(payload);
  auto t = TensorFromReply(ForwardReply({2, 3}, 24), m.fd);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t->data, payload);
}

// A worker is as hostile as its file: every lie about the output is refused
// before the server copies anything.
TEST(WorkerProtocolTest, MalformedOutputsAreRefused) {
  Memfd m(std::string(24, '\0'));
  EXPECT_EQ(TensorFromReply(ForwardReply({2, 3}, 24), -1).status().code(),
            absl::StatusCode::kInternal);  // no memfd
  EXPECT_EQ(TensorFromReply(ForwardReply({}, 0), m.fd).status().code(),
            absl::StatusCode::kInternal);  // rank 0
  WorkerReply deep = ForwardReply({1}, 4);
  deep.rank = kWorkerMaxRank + 1;
  EXPECT_EQ(TensorFromReply(deep, m.fd).status().code(), absl::StatusCode::kInternal);
  WorkerReply dtype = ForwardReply({2, 3}, 24);
  dtype.dtype = 1000;
  EXPECT_EQ(TensorFromReply(dtype, m.fd).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(TensorFromReply(ForwardReply({2, 4}, 24), m.fd).status().code(),
            absl::StatusCode::kInternal);  // bytes do not fit the shape
  EXPECT_EQ(TensorFromReply(ForwardReply({2, 4}, 32), m.fd).status().code(),
            absl::StatusCode::kInternal);  // the memfd holds another size
  EXPECT_EQ(TensorFromReply(ForwardReply({-2, 3}, 24), m.fd).status().code(),
            absl::StatusCode::kInternal);
  const int64_t huge = int64_t{1} << 29;  // 2^29 x 2 floats = 4 GiB
  EXPECT_EQ(TensorFromReply(ForwardReply({huge, 2}, uint64_t(huge) * 8), m.fd).status().code(),
            absl::StatusCode::kResourceExhausted);
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
