#ifndef MODELSERVER_SERVER_MODEL_INT8_NETWORK_H_
#define MODELSERVER_SERVER_MODEL_INT8_NETWORK_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/model.h"

namespace modelserver {

// One layer of a feed-forward float32 network as native VGGs and pickled layer
// stacks run it (eval mode; dropout already dropped): what `--precision int8`
// quantizes.
struct FloatLayer {
  enum class Kind {
    kConv,             // weight [O, I/groups, kh, kw], bias (or undefined), stride,
                       // padding, dilation, groups
    kBatchNorm,        // weight/bias (or undefined), running_mean, running_var, eps
    kReLU,             //
    kMaxPool,          // kernel, stride, padding, dilation, ceil_mode
    kAvgPool,          // kernel, stride, padding, ceil_mode, count_include_pad
    kAdaptiveAvgPool,  // output_size
    kFlatten,          // start_dim, end_dim
    kLinear,           // weight [O, I], bias (or undefined)
  } kind;
  at::Tensor weight, bias, running_mean, running_var;
  double eps = 1e-5;
  std::vector<int64_t> kernel, stride, padding, dilation, output_size;
  int64_t groups = 1;
  bool ceil_mode = false, count_include_pad = true;
  int64_t start_dim = 1, end_dim = -1;
};

// How close the int8 model stays to the float one on the calibration samples.
struct Int8Accuracy {
  int64_t samples = 0;
  double top1_agreement = 0;  // fraction of samples whose argmax is the float model's
  double worst_cosine = 0;    // the lowest cosine similarity of one sample's outputs
};

struct Int8Options {
  // The version's calibration samples (calibration.npy beside the checkpoint):
  // float32, one sample per row of the first dimension, each what the model takes.
  std::string calibration_path;
  // Or the samples themselves (float32, [samples, ...]); used when set.
  std::shared_ptr<const HostTensor> calibration_samples;
  // A version whose top-1 agreement is below this is refused.
  double min_agreement = 0.99;
  // For messages: "model 'vgg' version 3".
  std::string what = "the model";
};

// Static int8 quantization of `layers` (float32, contiguous, on the CPU), the way
// PyTorch's eager / FX static quantization makes a model for the onednn / x86
// engines: batch norms folded into the convolutions before them, a ReLU right
// after a convolution or a linear layer fused into it, per-output-channel
// symmetric int8 weights (scale = max|w| / 127.5, zero point 0, as
// PerChannelMinMaxObserver), uint8 activations with affine ranges observed
// (min / max, as MinMaxObserver) on the calibration samples at the network's input
// and at every convolution's and linear layer's output (7 bits for fbgemm / x86
// engines without VNNI's headroom: reduce_range), run by LibTorch's quantized
// operators (quantized::conv2d(_relu), quantized::linear(_relu) with prepacked
// weights; max / average pooling, flatten and ReLU on the quantized tensors).
// Float biases, as PyTorch's.
//
// `float_model` is the same network served in float32: it validates inputs,
// answers Save (the version's float weights) and is the reference the accuracy is
// measured against. The returned model reports precision "int8", the accuracy on
// the samples (also in the log) and its int8 weights plus the float model's in
// parameter_bytes.
//
// Errors: FAILED_PRECONDITION without calibration samples (saying how to add
// them), for samples the model does not take (named), for a layer int8 does not
// cover (a batch norm that does not follow a convolution), and for a version below
// `min_agreement` (with the numbers); INVALID_ARGUMENT for a calibration file that
// is not a float32 .npy. Thread-safe; the model is immutable.
absl::StatusOr<std::shared_ptr<const Model>> QuantizeInt8(std::vector<FloatLayer> layers,
                                                          std::shared_ptr<const Model> float_model,
                                                          const Int8Options& options);

// The file name of calibration samples in a version directory.
inline constexpr char kCalibrationFile[] = "calibration.npy";

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_INT8_NETWORK_H_
