#ifndef MODELSERVER_SERVER_MODEL_PRECISION_H_
#define MODELSERVER_SERVER_MODEL_PRECISION_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// The floating-point type a model's weights and activations are kept in, or
// int8: weights and activations quantized at load from calibration samples
// (server/model/int8_network.h; native VGGs and pickled layer stacks on a CPU).
// Inputs and outputs on the wire keep their own dtype: the model converts.
enum class Precision { kFp32, kBf16, kFp16, kInt8 };

// How 4-D activations and convolution weights are laid out in memory.
enum class MemoryLayout {
  kAuto,          // channels-last for convolutional networks where measured faster
  kContiguous,    // NCHW
  kChannelsLast,  // NHWC strides
};

// "fp32" | "bf16" | "fp16" | "int8" (also float32, bfloat16, float16, half), any case.
// INVALID_ARGUMENT naming the accepted values otherwise.
absl::StatusOr<Precision> ParsePrecision(absl::string_view text);
const char* PrecisionName(Precision p);  // "fp32", "bf16", "fp16", "int8"

// "auto" | "contiguous" (also nchw) | "channels_last" (also nhwc), any case.
absl::StatusOr<MemoryLayout> ParseMemoryLayout(absl::string_view text);
const char* MemoryLayoutName(MemoryLayout m);  // "auto", "contiguous", "channels_last"

// OK when `p` can run on `device` ("cpu", "cuda:0"); FAILED_PRECONDITION naming
// the mode and the device otherwise (fp16 on a CPU).
absl::Status CheckPrecisionOnDevice(Precision p, absl::string_view device);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_PRECISION_H_
