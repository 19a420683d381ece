#ifndef MODELSERVER_SERVER_SANDBOX_SANDBOXED_MODEL_H_
#define MODELSERVER_SERVER_SANDBOX_SANDBOXED_MODEL_H_

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/checkpoint/exported_program.h"
#include "server/model/model.h"
#include "server/model/precision.h"

namespace modelserver {

// A TorchScript model (or an AOTInductor package) that runs in a model-worker process
// (worker_main.cc) confined by SandboxPolicy: to the server it is just a Model. Forward sends the
// batch in a memfd over the worker's socket and takes the output back the same
// way; the file's bytes are handed over once, after the worker is confined.
//
// The worker's environment holds only the numeric libraries' settings of the
// server's (OPENBLAS_*, OMP_*, MKL_*, ...), so that it computes what the server
// would.
//
// Faults stay in the worker: a forward past `max_forward` kills it
// (DEADLINE_EXCEEDED); a worker that dies (a signal) answers UNAVAILABLE naming
// the model and the signal; one that runs out of its memory cap answers
// RESOURCE_EXHAUSTED and is stopped (its state may be what grew). Each time the
// next Forward starts a new worker and loads the file again, after a backoff
// (0.1 s, doubling to 10 s, UNAVAILABLE meanwhile); `max_deaths` deaths within
// `death_window` make the model fail every later Forward with FAILED_PRECONDITION
// (the registry then marks the version FAILED through `on_failed`). One worker
// process per model version, with `channels` connections: that many batches run
// in it at once, as the batch workers would in process.
//
//   ASSIGN_OR_RETURN(auto m, SandboxedModel::Load(bytes, {.worker_path = "model-worker"}));
//   ASSIGN_OR_RETURN(HostTensor out, m->Forward(batch));
//
// Thread-safe.
class SandboxedModel : public Model {
 public:
  struct Options {
    std::string worker_path;         // the model-worker binary
    std::string name = "the model";  // for messages ("model 'x' version 3")
    // > 0: `bytes` is an architecture template of this many bytes followed by the
    // state dict it serves (format STATE_DICT, from_template).
    uint64_t template_bytes = 0;
    // `bytes` is an AOTInductor package (format AOTI_PACKAGE): the worker opens its
    // library (worker_main.cc's --compiled).
    bool compiled = false;
    // A compiled package's input shapes (from the program it was compiled from):
    // ValidateInput checks them, WarmupShape is `warmup_shape`, the worker runs
    // batches past BatchPiece(input_dims) in pieces. Empty: any [N, ...].
    std::vector<exported::InputDim> input_dims;
    std::vector<int64_t> warmup_shape;
    std::string device = "cpu";
    Precision precision = Precision::kFp32;
    MemoryLayout memory_layout = MemoryLayout::kAuto;
    bool verify_crc = true;  // of the state dict's zip records
    bool check = true;       // the early checks in the worker too (false: trusted)
    int threads = 0;         // the worker's intra-op threads (0: LibTorch's default)
    // Forward passes the worker runs at once (one channel and thread each; the
    // server's batch workers); they share `threads` as the batch workers do in
    // process. At most kWorkerMaxChannels.
    int channels = 1;
    // The worker's quantized engine (SetQuantizedEngine; "": LibTorch's default).
    std::string quantized_engine;
    uint64_t address_space_bytes = 0;  // the worker's RLIMIT_AS (0: none)
    uint64_t data_bytes = 0;           // the worker's RLIMIT_DATA: its memory cap (0: none)
    absl::Duration max_forward = absl::Seconds(60);
    absl::Duration max_load = absl::Seconds(120);
    int max_deaths = 5;  // in death_window: the model fails
    absl::Duration death_window = absl::Minutes(10);
    // Called once (on a batch thread) when the model fails for good, with the reason.
    std::function<void(const std::string&)> on_failed;
    // Called with "crash", "deadline" or "memory" each time a worker is stopped.
    std::function<void(const std::string&)> on_restart;
  };

