// model-worker: runs one code-bearing model (TorchScript) for the server, inside
// SandboxPolicy. Started by SandboxedModel with its socket as descriptor
// kWorkerFd (see worker_protocol.h), an empty environment and its own process
// group; never opens a path after the policy is applied, and the file's bytes
// arrive only after it.
//
//   model-worker --threads N [--address_space_bytes B]
#include <sys/prctl.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/host_tensor.h"
#include "server/model/torchscript_model.h"
#include "server/sandbox/sandbox_policy.h"
#include "server/sandbox/worker_protocol.h"

namespace modelserver {
namespace {

void Reply(const absl::Status& status, WorkerReply* reply, int fd = -1) {
  reply->code = static_cast<int32_t>(status.code());
  std::snprintf(reply->message, sizeof(reply->message), "%s",
                std::string(status.message()).c_str());
  if (!SendMessage(kWorkerFd, reply, sizeof(*reply), fd).ok()) _exit(3);
}

// Touches what LibTorch reads from the filesystem on first use (CPU features,
// thread pools, oneDNN's kernels) while files can still be read.
void WarmUp(int threads) {
  if (threads > 0) at::set_num_threads(threads);
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::ones({1, 3, 8, 8});
  at::Tensor w = torch::ones({4, 3, 3, 3});
  (void)torch::conv2d(x, w).sum().item<float>();
  (void)torch::mm(torch::ones({16, 16}), torch::ones({16, 16})).sum().item<float>();
}

absl::StatusOr<HostTensor> ForwardRequest(const Model& model, const WorkerRequest& request,
                                          int fd) {
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
  return model.Forward(in);
}

int Main(int argc, char** argv) {
  int threads = 0;
  uint64_t address_space = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") (void)absl::SimpleAtoi(argv[i + 1], &threads);
    if (flag == "--address_space_bytes") (void)absl::SimpleAtoi(argv[i + 1], &address_space);
  }
  // Dies with the server (which may itself be PID 1 in a container); its own
  // process group (the spawner set it).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  WarmUp(threads);
  SandboxPolicy::Options policy;
  policy.address_space_bytes = address_space;
  policy.max_open_files = 32;
  absl::StatusOr<SandboxPolicy::Report> applied = SandboxPolicy::Apply(policy);
  WorkerReply hello;
  if (!applied.ok()) {
    Reply(applied.status(), &hello);
    return 2;
  }
  std::snprintf(hello.message, sizeof(hello.message), "%s", applied->Summary().c_str());
  if (!SendMessage(kWorkerFd, &hello, sizeof(hello)).ok()) return 3;

  std::shared_ptr<const Model> model;
  while (true) {
    WorkerRequest request;
    int fd = -1;
    const absl::Status got =
        ReceiveMessage(kWorkerFd, &request, sizeof(request), &fd, absl::InfiniteDuration());
    if (!got.ok()) return got.code() == absl::StatusCode::kUnavailable ? 0 : 3;
    WorkerReply reply;
    if (request.kind == WorkerRequest::kLoad && model == nullptr && fd >= 0) {
      std::string bytes;
      struct stat st {};
      absl::Status s = fstat(fd, &st) == 0
                           ? MemfdToBytes(fd, static_cast<uint64_t>(st.st_size), &bytes)
                           : absl::InternalError("fstat of the file's memory");
      close(fd);
      if (s.ok()) {
        absl::StatusOr<std::shared_ptr<TorchScriptModel>> loaded =
            TorchScriptModel::LoadBuffer(bytes, "cpu", /*trusted=*/request.check == 0);
        if (loaded.ok()) {
          model = *std::move(loaded);
          reply.parameter_bytes = model->info().parameter_bytes;
        }
        s = loaded.status();
      }
      Reply(s, &reply);
    } else if (request.kind == WorkerRequest::kForward && model != nullptr && fd >= 0) {
      absl::StatusOr<HostTensor> out = ForwardRequest(*model, request, fd);
      close(fd);
      int out_fd = -1;
      if (out.ok() && out->shape.size() <= static_cast<size_t>(kWorkerMaxRank)) {
        out_fd = BytesToMemfd("output", out->data);
        reply.dtype = static_cast<uint32_t>(out->dtype);
        reply.rank = static_cast<uint32_t>(out->shape.size());
        for (size_t i = 0; i < out->shape.size(); ++i) reply.shape[i] = out->shape[i];
        reply.bytes = out->data.size();
      }
      absl::Status s = out.status();
      if (s.ok() && out_fd < 0) s = absl::InternalError("the output does not fit the wire");
      Reply(s, &reply, out_fd);
      if (out_fd >= 0) close(out_fd);
    } else {
      if (fd >= 0) close(fd);
      Reply(absl::InvalidArgumentError("unexpected request"), &reply);
    }
  }
}

}  // namespace
}  // namespace modelserver

int main(int argc, char** argv) { return modelserver::Main(argc, argv); }
