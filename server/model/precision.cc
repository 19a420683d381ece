#include "server/model/precision.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace modelserver {

absl::StatusOr<Precision> ParsePrecision(absl::string_view text) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "fp32" || t == "float32" || t == "float") return Precision::kFp32;
  if (t == "bf16" || t == "bfloat16") return Precision::kBf16;
  if (t == "fp16" || t == "float16" || t == "half") return Precision::kFp16;
  if (t == "int8") return Precision::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("precision '", text, "' is not one of fp32, bf16, fp16, int8"));
}

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
    case Precision::kInt8:
      return "int8";
  }
  return "?";
}

absl::StatusOr<MemoryLayout> ParseMemoryLayout(absl::string_view text) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "auto") return MemoryLayout::kAuto;
  if (t == "contiguous" || t == "nchw") return MemoryLayout::kContiguous;
  if (t == "channels_last" || t == "nhwc") return MemoryLayout::kChannelsLast;
  return absl::InvalidArgumentError(
      absl::StrCat("memory format '", text, "' is not one of auto, contiguous, channels_last"));
}

const char* MemoryLayoutName(MemoryLayout m) {
  switch (m) {
    case MemoryLayout::kAuto:
      return "auto";
    case MemoryLayout::kContiguous:
      return "contiguous";
    case MemoryLayout::kChannelsLast:
      return "channels_last";
  }
  return "?";
}

absl::Status CheckPrecisionOnDevice(Precision p, absl::string_view device) {
  if (p == Precision::kFp16 && !absl::StartsWith(device, "cuda")) {
    return absl::FailedPreconditionError(
        absl::StrCat("precision fp16 needs a CUDA device, and this model runs on ", device,
                     ": CPUs have no fast float16 arithmetic; use bf16 (or fp32) on a CPU"));
  }
  if (p == Precision::kInt8 && !absl::StartsWith(device, "cpu")) {
    return absl::FailedPreconditionError(
        absl::StrCat("precision int8 runs on a CPU (LibTorch's quantized operators), and this "
                     "model runs on ",
                     device, ": use fp16 or bf16 on a GPU"));
  }
  return absl::OkStatus();
}

}  // namespace modelserver
