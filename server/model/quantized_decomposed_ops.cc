#include "server/model/quantized_decomposed_ops.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace modelserver {
namespace {

// torch's _DTYPE_TO_QVALUE_BOUNDS, the integer part (the float8 targets are not
// served: a program quantized to them is refused with the dtype's name).
void CheckBounds(int64_t quant_min, int64_t quant_max, at::ScalarType dtype) {
  int64_t lo = 0;
  int64_t hi = 0;
  const char* name = "";
  switch (dtype) {
    case at::kByte:
      lo = 0, hi = 255, name = "uint8";
      break;
    case at::kChar:
      lo = -128, hi = 127, name = "int8";
      break;
    case at::kShort:
      lo = INT16_MIN, hi = INT16_MAX, name = "int16";
      break;
    case at::kInt:
      lo = INT32_MIN, hi = INT32_MAX, name = "int32";
      break;
    default:
      TORCH_CHECK(false, "quantized_decomposed: unsupported quantized dtype ", dtype);
  }
  TORCH_CHECK(quant_min >= lo && quant_max <= hi, "quantized_decomposed: quant_min ", quant_min,
              " and quant_max ", quant_max, " are outside ", name, "'s range [", lo, ", ", hi, "]");
}

at::Tensor FloatInput(const at::Tensor& input) {
  at::Tensor x = input;
  if (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16) x = x.to(at::kFloat);
  TORCH_CHECK(x.scalar_type() == at::kFloat, "quantized_decomposed: expected a float32 input, got ",
              x.scalar_type());
  return x;
}

double OneDouble(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.numel() == 1, "quantized_decomposed: ", what, " has ", t.numel(),
              " elements, not one");
  return t.item<double>();
}

int64_t OneInt(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.numel() == 1, "quantized_decomposed: ", what, " has ", t.numel(),
              " elements, not one");
  return t.item<int64_t>();
}

// torch: clamp(round(input * (1.0 / scale)) + zero_point, quant_min, quant_max).to(dtype)
at::Tensor QuantizePerTensor(const at::Tensor& input, double scale, int64_t zero_point,
                             int64_t quant_min, int64_t quant_max, at::ScalarType dtype) {
  const at::Tensor x = FloatInput(input);
  CheckBounds(quant_min, quant_max, dtype);
  // (torch would divide by zero; no observer writes such a scale)
  TORCH_CHECK(std::isfinite(scale) && scale != 0.0, "quantized_decomposed: the scale is ", scale,
              ", not a finite non-zero number");
  const double inv_scale = 1.0 / scale;
  return at::clamp(at::add(at::round(at::mul(x, inv_scale)), zero_point), quant_min, quant_max)
      .to(dtype);
}

at::Tensor QuantizePerTensorTensor(const at::Tensor& input, const at::Tensor& scale,
                                   const at::Tensor& zero_point, int64_t quant_min,
                                   int64_t quant_max, at::ScalarType dtype) {
  return QuantizePerTensor(input, OneDouble(scale, "scale"), OneInt(zero_point, "zero_point"),
                           quant_min, quant_max, dtype);
}

at::Tensor QuantizePerTensorTensor2(const at::Tensor& input, const at::Tensor& scale,
                                    const at::Tensor& zero_point, const at::Tensor& quant_min,
                                    const at::Tensor& quant_max, at::ScalarType dtype) {
  return QuantizePerTensor(input, OneDouble(scale, "scale"), OneInt(zero_point, "zero_point"),
                           OneInt(quant_min, "quant_min"), OneInt(quant_max, "quant_max"), dtype);
}

// torch: (input.to(out_dtype) - zero_point) * scale
at::Tensor DequantizePerTensor(const at::Tensor& input, double scale, int64_t zero_point,
                               int64_t quant_min, int64_t quant_max, at::ScalarType dtype,
                               c10::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK(input.scalar_type() == dtype, "quantized_decomposed: expected an input of dtype ",
              dtype, ", got ", input.scalar_type());
  CheckBounds(quant_min, quant_max, dtype);
  return at::mul(at::sub(input.to(out_dtype.value_or(at::kFloat)), zero_point), scale);
}

at::Tensor DequantizePerTensorTensor(const at::Tensor& input, const at::Tensor& scale,
                                     const at::Tensor& zero_point, int64_t quant_min,
                                     int64_t quant_max, at::ScalarType dtype,
                                     c10::optional<at::ScalarType> out_dtype) {
  return DequantizePerTensor(input, OneDouble(scale, "scale"), OneInt(zero_point, "zero_point"),
                             quant_min, quant_max, dtype, out_dtype);
}

at::Tensor DequantizePerTensorTensor2(const at::Tensor& input, const at::Tensor& scale,
                                      const at::Tensor& zero_point, const at::Tensor& quant_min,
                                      const at::Tensor& quant_max, at::ScalarType dtype,
                                      c10::optional<at::ScalarType> out_dtype) {
  return DequantizePerTensor(input, OneDouble(scale, "scale"), OneInt(zero_point, "zero_point"),
                             OneInt(quant_min, "quant_min"), OneInt(quant_max, "quant_max"), dtype,
                             out_dtype);
}

// torch's _permute_to_axis_zero: `axis` swapped with dimension 0. Returns the
// permutation (its own inverse).
std::vector<int64_t> AxisToZero(const at::Tensor& x, int64_t* axis) {
  const int64_t dim = x.dim();
  if (*axis < 0) *axis += dim;
  TORCH_CHECK(*axis >= 0 && *axis < dim, "quantized_decomposed: axis out of range for a tensor of ",
              dim, " dimensions");
  std::vector<int64_t> order(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i) order[static_cast<size_t>(i)] = i;
  std::swap(order[0], order[static_cast<size_t>(*axis)]);
  return order;
}

