#include "server/sandbox/sandboxed_model.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/sandbox/worker_protocol.h"

extern char** environ;

namespace modelserver {
namespace {

// Closes a received descriptor (-1: none) when the scope ends.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

// Runs `spawn` on one thread that lives as long as the process. A worker's
// PR_SET_PDEATHSIG fires when the *thread* that started it ends, and models are
// loaded on threads that come and go (startup loads, upload checks): started
// from those, workers would be killed with them.
int OnSpawnerThread(const std::function<int()>& spawn) {
  struct Spawner {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::packaged_task<int()>> tasks;
  };
  static Spawner* spawner = [] {
    auto* s = new Spawner;  // never destroyed: the thread outlives main's locals
    std::thread([s] {
      while (true) {
        std::packaged_task<int()> task;
        {
          std::unique_lock<std::mutex> lock(s->mu);
          s->cv.wait(lock, [s] { return !s->tasks.empty(); });
          task = std::move(s->tasks.front());
          s->tasks.pop_front();
        }
        task();
      }
    }).detach();
    return s;
  }();
  std::packaged_task<int()> task(spawn);
  std::future<int> result = task.get_future();
  {
    std::lock_guard<std::mutex> lock(spawner->mu);
    spawner->tasks.push_back(std::move(task));
  }
  spawner->cv.notify_one();
  return result.get();
}

std::string Describe(int status) {
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)),
                        ")");
  }
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  return "ended";
}

}  // namespace

SandboxedModel::SandboxedModel(std::string bytes, Options options)
    : file_size_(bytes.size()),
      file_(BytesToMemfd("model", bytes, /*read_only=*/true)),
      options_(std::move(options)) {
  info_.from_template = options_.template_bytes > 0;
  info_.format = options_.compiled     ? ModelFormat::kAotiPackage
                 : info_.from_template ? ModelFormat::kStateDict
                                       : ModelFormat::kTorchScript;
  info_.device = options_.device;
}

SandboxedModel::~SandboxedModel() {
  {
    absl::MutexLock lock(&mu_);
    (void)StopLocked(/*kill=*/true);
  }
  if (file_ >= 0) close(file_);
}

absl::StatusOr<std::shared_ptr<SandboxedModel>> SandboxedModel::Load(std::string bytes,
                                                                     Options options) {
  std::shared_ptr<SandboxedModel> model(new SandboxedModel(std::move(bytes), std::move(options)));
  if (model->file_ < 0) return absl::InternalError(absl::StrCat("memfd: ", std::strerror(errno)));
  if (model->options_.template_bytes >= model->file_size_) {
    return absl::InvalidArgumentError("the template's size is past the bytes given");
  }
  absl::MutexLock lock(&model->mu_);
  RETURN_IF_ERROR(model->StartLocked());
  model->info_.architecture = model->loaded_architecture_;
  model->info_.parameter_bytes = model->loaded_parameter_bytes_;
  model->info_.precision = model->loaded_precision_;
  model->info_.memory_format = model->loaded_memory_format_;
  return model;
}

