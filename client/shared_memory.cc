#include "client/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace modelserver {

absl::StatusOr<std::unique_ptr<SharedMemoryObject>> SharedMemoryObject::Create(
    const std::string& key, size_t size) {
  const int fd = shm_open(key.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    const std::string why =
        absl::StrCat("cannot create shared memory object ", key, ": ", std::strerror(errno));
    return errno == EEXIST ? absl::AlreadyExistsError(why) : absl::InternalError(why);
  }
  void* p = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(size)) == 0) {
    p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  const int e = errno;
  close(fd);  // the mapping keeps the object
  if (p == MAP_FAILED) {
    shm_unlink(key.c_str());
    return absl::InternalError(
        absl::StrCat("cannot size or map shared memory object ", key, ": ", std::strerror(e)));
  }
  return std::unique_ptr<SharedMemoryObject>(
      new SharedMemoryObject(key, static_cast<char*>(p), size));
}

SharedMemoryObject::~SharedMemoryObject() {
  munmap(data_, size_);
  shm_unlink(key_.c_str());
}

}  // namespace modelserver
