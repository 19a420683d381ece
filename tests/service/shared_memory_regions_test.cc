#include "server/service/shared_memory_regions.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

namespace modelserver {
namespace {

// A POSIX shared memory object of `size` bytes holding 0, 1, 2, ... (mod 256),
// removed with the test.
class ShmObject {
 public:
  explicit ShmObject(size_t size)
      : key_("/regions-test-" + std::to_string(getpid()) + "-" + std::to_string(next_++)) {
    fd_ = shm_open(key_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    EXPECT_GE(fd_, 0);
    std::string bytes(size, '\0');
    for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i % 256);
    EXPECT_EQ(pwrite(fd_, bytes.data(), size, 0), static_cast<ssize_t>(size));
  }
  ~ShmObject() {
    close(fd_);
    shm_unlink(key_.c_str());
  }
  const std::string& key() const { return key_; }
  int fd() const { return fd_; }

 private:
  static inline int next_ = 0;
  std::string key_;
  int fd_ = -1;
};

TEST(SharedMemoryRegionsTest, ReadsAndWritesInsideTheRegionOnly) {
  ShmObject obj(8192);
  SharedMemoryRegions regions({4, 1 << 20});
  ASSERT_TRUE(regions.Register("r", obj.key(), 1000, 4096).ok());
  absl::StatusOr<std::string> got = regions.Read("r", 10, 4, 1 << 20);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, std::string({static_cast<char>(1010 % 256), static_cast<char>(1011 % 256),
                               static_cast<char>(1012 % 256), static_cast<char>(1013 % 256)}));
  EXPECT_EQ(regions.Read("r", 4093, 4, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Read("r", UINT64_MAX - 1, 4, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Read("r", 0, 4096, 100).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(regions.Read("x", 0, 1, 100).status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(regions.Write("r", 96, 4, "abcd").ok());
  char back[4];
  ASSERT_EQ(pread(obj.fd(), back, 4, 1096), 4);
  EXPECT_EQ(std::string(back, 4), "abcd");
  EXPECT_EQ(regions.Write("r", 96, 3, "abcd").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Write("r", 4094, 4, "ab").code(), absl::StatusCode::kInvalidArgument);
}

TEST(SharedMemoryRegionsTest, RegistrationBounds) {
  ShmObject obj(4096);
  SharedMemoryRegions regions({2, 6000});
  EXPECT_EQ(regions.Register("r", obj.key(), 1, 4096).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Register("r", obj.key(), 2, UINT64_MAX - 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Register("r", "/a/b", 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Register("r", "/..", 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Register("", obj.key(), 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(regions.Register("r", "/regions-test-none", 0, 1).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(regions.Register("a", obj.key(), 0, 4096).ok());
  EXPECT_EQ(regions.Register("a", obj.key(), 0, 1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(regions.Register("b", obj.key(), 0, 4096).code(),
            absl::StatusCode::kResourceExhausted);  // bytes
  ASSERT_TRUE(regions.Register("b", obj.key(), 0, 1).ok());
  EXPECT_EQ(regions.Register("c", obj.key(), 0, 1).code(),
            absl::StatusCode::kResourceExhausted);  // count
  regions.Unregister("a");
  EXPECT_TRUE(regions.Register("c", obj.key(), 0, 4096).ok());  // bytes given back
  regions.Unregister("");
  EXPECT_EQ(regions.size(), 0);
  EXPECT_TRUE(regions.Status("").value().empty());
  EXPECT_EQ(regions.Status("c").status().code(), absl::StatusCode::kNotFound);
}

TEST(SharedMemoryRegionsTest, ShrunkObjectIsAnErrorNotACrash) {
  ShmObject obj(4096);
  SharedMemoryRegions regions({4, 1 << 20});
  ASSERT_TRUE(regions.Register("r", obj.key(), 0, 4096).ok());
  ASSERT_EQ(ftruncate(obj.fd(), 100), 0);
  absl::StatusOr<std::string> got = regions.Read("r", 0, 4096, 1 << 20);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(got.status().message().find("shrunk"), std::string::npos) << got.status();
  EXPECT_EQ(regions.Write("r", 0, 4096, std::string(200, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  struct stat st {};
  ASSERT_EQ(fstat(obj.fd(), &st), 0);
  EXPECT_EQ(st.st_size, 100);  // not grown back by the refused write
}

TEST(SharedMemoryRegionsTest, UnregisterWhileReading) {
  ShmObject obj(1 << 16);
  SharedMemoryRegions regions({4, 1 << 20});
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    while (!stop.load()) {
      absl::StatusOr<std::string> got = regions.Read("r", 0, 1 << 16, 1 << 20);
      if (got.ok()) {
        EXPECT_EQ((*got)[300], static_cast<char>(300 % 256));
        reads.fetch_add(1);
      } else {
        EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
      }
    }
  });
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(regions.Register("r", obj.key(), 0, 1 << 16).ok());
    regions.Unregister("r");
  }
  ASSERT_TRUE(regions.Register("r", obj.key(), 0, 1 << 16).ok());
  while (reads.load() == 0) std::this_thread::yield();
  stop.store(true);
  reader.join();
  EXPECT_GT(reads.load(), 0);
}

}  // namespace
}  // namespace modelserver