absl::Status SandboxedModel::StartLocked() const {
  const int channels = std::clamp(options_.channels, 1, kWorkerMaxChannels);
  std::vector<std::shared_ptr<Channel>> ours;
  std::vector<int> theirs;
  auto close_theirs = [&theirs] {
    for (int fd : theirs) close(fd);
  };
  for (int c = 0; c < channels; ++c) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      close_theirs();
      return absl::UnavailableError(absl::StrCat("socketpair: ", std::strerror(errno)));
    }
    ours.push_back(std::make_shared<Channel>(sv[0]));
    theirs.push_back(sv[1]);
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // In the child, channel c becomes kWorkerFd + c (dup2 clears close-on-exec). The
  // child ends are all above kWorkerFd + channels, so no dup2 overwrites another.
  for (int c = 0; c < channels; ++c) {
    posix_spawn_file_actions_adddup2(&actions, theirs[c], kWorkerFd + c);
  }
  posix_spawn_file_actions_addclosefrom_np(&actions, kWorkerFd + channels);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigfillset(&defaults);
  posix_spawnattr_setsigmask(&attr, &none);  // the server blocks its signals for sigwait
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);  // its own process group
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  const std::string threads = std::to_string(options_.threads);
  const std::string channel_count = std::to_string(channels);
  const std::string address_space = std::to_string(options_.address_space_bytes);
  const std::string data = std::to_string(options_.data_bytes);
  std::vector<char*> argv = {const_cast<char*>(options_.worker_path.c_str()),
                             const_cast<char*>("--threads"),
                             const_cast<char*>(threads.c_str()),
                             const_cast<char*>("--channels"),
                             const_cast<char*>(channel_count.c_str()),
                             const_cast<char*>("--address_space_bytes"),
                             const_cast<char*>(address_space.c_str()),
                             const_cast<char*>("--data_bytes"),
                             const_cast<char*>(data.c_str()),
                             const_cast<char*>("--device"),
                             const_cast<char*>(options_.device.c_str()),
                             const_cast<char*>("--label"),
                             const_cast<char*>(options_.name.c_str()),
                             const_cast<char*>("--quantized_engine"),
                             const_cast<char*>(options_.quantized_engine.c_str()),
                             const_cast<char*>("--compiled"),
                             const_cast<char*>(options_.compiled ? "1" : "0"),
                             nullptr};
  // An environment of the numeric libraries' settings only (the operator's,
  // e.g. OPENBLAS_CORETYPE where OpenBLAS misdetects the CPU): the worker must
  // compute what the server would.
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const absl::string_view var(*e);
    // (and a sanitizer build's runtime options)
    for (const char* prefix : {"OPENBLAS_", "OMP_", "GOMP_", "KMP_", "MKL_", "DNNL_", "ONEDNN_",
                               "ASAN_", "UBSAN_", "TSAN_"}) {
      if (absl::StartsWith(var, prefix)) envp.push_back(*e);
    }
  }
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = OnSpawnerThread([&] {
    return posix_spawn(&pid, options_.worker_path.c_str(), &actions, &attr, argv.data(),
                       envp.data());
  });
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close_theirs();
  if (spawned != 0) {
    return absl::UnavailableError(absl::StrCat("cannot start the model worker ",
                                               options_.worker_path, ": ", std::strerror(spawned)));
  }
  pid_ = pid;
  ++generation_;
  channels_ = std::move(ours);
  busy_.assign(channels_.size(), false);
  const int socket = channels_[0]->fd;  // the handshake and the load
  // The worker says how it is confined, then gets the file.
  WorkerReply hello;
  int none_fd = -1;
  absl::Status s = ReceiveMessage(socket, &hello, sizeof(hello), &none_fd, options_.max_load);
  if (none_fd >= 0) close(none_fd);
  if (s.ok()) s = StatusFromReply(hello);
  if (s.ok()) summary_.assign(hello.message, strnlen(hello.message, sizeof(hello.message)));
  const int file = file_;  // sealed read-only: every worker gets the same bytes
  if (s.ok()) {
    WorkerRequest load;
    load.kind = WorkerRequest::kLoad;
    load.check = options_.check ? 1 : 0;
    load.template_bytes = options_.template_bytes;
    load.batch_piece = options_.input_dims.empty() ? 0 : exported::BatchPiece(options_.input_dims);
    load.precision = static_cast<uint32_t>(options_.precision);
    load.memory_layout = static_cast<uint32_t>(options_.memory_layout);
    load.verify_crc = options_.verify_crc ? 1 : 0;
    std::snprintf(load.device, sizeof(load.device), "%s", options_.device.c_str());
    s = SendMessage(socket, &load, sizeof(load), file);
  }
  WorkerReply loaded;
  if (s.ok()) {
    int fd = -1;
    s = ReceiveMessage(socket, &loaded, sizeof(loaded), &fd, options_.max_load);
    if (fd >= 0) close(fd);
    if (s.ok()) s = StatusFromReply(loaded);
    if (s.ok()) {
      loaded_architecture_.assign(loaded.architecture,
                                  strnlen(loaded.architecture, sizeof(loaded.architecture)));
      loaded_parameter_bytes_ = loaded.parameter_bytes;
      loaded_precision_.assign(loaded.precision,
                               strnlen(loaded.precision, sizeof(loaded.precision)));
      loaded_memory_format_.assign(loaded.memory_format,
                                   strnlen(loaded.memory_format, sizeof(loaded.memory_format)));
    }
  }
  if (!s.ok()) {
    const bool worker_side = s.code() != absl::StatusCode::kUnavailable &&
                             s.code() != absl::StatusCode::kDeadlineExceeded &&
                             s.code() != absl::StatusCode::kInternal;
    const std::string ended = StopLocked(/*kill=*/true);
    if (worker_side) return s;  // the load's own error, as the worker reported it
    return absl::UnavailableError(absl::StrCat(options_.name,
                                               ": its sandboxed worker failed while loading (",
                                               s.message(), "; ", ended, ")"));
  }
  return absl::OkStatus();
}

