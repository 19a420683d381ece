#ifndef MODELSERVER_SERVER_SANDBOX_WORKER_PROTOCOL_H_
#define MODELSERVER_SERVER_SANDBOX_WORKER_PROTOCOL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/host_tensor.h"

namespace modelserver {

// The wire between the server and a model worker process (server/sandbox):
// fixed-size plain structs over a SOCK_SEQPACKET socketpair (one message per
// struct, so message boundaries are the kernel's), tensor and file bytes in
// memfds passed alongside with SCM_RIGHTS. The worker inherits its end as
// descriptor kWorkerFd and nothing else.
//
//   server                                 worker
//   WorkerRequest{kLoad} + memfd(file)  ->  load (after SandboxPolicy::Apply)
//                                       <-  WorkerReply{code, message}
//   WorkerRequest{kForward} + memfd(in) ->  forward
//                                       <-  WorkerReply{code, outputs[]} + memfd(outputs)
//   WorkerRequest{kSave, format}        ->  the model written as `format`
//                                       <-  WorkerReply{code, bytes} + memfd(file)
//
// Every size in a message is checked by its reader against the memfd it comes
// with (fstat): neither side trusts the other's numbers.
// Channel c (0 <= c < the worker's --channels) is descriptor kWorkerFd + c.
constexpr int kWorkerFd = 3;
constexpr int kWorkerMaxChannels = 16;
// The largest output the server copies out of a worker (the in-process bound of
// ToHostTensor): a worker is as hostile as the file it runs.
constexpr uint64_t kWorkerMaxOutputBytes = uint64_t{1} << 30;
constexpr int kWorkerMaxRank = 8;

struct WorkerRequest {
  enum Kind : uint32_t { kLoad = 1, kForward = 2, kSave = 3 };
  uint32_t kind = 0;
  // kLoad: run the file's checks (CheckTorchScriptArchive, the operator
  // allowlist) in the worker too; 0 = trusted.
  uint32_t check = 1;
  // kLoad: > 0 when the memfd holds an architecture template of this many bytes
  // followed by the state dict it serves; 0: one TorchScript file.
  uint64_t template_bytes = 0;
  // kLoad: the numerics (Precision, MemoryLayout as integers), whether to check
  // the state dict's zip CRCs, the device ("cpu", "cuda:0"; NUL-terminated).
  uint32_t precision = 0;
  uint32_t memory_layout = 0;
  uint32_t verify_crc = 1;
  char device[32] = "cpu";
  // kSave: the ModelFormat to write.
  uint32_t format = 0;
  // kLoad of a compiled package: batches past this many samples run in pieces of
  // at most this many (0: whole batches).
  int64_t batch_piece = 0;
  // kForward: the input tensor, its bytes in the memfd.
  uint32_t dtype = 0;
  uint32_t rank = 0;
  int64_t shape[kWorkerMaxRank] = {};
  uint64_t bytes = 0;
};

// One output of a kForward reply; its bytes follow the previous outputs' in the
// reply's memfd.
struct WorkerOutput {
  uint32_t dtype = 0;
  uint32_t rank = 0;
  int64_t shape[kWorkerMaxRank] = {};
  uint64_t bytes = 0;
  char name[kMaxOutputNameBytes + 1] = {};  // NUL-terminated
};

struct WorkerReply {
  int32_t code = 0;  // absl::StatusCode
  char message[1024] = {};
  // kLoad: the loaded model's parameter bytes and architecture name. kForward:
  // the outputs, their bytes one after another in the memfd that comes with the
  // reply (`bytes` in all). kSave: the file's size, its bytes in the memfd.
  int64_t parameter_bytes = 0;
  char architecture[256] = {};
  char precision[16] = {};      // ModelInfo::precision ("bf16")
  char memory_format[16] = {};  // ModelInfo::memory_format ("channels_last")
  uint64_t bytes = 0;
  uint32_t num_outputs = 0;
  WorkerOutput outputs[kMaxModelOutputs];
};
// The layout a worker written in another language packs (the tests' fake
// workers: Python's struct '<i1024s4xq256s16s16sQI4x' + 32 x 'II8qQ128s').
static_assert(sizeof(WorkerOutput) == 208, "WorkerOutput's layout");
static_assert(sizeof(WorkerReply) == 8000, "WorkerReply's layout");

// The outputs a worker's kForward reply describes, their bytes read from `fd`
// (the memfd that came with the reply; -1 when none), in order, by name. A
// worker is as hostile as the file it runs, so its numbers are checked like a
// client's: INTERNAL for a malformed reply (no memfd, no outputs or more than
// kMaxModelOutputs, a name empty, unterminated or given twice, a rank over
// kWorkerMaxRank, an unknown dtype, bytes that do not fit a shape, a total other
// than `bytes`, a memfd of another size); RESOURCE_EXHAUSTED when the outputs
// together pass kWorkerMaxOutputBytes, before anything is copied. The reply's
// own status is the caller's (StatusFromReply).
absl::StatusOr<std::vector<NamedTensor>> OutputsFromReply(const WorkerReply& reply, int fd);
// Describes `outputs` in `reply` (the caller writes their bytes, in order, to
// the memfd it sends): INTERNAL when they do not fit the wire (too many, a rank
// or name too long).
absl::Status OutputsToReply(const std::vector<NamedTensor>& outputs, WorkerReply* reply);
// The file of a kSave reply, read from `fd`: INTERNAL without a memfd or for
// one of another size than the reply says; RESOURCE_EXHAUSTED over `max_bytes`,
// before anything is copied.
absl::StatusOr<std::string> FileFromReply(const WorkerReply& reply, int fd, uint64_t max_bytes);
// The status a reply carries (its code and message, the message bounded by its
// field; an unknown code is UNKNOWN).
absl::Status StatusFromReply(const WorkerReply& reply);

// Sends one struct, with `fd` (>= 0) attached. INTERNAL / UNAVAILABLE (the peer
// is gone) on failure.
absl::Status SendMessage(int socket, const void* message, size_t size, int fd = -1);
// Receives one struct of exactly `size` bytes, and the descriptor attached to it
// into *fd (-1 when none; the caller owns it). Waits at most `timeout`
// (absl::InfiniteDuration() = no limit): DEADLINE_EXCEEDED then; UNAVAILABLE
// when the peer closed its end; INTERNAL for a message of another size.
absl::Status ReceiveMessage(int socket, void* message, size_t size, int* fd,
                            absl::Duration timeout);

// A memfd holding `bytes` (sealed against shrinking and growing; with
// `read_only` also against writes, so a worker it is given cannot change it), or
// -1 with errno.
int BytesToMemfd(const char* name, const std::string& bytes, bool read_only = false);
// The same with `parts` one after another (a forward reply's outputs: no copy
// into one string first).
int BytesToMemfd(const char* name, const std::vector<absl::string_view>& parts,
                 bool read_only = false);
// The bytes of memfd `fd`: exactly `expected` of them, or INVALID_ARGUMENT when
// the object holds another size (or cannot be read).
absl::Status MemfdToBytes(int fd, uint64_t expected, std::string* bytes);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SANDBOX_WORKER_PROTOCOL_H_
