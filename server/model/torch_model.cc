#include "server/model/torch_model.h"

#include <c10/core/InferenceMode.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "common/status_macros.h"
#include "server/model/tensor_convert.h"
#include "server/util/logging.h"

namespace modelserver {
namespace {

// The first `like.nbytes()` bytes of `*buffer` (reallocated, pinned, when too
// small), viewed with `like`'s dtype and sizes.
at::Tensor Staged(at::Tensor* buffer, const at::Tensor& like) {
  const int64_t bytes = static_cast<int64_t>(like.nbytes());
  if (!buffer->defined() || buffer->numel() < bytes) {
    *buffer = at::empty({std::max<int64_t>(bytes, 1)},
                        at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  }
  return buffer->narrow(0, 0, bytes).view(like.scalar_type()).view(like.sizes());
}

}  // namespace

at::ScalarType Numerics::dtype() const {
  switch (precision) {
    case Precision::kBf16:
      return at::kBFloat16;
    case Precision::kFp16:
      return at::kHalf;
    case Precision::kFp32:
    case Precision::kInt8:  // the float network int8 is made from, and its inputs
      break;
  }
  return at::kFloat;
}

at::Tensor Numerics::Apply(const at::Tensor& t) const {
  at::Tensor out = t;
  if (at::isFloatingType(out.scalar_type()) && out.scalar_type() != dtype()) out = out.to(dtype());
  if (channels_last && out.dim() == 4) return out.contiguous(at::MemoryFormat::ChannelsLast);
  return out.contiguous();
}

absl::StatusOr<Numerics> ResolveNumerics(Precision precision, MemoryLayout layout,
                                         const std::string& device, bool layout_safe) {
  RETURN_IF_ERROR(CheckPrecisionOnDevice(precision, device));
  Numerics n;
  n.precision = precision;
  n.channels_last =
      layout == MemoryLayout::kChannelsLast || (layout == MemoryLayout::kAuto && layout_safe);
  return n;
}

TorchModel::TorchModel(ModelInfo info, at::Device device, Numerics numerics,
                       absl::StatusCode error_code, std::string error_context)
    : info_(std::move(info)),
      device_(device),
      numerics_(numerics),
      error_code_(error_code),
      error_context_(std::move(error_context)) {
  info_.precision = PrecisionName(numerics_.precision);
  info_.memory_format = numerics_.channels_last ? "channels_last" : "contiguous";
}

// A calling thread's CUDA state: its own stream (taken from LibTorch's pool), and
// pinned host buffers reused across its batches. Used only by that thread; owned
// by the model (not thread_local: freeing CUDA memory while a thread exits can
// run after LibTorch's own thread-local state is gone).
struct TorchModel::CudaStaging {
  std::optional<c10::Stream> stream;
  at::Tensor pinned_in, pinned_out;  // kByte, grown as needed
};

TorchModel::~TorchModel() = default;

TorchModel::CudaStaging& TorchModel::StagingForThisThread() const {
  absl::MutexLock lock(&staging_mu_);
  std::shared_ptr<CudaStaging>& s = staging_[std::this_thread::get_id()];
  if (s == nullptr) {
    s = std::make_shared<CudaStaging>();
    s->stream = c10::impl::VirtualGuardImpl(device_.type()).getStreamFromGlobalPool(device_);
  }
  return *s;
}

absl::StatusOr<TorchModel::NamedOutputs> TorchModel::RunAll(const at::Tensor& x) const {
  ASSIGN_OR_RETURN(at::Tensor y, Run(x));
  NamedOutputs out;
  out.emplace_back("output", std::move(y));
  return out;
}

absl::StatusOr<HostTensor> TorchModel::Forward(const HostTensor& batch) const {
  return FirstOutput(ForwardAll(batch));
}

absl::StatusOr<std::vector<NamedTensor>> TorchModel::ForwardAll(const HostTensor& batch) const {
  RETURN_IF_ERROR(ValidateInput(batch.dtype, batch.shape));
  ASSIGN_OR_RETURN(at::Tensor host, ViewHostTensor(batch));
  const bool unbatched = IsUnbatched(batch.shape);
  try {
    c10::InferenceMode guard;
    if (unbatched) host = host.unsqueeze(0);
    NamedOutputs ys;
    std::vector<NamedTensor> out;
    if (device_.is_cpu()) {
      ASSIGN_OR_RETURN(ys, Compute(host));
    } else {
      CudaStaging& staging = StagingForThisThread();
      c10::StreamGuard on_stream(*staging.stream);
      at::Tensor pinned = Staged(&staging.pinned_in, host);
      pinned.copy_(host);
      ASSIGN_OR_RETURN(ys, Compute(pinned.to(device_, /*non_blocking=*/true)));
      // The first output through the thread's pinned buffer, the others (rare)
      // copied plainly.
      for (size_t i = 0; i < ys.size(); ++i) {
        at::Tensor& y = ys[i].second;
        if (y.is_cpu()) continue;
        if (i > 0) {
          y = y.to(at::kCPU);
          continue;
        }
        y = y.contiguous();
        at::Tensor staged = Staged(&staging.pinned_out, y);
        staged.copy_(y, /*non_blocking=*/true);
        y = staged;
      }
      staging.stream->synchronize();  // the outputs are on the host; pinned_in is free again
    }
    for (auto& [name, y] : ys) {
      NamedTensor t;
      t.name = name;
      ASSIGN_OR_RETURN(t.tensor, ToHost(std::move(y), unbatched));
      out.push_back(std::move(t));
    }
    output_names_.Set(out);
    return out;
  } catch (const std::exception& e) {
    // The whole message (a TorchScript traceback, say) once per model; the
    // caller gets its cause.
    if (!logged_failure_.exchange(true)) {
      LOG_WARNING(info_.architecture, " on ", info_.device,
                  ": first failed forward pass: ", e.what());
    }
    return TorchError(e, error_context_, error_code_);
  }
}

absl::StatusOr<TorchModel::NamedOutputs> TorchModel::Compute(const at::Tensor& x) const {
  ASSIGN_OR_RETURN(NamedOutputs ys, RunAll(numerics_.Apply(x)));
  if (ys.empty()) return absl::InternalError("the model gave no output");
  output_rank_.store(static_cast<int>(ys.front().second.dim()));
  for (auto& [name, y] : ys) {
    if (y.scalar_type() == numerics_.dtype() && numerics_.dtype() != at::kFloat) {
      y = y.to(at::kFloat);  // the wire's float32
    }
  }
  return ys;
}

absl::StatusOr<HostTensor> TorchModel::ToHost(at::Tensor y, bool unbatched) {
  if (unbatched) y = y.squeeze(0);
  return ToHostTensor(y);
}

void AddParameterBytes(const std::vector<at::Tensor>& tensors, ModelInfo* info) {
  for (const at::Tensor& t : tensors) {
    if (t.defined()) info->parameter_bytes += t.nbytes();
  }
}

}  // namespace modelserver
