#include "server/sandbox/worker_protocol.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace modelserver {

absl::Status SendMessage(int socket, const void* message, size_t size, int fd) {
  iovec iov{const_cast<void*>(message), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  while (true) {
    const ssize_t n = sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(size)) return absl::OkStatus();
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return absl::UnavailableError("the worker's socket is closed");
    }
    return absl::InternalError(absl::StrCat("sendmsg: ", std::strerror(errno)));
  }
}

absl::Status ReceiveMessage(int socket, void* message, size_t size, int* fd,
                            absl::Duration timeout) {
  *fd = -1;
  const absl::Time deadline =
      timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
  while (true) {
    pollfd p{socket, POLLIN, 0};
    const int wait_ms = deadline == absl::InfiniteFuture()
                            ? -1
                            : static_cast<int>(std::max<int64_t>(
                                  0, absl::ToInt64Milliseconds(deadline - absl::Now())));
    const int ready = poll(&p, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    if (ready == 0) return absl::DeadlineExceededError("no answer in time");
    break;
  }
  iovec iov{message, size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int))) {
      std::memcpy(fd, CMSG_DATA(c), sizeof(int));
    }
  }
  if (n == 0) return absl::UnavailableError("the peer closed its end");
  if (n < 0) return absl::InternalError(absl::StrCat("recvmsg: ", std::strerror(errno)));
  if (static_cast<size_t>(n) != size || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
    return absl::InternalError(
        absl::StrCat("a message of ", n, " bytes, expected ", size, " (or truncated)"));
  }
  return absl::OkStatus();
}

absl::Status StatusFromReply(const WorkerReply& reply) {
  if (reply.code == 0) return absl::OkStatus();
  const size_t n = strnlen(reply.message, sizeof(reply.message));
  const auto code =
      reply.code > 0 && reply.code <= static_cast<int32_t>(absl::StatusCode::kUnauthenticated)
          ? static_cast<absl::StatusCode>(reply.code)
          : absl::StatusCode::kUnknown;
  return absl::Status(code, std::string(reply.message, n));
}

absl::StatusOr<std::vector<NamedTensor>> OutputsFromReply(const WorkerReply& reply, int fd) {
  if (fd < 0 || reply.num_outputs == 0 || reply.num_outputs > kMaxModelOutputs) {
    return absl::InternalError("a malformed worker reply");
  }
  std::vector<NamedTensor> outputs(reply.num_outputs);
  std::set<std::string> names;
  uint64_t total = 0;  // at most 32 x 2^30: no overflow
  for (size_t i = 0; i < outputs.size(); ++i) {
    const WorkerOutput& o = reply.outputs[i];
    const size_t length = strnlen(o.name, sizeof(o.name));
    if (length == 0 || length == sizeof(o.name) || o.rank > kWorkerMaxRank ||
        !names.insert(std::string(o.name, length)).second) {
      return absl::InternalError("a malformed worker reply");
    }
    NamedTensor& t = outputs[i];
    t.name.assign(o.name, length);
    t.tensor.dtype = static_cast<DType>(o.dtype);
    t.tensor.shape.assign(o.shape, o.shape + o.rank);
    if (o.dtype > 255 || DTypeSize(t.tensor.dtype) == 0 ||
        !CheckTensorBytes(t.tensor.dtype, t.tensor.shape, static_cast<size_t>(o.bytes)).ok()) {
      return absl::InternalError("the worker's output bytes do not fit its shape");
    }
    if (o.bytes > kWorkerMaxOutputBytes || total + o.bytes > kWorkerMaxOutputBytes) {
      return absl::ResourceExhaustedError(absl::StrCat("the output would take ", total + o.bytes,
                                                       " bytes or more, over the limit of ",
                                                       kWorkerMaxOutputBytes, " bytes"));
    }
    total += o.bytes;
  }
  if (total != reply.bytes) return absl::InternalError("a malformed worker reply");
  std::string all;
  if (absl::Status s = MemfdToBytes(fd, total, &all); !s.ok()) {
    return absl::InternalError(absl::StrCat("the worker's output: ", s.message()));
  }
  if (outputs.size() == 1) {
    outputs[0].tensor.data = std::move(all);
    return outputs;
  }
  size_t at = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const size_t n = static_cast<size_t>(reply.outputs[i].bytes);
    outputs[i].tensor.data = all.substr(at, n);
    at += n;
  }
  return outputs;
}

absl::Status OutputsToReply(const std::vector<NamedTensor>& outputs, WorkerReply* reply) {
  if (outputs.empty() || outputs.size() > kMaxModelOutputs) {
    return absl::InternalError(absl::StrCat(outputs.size(), " outputs do not fit the wire"));
  }
  reply->num_outputs = static_cast<uint32_t>(outputs.size());
  reply->bytes = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const NamedTensor& t = outputs[i];
    WorkerOutput& o = reply->outputs[i];
    if (t.tensor.shape.size() > static_cast<size_t>(kWorkerMaxRank) || t.name.empty() ||
        t.name.size() > kMaxOutputNameBytes) {
      return absl::InternalError(absl::StrCat("output \"", t.name.substr(0, 40), "\" ",
                                              ShapeString(t.tensor.shape),
                                              " does not fit the wire"));
    }
    o.dtype = static_cast<uint32_t>(t.tensor.dtype);
    o.rank = static_cast<uint32_t>(t.tensor.shape.size());
    for (size_t d = 0; d < t.tensor.shape.size(); ++d) o.shape[d] = t.tensor.shape[d];
    o.bytes = t.tensor.data.size();
    std::memcpy(o.name, t.name.data(), t.name.size());
    o.name[t.name.size()] = '\0';
    reply->bytes += o.bytes;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileFromReply(const WorkerReply& reply, int fd, uint64_t max_bytes) {
  if (fd < 0) return absl::InternalError("the worker sent no file");
  if (reply.bytes > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the saved file would take ", reply.bytes, " bytes, over the limit of ",
                     max_bytes, " bytes (twice the loaded file, plus 64 MiB)"));
  }
  std::string bytes;
  if (absl::Status s = MemfdToBytes(fd, reply.bytes, &bytes); !s.ok()) {
    return absl::InternalError(absl::StrCat("the worker's saved file: ", s.message()));
  }
  return bytes;
}

int BytesToMemfd(const char* name, const std::string& bytes, bool read_only) {
  return BytesToMemfd(name, std::vector<absl::string_view>{bytes}, read_only);
}

int BytesToMemfd(const char* name, const std::vector<absl::string_view>& parts, bool read_only) {
  const int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  size_t at = 0;
  for (absl::string_view part : parts) {
    for (size_t done = 0; done < part.size();) {
      const ssize_t n =
          pwrite(fd, part.data() + done, part.size() - done, static_cast<off_t>(at + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int e = errno;
        close(fd);
        errno = e;
        return -1;
      }
      done += static_cast<size_t>(n);
    }
    at += part.size();
  }
  // The reader sizes what it reads by the object: it may not shrink or grow.
  (void)fcntl(fd, F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL | (read_only ? F_SEAL_WRITE : 0));
  return fd;
}

absl::Status MemfdToBytes(int fd, uint64_t expected, std::string* bytes) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != expected) {
    return absl::InvalidArgumentError(absl::StrCat("the tensor's memory holds ", st.st_size,
                                                   " bytes, the message says ", expected));
  }
  bytes->resize(expected);
  for (uint64_t done = 0; done < expected;) {
    const ssize_t n = pread(fd, bytes->data() + done, expected - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("reading the tensor's memory: ", n < 0 ? std::strerror(errno) : "short"));
    }
    done += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace modelserver