std::string SandboxedModel::StopLocked(bool kill) const {
  if (pid_ <= 0) return "no worker";
  if (kill) ::kill(-pid_, SIGKILL);  // the worker's process group
  // Closed once no batch uses them (a batch on another channel holds its own).
  channels_.clear();
  busy_.clear();
  free_.SignalAll();  // waiting batches find the worker gone
  int status = 0;
  pid_t got;
  do {
    got = waitpid(pid_, &status, 0);
  } while (got < 0 && errno == EINTR);
  pid_ = 0;
  return got > 0 ? Describe(status) : "ended";
}

absl::Status SandboxedModel::ValidateInput(DType dtype, const std::vector<int64_t>& shape) const {
  if (dtype == DType::kUnspecified) return absl::InvalidArgumentError("input dtype is not set");
  if (shape.empty() || shape.size() > static_cast<size_t>(kWorkerMaxRank)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input shape ", ShapeString(shape), " has rank ", shape.size(),
        ", expected [N, ...] with a batch dimension and at most ", kWorkerMaxRank, " dimensions"));
  }
  if (shape[0] < 1) {
    return absl::InvalidArgumentError(absl::StrCat("input shape ", ShapeString(shape),
                                                   " is empty, expected at least one sample"));
  }
  if (!options_.input_dims.empty()) {
    if (dtype != DType::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat("the package takes FP32 input, not ", DTypeName(dtype)));
    }
    return exported::CheckInputShape(options_.input_dims, shape, "the package was compiled");
  }
  return absl::OkStatus();
}

namespace {
absl::Status WriteNewFile(const std::string& path, const std::string& bytes) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path));
  bool ok = true;
  for (size_t done = 0; ok && done < bytes.size();) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ok && fsync(fd) == 0;
  close(fd);
  return ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path));
}
}  // namespace