  // Starts a worker and loads the TorchScript file `bytes` in it. The load's
  // error (FAILED_PRECONDITION, DATA_LOSS, ...) as the worker reports it;
  // UNAVAILABLE when the worker cannot start or dies loading.
  static absl::StatusOr<std::shared_ptr<SandboxedModel>> Load(std::string bytes, Options options);
  ~SandboxedModel() override;

  const ModelInfo& info() const override { return info_; }
  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override;
  bool IsUnbatched(const std::vector<int64_t>&) const override { return false; }
  // From the last successful forward pass (-1 before one).
  int OutputRank() const override { return output_rank_.load(); }
  std::vector<int64_t> WarmupShape() const override { return options_.warmup_shape; }
  // TORCHSCRIPT of a TorchScript model, AOTI_PACKAGE of a package: the file as it
  // was given. A template model: written by the worker (STATE_DICT or
  // TORCHSCRIPT). Other formats: UNIMPLEMENTED.
  absl::Status Save(ModelFormat format, const std::string& path) const override;
  absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const override;
  absl::StatusOr<std::vector<NamedTensor>> ForwardAll(const HostTensor& batch) const override;
  std::vector<std::string> OutputNames() const override { return output_names_.Get(); }

  // What the last worker reported of its confinement ("Landlock ABI 7 ...").
  std::string sandbox_summary() const ABSL_LOCKS_EXCLUDED(mu_);
  // The running worker's pid (0 when none); for tests.
  pid_t worker_pid() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  SandboxedModel(std::string bytes, Options options);
  // Starts a worker and loads the file in it.
  absl::Status StartLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Kills the worker (its process group) and reaps it; the reason it ended.
  std::string StopLocked(bool kill) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a worker was stopped for `reason`: the backoff, the death count, the
  // failure; calls the callbacks.
  void RecordStopLocked(const std::string& reason, const std::string& what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A worker ready for a request (started after the backoff), or why not.
  absl::Status EnsureWorkerLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // One connection to the worker; closed when the last batch using it lets go.
  struct Channel {
    explicit Channel(int f) : fd(f) {}
    ~Channel() { close(fd); }
    Channel(const Channel&) = delete;
    Channel& operator=(const Channel&) = delete;
    const int fd;
  };
  // A channel held by one request, of the worker started as `generation`.
  struct Lease {
    std::shared_ptr<Channel> channel;
    size_t index = 0;
    uint64_t generation = 0;
  };
  // Waits for a free channel of a running worker (starting one when needed).
  absl::StatusOr<Lease> Acquire() const ABSL_LOCKS_EXCLUDED(mu_);
  // The request on `lease` is answered: its channel is free.
  void Release(const Lease& lease) const ABSL_LOCKS_EXCLUDED(mu_);
  // The request on `lease` failed for `reason`: stops that worker (once, if it is
  // still the running one) and counts it. How it ended.
  std::string Fail(const Lease& lease, const std::string& reason) const ABSL_LOCKS_EXCLUDED(mu_);

  // The file as given, in a memfd sealed read-only (not in this process's heap),
  // handed to every worker started; constant after construction.
  const uint64_t file_size_;
  const int file_;
  const Options options_;
  ModelInfo info_;  // constant after Load

  mutable std::atomic<int> output_rank_{-1};
  mutable OutputNamesRecord output_names_;

  mutable absl::Mutex mu_;
  mutable pid_t pid_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::vector<std::shared_ptr<Channel>> channels_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<bool> busy_ ABSL_GUARDED_BY(mu_);
  mutable uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // of the running worker
  mutable absl::CondVar free_;                            // a channel was released
  mutable std::string summary_ ABSL_GUARDED_BY(mu_);
  mutable std::string loaded_architecture_ ABSL_GUARDED_BY(mu_);
  mutable int64_t loaded_parameter_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::string loaded_precision_ ABSL_GUARDED_BY(mu_);
  mutable std::string loaded_memory_format_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<absl::Time> deaths_ ABSL_GUARDED_BY(mu_);
  mutable absl::Time next_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  mutable absl::Duration backoff_ ABSL_GUARDED_BY(mu_) = absl::Milliseconds(100);
  mutable absl::Status failed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SANDBOX_SANDBOXED_MODEL_H_
