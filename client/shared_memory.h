#ifndef MODELSERVER_CLIENT_SHARED_MEMORY_H_
#define MODELSERVER_CLIENT_SHARED_MEMORY_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace modelserver {

// A POSIX shared memory object this process creates (shm_open with O_EXCL, sized
// with ftruncate) and maps read/write, for Triton's system shared memory
// extension: register its key with the server, write inputs into it, read
// outputs from it. The object is unlinked and unmapped on destruction.
// Not thread-safe; one owner.
//
//   ASSIGN_OR_RETURN(auto shm, SharedMemoryObject::Create("/bench-in-0", bytes));
//   std::memcpy(shm->data(), input.data(), bytes);
class SharedMemoryObject {
 public:
  // `key` as shm_open takes it ("/name"). ALREADY_EXISTS when an object of that
  // name exists; INTERNAL for other failures (with errno's text).
  static absl::StatusOr<std::unique_ptr<SharedMemoryObject>> Create(const std::string& key,
                                                                    size_t size);
  ~SharedMemoryObject();
  SharedMemoryObject(const SharedMemoryObject&) = delete;
  SharedMemoryObject& operator=(const SharedMemoryObject&) = delete;

  char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& key() const { return key_; }

 private:
  SharedMemoryObject(std::string key, char* data, size_t size)
      : key_(std::move(key)), data_(data), size_(size) {}

  const std::string key_;
  char* const data_;
  const size_t size_;
};

}  // namespace modelserver

#endif  // MODELSERVER_CLIENT_SHARED_MEMORY_H_
