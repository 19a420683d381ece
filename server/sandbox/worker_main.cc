// model-worker: runs one code-bearing model (TorchScript, an AOTInductor package)
// for the server, inside
// SandboxPolicy. Started by SandboxedModel with its socket as descriptor
// kWorkerFd (see worker_protocol.h), an empty environment and its own process
// group; never opens a path after the policy is applied, and the file's bytes
// arrive only after it.
//
//   model-worker --threads N [--channels K] [--address_space_bytes B] [--data_bytes B]
//                [--device D] [--compiled 1]
// --compiled: the file is an AOTInductor package, whose library the dynamic
// loader opens (read-only, as /proc/self/fd/N) during the load: the policy allows
// read-only opens until then (SandboxPolicy::allow_read_only_open, Landlock
// confining them to no path) and forbids every open after it (ForbidOpen).
// Channel c is descriptor kWorkerFd + c: the first carries the handshake and the
// load; after the load every channel is served by its own thread.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/host_tensor.h"
#include "common/status_macros.h"
#include "server/model/aoti_model.h"
#include "server/model/cpu_block_cache.h"
#include "server/model/device.h"
#include "server/model/model_warnings.h"
#include "server/model/torchscript_model.h"
#include "server/sandbox/sandbox_policy.h"
#include "server/sandbox/worker_protocol.h"

