#include "server/model/tensor_convert.h"

#include <cstring>
#include <new>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace modelserver {

absl::StatusOr<at::ScalarType> ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return at::kFloat;
    case DType::kFloat16:
      return at::kHalf;
    case DType::kBFloat16:
      return at::kBFloat16;
    case DType::kFloat64:
      return at::kDouble;
    case DType::kUInt8:
      return at::kByte;
    case DType::kInt8:
      return at::kChar;
    case DType::kInt32:
      return at::kInt;
    case DType::kInt64:
      return at::kLong;
    case DType::kBool:
      return at::kBool;
    case DType::kUnspecified:
      break;
  }
  return absl::InvalidArgumentError("tensor dtype is unspecified");
}

absl::StatusOr<DType> ToDType(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kDouble:
      return DType::kFloat64;
    case at::kByte:
      return DType::kUInt8;
    case at::kChar:
      return DType::kInt8;
    case at::kInt:
      return DType::kInt32;
    case at::kLong:
      return DType::kInt64;
    case at::kBool:
      return DType::kBool;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("model output dtype ", c10::toString(type), " has no API equivalent"));
}

absl::StatusOr<at::Tensor> ViewHostTensor(const HostTensor& t) {
  ASSIGN_OR_RETURN(at::ScalarType type, ToScalarType(t.dtype));
  RETURN_IF_ERROR(CheckTensorBytes(t.dtype, t.shape, t.data.size()));
  return at::from_blob(const_cast<char*>(t.data.data()), t.shape, at::TensorOptions().dtype(type));
}

absl::StatusOr<HostTensor> ToHostTensor(const at::Tensor& t, int64_t max_bytes) {
  HostTensor out;
  if (t.layout() != at::kStrided || t.is_meta()) {
    return absl::InvalidArgumentError(absl::StrCat("model output is a ", c10::toString(t.layout()),
                                                   t.is_meta() ? " meta" : "",
                                                   " tensor, expected a dense one"));
  }
  ASSIGN_OR_RETURN(out.dtype, ToDType(t.scalar_type()));
  // Before copying: an expanded (stride 0) output can be far larger than the
  // memory it occupies.
  const __int128 bytes = static_cast<__int128>(t.numel()) * t.element_size();
  if (bytes > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "model output ", ShapeString({t.sizes().begin(), t.sizes().end()}), " would take ",
        static_cast<int64_t>(bytes), " bytes, over the limit of ", max_bytes, " bytes"));
  }
  const at::Tensor cpu = t.to(at::kCPU).contiguous();
  out.shape.assign(cpu.sizes().begin(), cpu.sizes().end());
  out.data.resize(cpu.nbytes());
  if (cpu.nbytes() > 0) std::memcpy(out.data.data(), cpu.data_ptr(), cpu.nbytes());
  return out;
}

std::string TorchErrorCause(absl::string_view message) {
  std::vector<absl::string_view> lines = absl::StrSplit(message, '\n', absl::SkipWhitespace());
  if (lines.empty()) return "";
  // TorchScript's interpreter puts its traceback first and the cause last
  // ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x11 and 10x2)").
  if (absl::StrContains(lines.front(), "TorchScript interpreter")) {
    return std::string(absl::StripAsciiWhitespace(lines.back()));
  }
  return std::string(lines.front());
}

absl::Status TorchError(const std::exception& e, absl::string_view what, absl::StatusCode code) {
  std::string msg = e.what();
  // c10::Error appends a C++ backtrace after the first line; keep the message.
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e)) msg = c10e->msg();
  msg = TorchErrorCause(msg);
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr ||
      absl::StrContains(msg, "out of memory") || absl::StrContains(msg, "can't allocate memory")) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory: ", msg));
  }
  return absl::Status(code, absl::StrCat(what, ": ", msg));
}

}  // namespace modelserver