absl::Status SandboxedModel::Save(ModelFormat format, const std::string& path) const {
  if (options_.compiled) {
    if (format != ModelFormat::kAotiPackage) {
      return absl::UnimplementedError(
          absl::StrCat("an AOTInductor package can be saved as AOTI_PACKAGE only, not ",
                       ModelFormatName(format)));
    }
    std::string bytes;  // the package as it was given
    RETURN_IF_ERROR(MemfdToBytes(file_, file_size_, &bytes));
    return WriteNewFile(path, bytes);
  }
  if (format != ModelFormat::kTorchScript && format != ModelFormat::kStateDict) {
    return absl::UnimplementedError(
        absl::StrCat("a TorchScript model can be saved as TORCHSCRIPT or STATE_DICT, not ",
                     ModelFormatName(format)));
  }
  if (format == ModelFormat::kTorchScript && !info_.from_template) {
    std::string bytes;  // the file as it was given
    RETURN_IF_ERROR(MemfdToBytes(file_, file_size_, &bytes));
    return WriteNewFile(path, bytes);
  }
  // The worker writes it (the module's current weights) into a memfd.
  ASSIGN_OR_RETURN(const Lease lease, Acquire());
  WorkerRequest request;
  request.kind = WorkerRequest::kSave;
  request.format = static_cast<uint32_t>(format);
  absl::Status s = SendMessage(lease.channel->fd, &request, sizeof(request));
  WorkerReply reply;
  int file = -1;
  if (s.ok()) {
    s = ReceiveMessage(lease.channel->fd, &reply, sizeof(reply), &file, options_.max_forward);
  }
  if (!s.ok()) {
    const std::string why = Fail(lease, "crash");
    return absl::UnavailableError(absl::StrCat(options_.name,
                                               ": its sandboxed worker failed "
                                               "while saving (",
                                               s.message(), "; ", why, ")"));
  }
  Release(lease);
  const FdCloser closer{file};
  RETURN_IF_ERROR(StatusFromReply(reply));
  // A hostile worker may answer with any size: the module's own file, re-saved,
  // cannot need more than twice the bytes it was loaded from.
  const uint64_t max_bytes = 2 * file_size_ + (uint64_t{64} << 20);
  absl::StatusOr<std::string> bytes = FileFromReply(reply, file, max_bytes);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(),
                        absl::StrCat(options_.name, ": ", bytes.status().message()));
  }
  return WriteNewFile(path, *bytes);
}

void SandboxedModel::RecordStopLocked(const std::string& reason, const std::string& what) const {
  if (options_.on_restart) options_.on_restart(reason);
  const absl::Time now = absl::Now();
  deaths_.push_back(now);
  while (!deaths_.empty() && deaths_.front() < now - options_.death_window) {
    deaths_.erase(deaths_.begin());
  }
  next_start_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, absl::Seconds(10));
  if (failed_.ok() && static_cast<int>(deaths_.size()) >= options_.max_deaths) {
    failed_ = absl::FailedPreconditionError(absl::StrCat(
        options_.name, ": its sandboxed worker was stopped ", deaths_.size(), " times within ",
        absl::FormatDuration(options_.death_window), " (last: ", reason, ", ", what,
        "); the version is failed and is not restarted"));
    if (options_.on_failed) options_.on_failed(std::string(failed_.message()));
  }
}