namespace modelserver {
namespace {

void Reply(int socket, const absl::Status& status, WorkerReply* reply, int fd = -1) {
  reply->code = static_cast<int32_t>(status.code());
  std::snprintf(reply->message, sizeof(reply->message), "%s",
                std::string(status.message()).c_str());
  if (!SendMessage(socket, reply, sizeof(*reply), fd).ok()) _exit(3);
}

// Touches what LibTorch reads from the filesystem on first use (CPU features,
// thread pools, oneDNN's kernels; on a GPU build the CUDA context of `device`)
// while files can still be read.
//
// On one thread: Landlock confines only the thread that applies it and the
// threads it starts later, so the intra-op pool is started after the policy.
void WarmUp(const std::string& device) {
  at::set_num_threads(1);
  torch::NoGradGuard no_grad;
  for (const at::ScalarType type : {at::kFloat, at::kBFloat16}) {
    at::Tensor x = torch::ones({1, 3, 8, 8}, type);
    at::Tensor w = torch::ones({4, 3, 3, 3}, type);
    (void)torch::conv2d(x, w).sum().item<float>();
    (void)torch::conv2d(x.contiguous(at::MemoryFormat::ChannelsLast),
                        w.contiguous(at::MemoryFormat::ChannelsLast))
        .sum()
        .item<float>();
    (void)torch::mm(torch::ones({16, 16}, type), torch::ones({16, 16}, type)).sum().item<float>();
  }
  if (device != "cpu") {
    try {
      (void)torch::ones({4}, at::Device(device)).sum().item<float>();
    } catch (const std::exception&) {
      // The load names the device's problem.
    }
  }
}

// The loaded model, and how it writes itself for kSave (null: it cannot).
struct Loaded {
  std::shared_ptr<const Model> model;
  std::function<absl::Status(ModelFormat, int)> save_to_fd;
};

// kLoad: the TorchScript file (or template + state dict), or with `compiled` the
// AOTInductor package, in memfd `fd`, read in place.
absl::StatusOr<Loaded> LoadRequest(const WorkerRequest& request, int fd, bool compiled,
                                   int channels) {
  const std::string device(request.device, strnlen(request.device, sizeof(request.device)));
  const bool trusted = request.check == 0;
  if (request.precision > static_cast<uint32_t>(Precision::kFp16)) {
    // int8 is made in the server from float networks; a worker serves floats.
    return absl::InvalidArgumentError(
        absl::StrCat("a worker serves fp32, bf16 or fp16, not precision ", request.precision));
  }
  ASSIGN_OR_RETURN(const Numerics numerics,
                   ResolveNumerics(static_cast<Precision>(request.precision),
                                   static_cast<MemoryLayout>(request.memory_layout), device,
                                   /*layout_safe=*/false));
  Loaded loaded;
  if (compiled) {
    ASSIGN_OR_RETURN(loaded.model,
                     AotiModel::LoadFromFd(fd, device, numerics, channels, request.batch_piece));
    return loaded;
  }
  std::shared_ptr<TorchScriptModel> ts;
  if (request.template_bytes == 0) {
    ASSIGN_OR_RETURN(ts, TorchScriptModel::LoadFromFd(fd, device, trusted, numerics));
  } else {
    ASSIGN_OR_RETURN(
        ts, TorchScriptModel::LoadTemplateFromFd(fd, request.template_bytes, device, trusted,
                                                 numerics, request.verify_crc != 0));
  }
  loaded.save_to_fd = [ts](ModelFormat format, int file) { return ts->SaveToFd(format, file); };
  loaded.model = std::move(ts);
  return loaded;
}

absl::StatusOr<std::vector<NamedTensor>> ForwardRequest(const Model& model,
                                                        const WorkerRequest& request, int fd) {
  if (request.rank == 0 || request.rank > kWorkerMaxRank) {
    return absl::InvalidArgumentError(absl::StrCat("input rank ", request.rank));
  }
  HostTensor in;
  in.dtype = static_cast<DType>(request.dtype);
  in.shape.assign(request.shape, request.shape + request.rank);
  if (absl::Status s = model.ValidateInput(in.dtype, in.shape); !s.ok()) return s;
  if (DTypeSize(in.dtype) == 0) return absl::InvalidArgumentError("unknown input dtype");
  if (absl::Status s = CheckTensorBytes(in.dtype, in.shape, static_cast<size_t>(request.bytes));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = MemfdToBytes(fd, request.bytes, &in.data); !s.ok()) return s;
  return model.ForwardAll(in);
}

// Answers forward and save requests on channel `socket` until the server closes
// it. While n passes run at once each uses total_threads / n intra-op threads (as
// the server's batch workers do in process).
int Serve(int socket, const Loaded& loaded, int total_threads, std::atomic<int>* running) {
  const Model& model = *loaded.model;
  while (true) {
    WorkerRequest request;
    int fd = -1;
    const absl::Status got =
        ReceiveMessage(socket, &request, sizeof(request), &fd, absl::InfiniteDuration());
    if (!got.ok()) return got.code() == absl::StatusCode::kUnavailable ? 0 : 3;
    WorkerReply reply;
    if (request.kind == WorkerRequest::kSave) {
      if (fd >= 0) close(fd);
      const int file = memfd_create("saved", MFD_CLOEXEC | MFD_ALLOW_SEALING);
      absl::Status s = file < 0 ? absl::InternalError("memfd_create")
                       : loaded.save_to_fd == nullptr
                           ? absl::UnimplementedError("this model is not saved here")
                           : loaded.save_to_fd(static_cast<ModelFormat>(request.format), file);
      struct stat st {};
      if (s.ok() && fstat(file, &st) != 0) s = absl::InternalError("fstat of the saved file");
      if (s.ok()) {
        reply.bytes = static_cast<uint64_t>(st.st_size);
        (void)fcntl(file, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
      }
      Reply(socket, s, &reply, s.ok() ? file : -1);
      if (file >= 0) close(file);
    } else if (request.kind == WorkerRequest::kForward && fd >= 0) {
      const int now = running->fetch_add(1) + 1;
      SetThisThreadIntraOpThreads(std::max(1, total_threads / now));
      absl::StatusOr<std::vector<NamedTensor>> out = ForwardRequest(model, request, fd);
      running->fetch_sub(1);
      close(fd);
      int out_fd = -1;
      absl::Status s = out.status();
      if (s.ok()) s = OutputsToReply(*out, &reply);
      if (s.ok()) {
        std::vector<absl::string_view> parts;  // the outputs one after another
        for (const NamedTensor& t : *out) parts.push_back(t.tensor.data);
        out_fd = BytesToMemfd("output", parts);
        if (out_fd < 0) s = absl::InternalError("memfd for the output");
      }
      Reply(socket, s, &reply, out_fd);
      if (out_fd >= 0) close(out_fd);
    } else {
      if (fd >= 0) close(fd);
      Reply(socket, absl::InvalidArgumentError("unexpected request"), &reply);
    }
  }
}

int Main(int argc, char** argv) {
  int threads = 0;
  int channels = 1;
  uint64_t address_space = 0;
  uint64_t data_bytes = 0;
  std::string device = "cpu";
  std::string quantized_engine;
  bool compiled = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") (void)absl::SimpleAtoi(argv[i + 1], &threads);
    if (flag == "--channels") (void)absl::SimpleAtoi(argv[i + 1], &channels);
    if (flag == "--address_space_bytes") (void)absl::SimpleAtoi(argv[i + 1], &address_space);
    if (flag == "--data_bytes") (void)absl::SimpleAtoi(argv[i + 1], &data_bytes);
    if (flag == "--device") device = argv[i + 1];
    if (flag == "--label") ModelWarningLog::SetProcessLabel(argv[i + 1]);
    if (flag == "--quantized_engine") quantized_engine = argv[i + 1];
    if (flag == "--compiled") compiled = std::string(argv[i + 1]) == "1";
  }
  // Dies with the server (which may itself be PID 1 in a container); its own
  // process group (the spawner set it).
  const bool network_namespace = SandboxPolicy::EnterEmptyNetworkNamespace();  // single-threaded
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  const int default_threads = at::get_num_threads();  // LibTorch's own choice (no thread yet)
  // Freed activation blocks are kept for the next batch (a quarter of the cap;
  // 2 GiB without one): the worker serves one model, and what it keeps counts
  // against its own cap.
  InstallCpuBlockCache(data_bytes > 0 ? data_bytes / 4 : uint64_t{2} << 30);
  WarmUp(device);
  SandboxPolicy::Options policy;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // A sanitizer's shadow memory (terabytes, mapped at startup) is past any cap:
  // every later mapping would be refused. Sanitizer builds run without one.
  address_space = data_bytes = 0;
#endif
  policy.address_space_bytes = address_space;
  policy.data_bytes = data_bytes;
  channels = std::clamp(channels, 1, kWorkerMaxChannels);
  policy.max_open_files = 32 + channels;
  policy.allow_read_only_open = compiled;
  // The int8 kernels the model's packed weights are repacked for when it loads.
  const absl::Status engine = SetQuantizedEngine(quantized_engine);
  absl::StatusOr<SandboxPolicy::Report> applied =
      engine.ok() ? SandboxPolicy::Apply(policy) : engine;
  WorkerReply hello;
  if (!applied.ok()) {
    Reply(kWorkerFd, applied.status(), &hello);
    return 2;
  }
  applied->network_namespace = network_namespace;
  // The intra-op threads start from here on, confined like this one.
  at::set_num_threads(threads > 0 ? threads : default_threads);
  std::snprintf(hello.message, sizeof(hello.message), "%s", applied->Summary().c_str());
  if (!SendMessage(kWorkerFd, &hello, sizeof(hello)).ok()) return 3;

  // The first request on the first channel is the load.
  Loaded model;
  {
    WorkerRequest request;
    int fd = -1;
    const absl::Status got =
        ReceiveMessage(kWorkerFd, &request, sizeof(request), &fd, absl::InfiniteDuration());
    if (!got.ok()) return got.code() == absl::StatusCode::kUnavailable ? 0 : 3;
    WorkerReply reply;
    if (request.kind != WorkerRequest::kLoad || fd < 0) {
      if (fd >= 0) close(fd);
      Reply(kWorkerFd, absl::InvalidArgumentError("expected the file first"), &reply);
      return 3;
    }
    absl::StatusOr<Loaded> loaded = LoadRequest(request, fd, compiled, channels);
    close(fd);
    // The package's library is open: from here on nothing is (the compiled code
    // runs on every forward pass).
    if (compiled) {
      if (absl::Status s = SandboxPolicy::ForbidOpen(); !s.ok()) {
        Reply(kWorkerFd, s, &reply);
        return 2;
      }
    }
    if (loaded.ok()) {
      model = *std::move(loaded);
      const ModelInfo& info = model.model->info();
      reply.parameter_bytes = info.parameter_bytes;
      std::snprintf(reply.architecture, sizeof(reply.architecture), "%s",
                    info.architecture.c_str());
      std::snprintf(reply.precision, sizeof(reply.precision), "%s", info.precision.c_str());
      std::snprintf(reply.memory_format, sizeof(reply.memory_format), "%s",
                    info.memory_format.c_str());
    }
    Reply(kWorkerFd, loaded.status(), &reply);
    if (!loaded.ok()) return 0;
  }
  // One thread per channel (the server's batch workers), started confined.
  const int total_threads = threads > 0 ? threads : default_threads;
  std::atomic<int> running{0};
  std::vector<std::thread> serving;
  for (int c = 1; c < channels; ++c) {
    serving.emplace_back([&, c] { (void)Serve(kWorkerFd + c, model, total_threads, &running); });
  }
  const int rc = Serve(kWorkerFd, model, total_threads, &running);
  _exit(rc);  // the other channels' threads end with the process
}

}  // namespace
}  // namespace modelserver

int main(int argc, char** argv) { return modelserver::Main(argc, argv); }
