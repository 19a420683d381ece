#include "server/service/shared_memory_regions.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/wire_size.h"

namespace modelserver {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

bool NameChars(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

// The object's size now, or an error naming the region.
absl::StatusOr<uint64_t> ObjectSize(int fd, const std::string& name) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    return absl::InternalError(
        absl::StrCat("shared memory region '", name, "': fstat: ", std::strerror(errno)));
  }
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

struct SharedMemoryRegions::Open {
  Region region;
  int fd = -1;
  ~Open() {
    if (fd >= 0) close(fd);
  }
};

absl::Status SharedMemoryRegions::ValidateName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || !NameChars(name)) {
    return absl::InvalidArgumentError(absl::StrCat("shared memory region name '",
                                                   absl::CHexEscape(name.substr(0, 160)),
                                                   "' must be 1-128 characters of [A-Za-z0-9._-]"));
  }
  return absl::OkStatus();
}

absl::Status SharedMemoryRegions::ValidateKey(absl::string_view key) {
  const absl::string_view rest = key.empty() ? key : key.substr(1);
  if (key.empty() || key[0] != '/' || rest.empty() || rest.size() > 250 || !NameChars(rest) ||
      rest == "." || rest == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory key '", absl::CHexEscape(key.substr(0, 260)),
                     "' must be '/' followed by 1-250 characters of [A-Za-z0-9._-] "
                     "(a POSIX shared memory object, as shm_open names it)"));
  }
  return absl::OkStatus();
}

absl::Status SharedMemoryRegions::Register(const std::string& name, const std::string& key,
                                           uint64_t offset, uint64_t byte_size) {
  RETURN_IF_ERROR(ValidateName(name));
  RETURN_IF_ERROR(ValidateKey(key));
  if (byte_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory region '", name, "' has byte_size 0"));
  }
  ASSIGN_OR_RETURN(const size_t end, CheckedAdd(offset, byte_size, kMax,
                                                absl::StrCat("shared memory region '", name,
                                                             "' offset + byte_size")));
  {
    absl::MutexLock lock(&mu_);
    if (regions_.count(name) != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("shared memory region '", name, "' is registered already"));
    }
  }
  // glibc's shm_open opens /dev/shm/<key> with O_NOFOLLOW | O_CLOEXEC.
  auto open = std::make_shared<Open>();
  open->fd = shm_open(key.c_str(), O_RDWR, 0);
  if (open->fd < 0) {
    const int e = errno;
    const std::string why =
        absl::StrCat("cannot open shared memory key '", key, "' read/write: ", std::strerror(e));
    if (e == ENOENT) return absl::NotFoundError(why);
    if (e == EACCES || e == EPERM) return absl::PermissionDeniedError(why);
    return absl::InvalidArgumentError(why);
  }
  struct stat st {};
  if (fstat(open->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory key '", key, "' is not a shared memory object"));
  }
  if (static_cast<uint64_t>(st.st_size) < end) {
    return absl::InvalidArgumentError(absl::StrCat("shared memory region '", name, "' [", offset,
                                                   ", ", end, ") is past the end of '", key,
                                                   "', which holds ", st.st_size, " bytes"));
  }
  open->region = {name, key, offset, byte_size};
  absl::MutexLock lock(&mu_);
  if (regions_.count(name) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("shared memory region '", name, "' is registered already"));
  }
  if (static_cast<int>(regions_.size()) >= options_.max_regions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("shared memory region '", name, "' would be one more than the ",
                     options_.max_regions, " allowed (--max_shared_memory_regions)"));
  }
  if (byte_size > options_.max_total_bytes - total_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("shared memory region '", name, "' of ", byte_size, " bytes would pass the ",
                     options_.max_total_bytes, " bytes allowed in all (--max_shared_memory_bytes; ",
                     total_bytes_, " registered)"));
  }
  total_bytes_ += byte_size;
  regions_.emplace(name, std::move(open));
  return absl::OkStatus();
}

void SharedMemoryRegions::Unregister(const std::string& name) {
  std::map<std::string, std::shared_ptr<const Open>> closing;  // closed outside mu_
  absl::MutexLock lock(&mu_);
  if (name.empty()) {
    closing.swap(regions_);
    total_bytes_ = 0;
    return;
  }
  auto it = regions_.find(name);
  if (it == regions_.end()) return;
  total_bytes_ -= it->second->region.byte_size;
  closing.insert(regions_.extract(it));
}

absl::StatusOr<std::vector<SharedMemoryRegions::Region>> SharedMemoryRegions::Status(
    const std::string& name) const {
  absl::MutexLock lock(&mu_);
  std::vector<Region> out;
  for (const auto& [n, open] : regions_) {
    if (name.empty() || n == name) out.push_back(open->region);
  }
  if (!name.empty() && out.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "shared memory region '", absl::CHexEscape(name.substr(0, 160)), "' is not registered"));
  }
  return out;
}

int SharedMemoryRegions::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(regions_.size());
}

absl::StatusOr<std::shared_ptr<const SharedMemoryRegions::Open>> SharedMemoryRegions::Find(
    const std::string& name, uint64_t offset, uint64_t byte_size) const {
  std::shared_ptr<const Open> open;
  {
    absl::MutexLock lock(&mu_);
    auto it = regions_.find(name);
    if (it != regions_.end()) open = it->second;
  }
  if (open == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "shared memory region '", absl::CHexEscape(name.substr(0, 160)), "' is not registered"));
  }
  RETURN_IF_ERROR(
      CheckSpan(offset, byte_size, open->region.byte_size,
                absl::StrCat("shared memory region '", name, "' (", byte_size, " bytes at offset ",
                             offset, " of ", open->region.byte_size, ")")));
  return open;
}

absl::StatusOr<std::string> SharedMemoryRegions::Read(const std::string& name, uint64_t offset,
                                                      uint64_t byte_size,
                                                      uint64_t max_bytes) const {
  if (byte_size > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("shared memory input of ", byte_size,
                                                     " bytes is over the limit of ", max_bytes,
                                                     " (--max_message_bytes)"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Open> open, Find(name, offset, byte_size));
  std::string out(byte_size, '\0');
  const uint64_t start = open->region.offset + offset;  // within the object (Register)
  for (uint64_t done = 0; done < byte_size;) {
    const ssize_t n =
        pread(open->fd, out.data() + done, byte_size - done, static_cast<off_t>(start + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shared memory region '", name, "' ended after ", done, " of ", byte_size,
          " bytes: its object '", open->region.key, "' was shrunk after registration"));
    }
    done += static_cast<uint64_t>(n);
  }
  return out;
}

absl::Status SharedMemoryRegions::Write(const std::string& name, uint64_t offset,
                                        uint64_t byte_size, absl::string_view data) const {
  ASSIGN_OR_RETURN(std::shared_ptr<const Open> open, Find(name, offset, byte_size));
  if (data.size() > byte_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("the output is ", data.size(), " bytes, more than the ", byte_size,
                     " bytes given in shared memory region '", name, "'"));
  }
  const uint64_t start = open->region.offset + offset;
  // Never grow an object the client shrank: the write must land inside it.
  ASSIGN_OR_RETURN(const uint64_t size, ObjectSize(open->fd, name));
  if (size < start + data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory region '", name, "': its object '", open->region.key,
                     "' was shrunk to ", size, " bytes after registration"));
  }
  for (size_t done = 0; done < data.size();) {
    const ssize_t n =
        pwrite(open->fd, data.data() + done, data.size() - done, static_cast<off_t>(start + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(
          absl::StrCat("writing shared memory region '", name, "': ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace modelserver