absl::Status SandboxedModel::EnsureWorkerLocked() const {
  RETURN_IF_ERROR(failed_);
  if (pid_ != 0) return absl::OkStatus();
  const absl::Time now = absl::Now();
  if (now < next_start_) {
    return absl::UnavailableError(absl::StrCat(options_.name, ": its sandboxed worker restarts in ",
                                               absl::FormatDuration(next_start_ - now)));
  }
  absl::Status s = StartLocked();
  if (!s.ok()) {
    RecordStopLocked("crash", std::string(s.message()));
    return absl::UnavailableError(
        absl::StrCat(options_.name, ": its sandboxed worker did not restart: ", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<SandboxedModel::Lease> SandboxedModel::Acquire() const {
  absl::MutexLock lock(&mu_);
  while (true) {
    RETURN_IF_ERROR(EnsureWorkerLocked());  // after a crash or a deadline: a new worker
    for (size_t i = 0; i < busy_.size(); ++i) {
      if (!busy_[i]) {
        busy_[i] = true;
        return Lease{channels_[i], i, generation_};
      }
    }
    free_.Wait(&mu_);  // every channel busy: a batch ends, or the worker is stopped
  }
}

void SandboxedModel::Release(const Lease& lease) const {
  absl::MutexLock lock(&mu_);
  if (lease.generation == generation_ && lease.index < busy_.size()) busy_[lease.index] = false;
  free_.Signal();
}

std::string SandboxedModel::Fail(const Lease& lease, const std::string& reason) const {
  absl::MutexLock lock(&mu_);
  if (lease.generation != generation_ || pid_ == 0) {
    // Another batch's fault stopped this worker first (and was counted).
    return "the worker was stopped for another batch";
  }
  const std::string ended = StopLocked(/*kill=*/true);
  RecordStopLocked(reason, ended);
  return ended;
}

absl::StatusOr<HostTensor> SandboxedModel::Forward(const HostTensor& batch) const {
  return FirstOutput(ForwardAll(batch));
}

absl::StatusOr<std::vector<NamedTensor>> SandboxedModel::ForwardAll(const HostTensor& batch) const {
  RETURN_IF_ERROR(ValidateInput(batch.dtype, batch.shape));
  // A channel of the worker of its own: the worker runs as many passes at once as
  // it has channels (the server's batch workers).
  ASSIGN_OR_RETURN(const Lease lease, Acquire());
  WorkerRequest request;
  request.kind = WorkerRequest::kForward;
  request.dtype = static_cast<uint32_t>(batch.dtype);
  request.rank = static_cast<uint32_t>(batch.shape.size());
  for (size_t i = 0; i < batch.shape.size(); ++i) request.shape[i] = batch.shape[i];
  request.bytes = batch.data.size();
  const int in = BytesToMemfd("input", batch.data);
  if (in < 0) {
    Release(lease);
    return absl::InternalError(absl::StrCat("memfd: ", std::strerror(errno)));
  }
  absl::Status s = SendMessage(lease.channel->fd, &request, sizeof(request), in);
  close(in);
  WorkerReply reply;
  int out = -1;
  if (s.ok()) {
    s = ReceiveMessage(lease.channel->fd, &reply, sizeof(reply), &out, options_.max_forward);
  }
  if (s.code() == absl::StatusCode::kDeadlineExceeded) {
    const std::string ended = Fail(lease, "deadline");
    return absl::DeadlineExceededError(absl::StrCat(
        options_.name, ": the forward pass ran past ", absl::FormatDuration(options_.max_forward),
        " (--max_forward_seconds); its sandboxed worker was stopped (", ended,
        ") and restarts for the next batch"));
  }
  if (!s.ok()) {
    const std::string ended = Fail(lease, "crash");
    return absl::UnavailableError(
        absl::StrCat(options_.name, ": its sandboxed worker died during a forward pass (", ended,
                     "; ", s.message(), "); it restarts for the next batch"));
  }
  const FdCloser closer{out};
  const absl::Status r = StatusFromReply(reply);
  if (r.code() != absl::StatusCode::kResourceExhausted) {
    Release(lease);  // the worker answered: the channel is free again
  }
  if (!r.ok()) {
    if (r.code() == absl::StatusCode::kResourceExhausted) {
      // Over its memory cap: what grew may be the module's own state.
      (void)Fail(lease, "memory");
      return absl::ResourceExhaustedError(absl::StrCat(
          options_.name, ": ", r.message(), " (its sandboxed worker's memory cap; the worker was ",
          "stopped and restarts for the next batch)"));
    }
    return r;
  }
  absl::StatusOr<std::vector<NamedTensor>> result = OutputsFromReply(reply, out);
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat(options_.name, ": ", result.status().message()));
  }
  output_rank_.store(static_cast<int>(result->front().tensor.shape.size()));
  output_names_.Set(*result);
  return result;
}

std::string SandboxedModel::sandbox_summary() const {
  absl::MutexLock lock(&mu_);
  return summary_;
}

pid_t SandboxedModel::worker_pid() const {
  absl::MutexLock lock(&mu_);
  return pid_;
}

}  // namespace modelserver