// The per-channel parameters viewed as [channels, 1, ...] against the input
// with its axis first.
at::Tensor ChannelView(const at::Tensor& values, const at::Tensor& scales, int64_t dim) {
  TORCH_CHECK(scales.dim() >= 1, "quantized_decomposed: the scales are not a vector");
  std::vector<int64_t> shape(static_cast<size_t>(dim), 1);
  shape[0] = scales.size(0);
  return values.view(shape);
}

// torch: clamp(round(input * (1.0 / scales)) + zero_points, quant_min, quant_max)
// with the axis first, permuted back, .to(dtype); 1.0 / scales is Python's
// reciprocal() * 1.0.
at::Tensor QuantizePerChannel(const at::Tensor& input, const at::Tensor& scales,
                              const at::Tensor& zero_points, int64_t axis, int64_t quant_min,
                              int64_t quant_max, at::ScalarType dtype) {
  const at::Tensor x = FloatInput(input);
  const std::vector<int64_t> order = AxisToZero(x, &axis);
  CheckBounds(quant_min, quant_max, dtype);
  const at::Tensor y = x.permute(order);
  const at::Tensor s = ChannelView(scales, scales, y.dim());
  const at::Tensor z = ChannelView(zero_points, scales, y.dim());
  const at::Tensor res = at::clamp(
      at::add(at::round(at::mul(y, at::mul(at::reciprocal(s), 1.0))), z), quant_min, quant_max);
  return res.permute(order).to(dtype);
}

// torch: ((input - zero_points) * scales).to(out_dtype) with the axis first,
// permuted back.
at::Tensor DequantizePerChannel(const at::Tensor& input, const at::Tensor& scales,
                                const c10::optional<at::Tensor>& zero_points, int64_t axis,
                                int64_t quant_min, int64_t quant_max, at::ScalarType dtype,
                                c10::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK(input.scalar_type() == dtype, "quantized_decomposed: expected an input of dtype ",
              dtype, ", got ", input.scalar_type());
  const std::vector<int64_t> order = AxisToZero(input, &axis);
  CheckBounds(quant_min, quant_max, dtype);
  const at::Tensor y = input.permute(order);
  const at::Tensor s = ChannelView(scales, scales, y.dim());
  at::Tensor res = zero_points.has_value() && zero_points->defined()
                       ? at::mul(at::sub(y, ChannelView(*zero_points, scales, y.dim())), s)
                       : at::mul(y, s);
  return res.to(out_dtype.value_or(at::kFloat)).permute(order);
}

const std::set<std::string>& Names() {
  static const std::set<std::string>* const names =
      new std::set<std::string>{"quantize_per_tensor", "dequantize_per_tensor",
                                "quantize_per_channel", "dequantize_per_channel"};
  return *names;
}

}  // namespace

bool IsQuantizedDecomposedOp(absl::string_view name) {
  return Names().count(std::string(name)) != 0;
}

void RegisterQuantizedDecomposedOps() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (c10::Dispatcher::singleton()
            .findSchema(c10::OperatorName("quantized_decomposed::quantize_per_tensor", ""))
            .has_value()) {
      return;  // torch's own (a process with Python) or an earlier registration
    }
    // Kept for the process's life: the dispatcher holds the registrations.
    auto* lib = new torch::Library(torch::Library::FRAGMENT, "quantized_decomposed", c10::nullopt,
                                   __FILE__, __LINE__);
    lib->def(
        "quantize_per_tensor(Tensor input, float scale, int zero_point, int quant_min, "
        "int quant_max, ScalarType dtype) -> Tensor",
        &QuantizePerTensor);
    lib->def(
        "quantize_per_tensor.tensor(Tensor input, Tensor scale, Tensor zero_point, "
        "int quant_min, int quant_max, ScalarType dtype) -> Tensor",
        &QuantizePerTensorTensor);
    lib->def(
        "quantize_per_tensor.tensor2(Tensor input, Tensor scale, Tensor zero_point, "
        "Tensor quant_min, Tensor quant_max, ScalarType dtype) -> Tensor",
        &QuantizePerTensorTensor2);
    lib->def(
        "dequantize_per_tensor(Tensor input, float scale, int zero_point, int quant_min, "
        "int quant_max, ScalarType dtype, *, ScalarType? out_dtype=None) -> Tensor",
        &DequantizePerTensor);
    lib->def(
        "dequantize_per_tensor.tensor(Tensor input, Tensor scale, Tensor zero_point, "
        "int quant_min, int quant_max, ScalarType dtype, *, ScalarType? out_dtype=None) -> "
        "Tensor",
        &DequantizePerTensorTensor);
    lib->def(
        "dequantize_per_tensor.tensor2(Tensor input, Tensor scale, Tensor zero_point, "
        "Tensor quant_min, Tensor quant_max, ScalarType dtype, *, ScalarType? out_dtype=None) "
        "-> Tensor",
        &DequantizePerTensorTensor2);
    lib->def(
        "quantize_per_channel(Tensor input, Tensor scales, Tensor zero_points, int axis, "
        "int quant_min, int quant_max, ScalarType dtype) -> Tensor",
        &QuantizePerChannel);
    lib->def(
        "dequantize_per_channel(Tensor input, Tensor scales, Tensor? zero_points, int axis, "
        "int quant_min, int quant_max, ScalarType dtype, *, ScalarType? out_dtype=None) -> "
        "Tensor",
        &DequantizePerChannel);
  });
}

}  // namespace modelserver
