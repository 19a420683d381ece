#include "server/model/int8_network.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/npy.h"
#include "common/status_macros.h"
#include "server/model/device.h"
#include "server/model/tensor_convert.h"
#include "server/model/torch_model.h"
#include "server/util/logging.h"

namespace modelserver {
namespace {

// The samples run through the float network at once while observing ranges, and
// through both models when their outputs are compared.
constexpr int64_t kCalibrationBatch = 8;

// Affine uint8 parameters for the observed range [lo, hi], as MinMaxObserver
// (quint8, per tensor, affine): the range always holds 0.
struct QParams {
  double scale = 1;
  int64_t zero_point = 0;
};

QParams ActivationParams(double lo, double hi, bool reduce_range) {
  // In float32, as the observer computes them (its min / max are float32 tensors).
  const float qmax = reduce_range ? 127.0f : 255.0f;
  const float min_neg = std::min(static_cast<float>(lo), 0.0f);
  const float max_pos = std::max(static_cast<float>(hi), 0.0f);
  // torch.finfo(torch.float32).eps is MinMaxObserver's smallest scale.
  const float scale = std::max((max_pos - min_neg) / qmax, std::numeric_limits<float>::epsilon());
  QParams q;
  q.scale = scale;
  q.zero_point = std::clamp<int64_t>(-static_cast<int64_t>(std::nearbyint(min_neg / scale)), 0,
                                     static_cast<int64_t>(qmax));
  return q;
}

// One quantized step.
struct Step {
  FloatLayer::Kind kind;
  bool relu = false;   // fused into a convolution or linear layer
  c10::IValue packed;  // prepacked int8 weights (kConv, kLinear)
  QParams out;         // output parameters (kConv, kLinear)
  int64_t weight_bytes = 0;
  FloatLayer layer;  // the float layer (pooling and flatten arguments; folded weights)
};

c10::OperatorHandle Op(const char* name, const char* overload) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
}

// Runs `op` boxed on `args`; its one result.
c10::IValue CallBoxed(const c10::OperatorHandle& op, std::vector<c10::IValue> args) {
  torch::jit::Stack stack(std::move(args));
  op.callBoxed(&stack);
  TORCH_CHECK(stack.size() == 1, "int8: ", op.schema().name(), " returned ", stack.size(),
              " values");
  return std::move(stack[0]);
}

// The network with batch norms folded and ReLUs marked for fusion, in float32.
class FloatPlan {
 public:
  static absl::StatusOr<FloatPlan> Make(std::vector<FloatLayer> layers) {
    FloatPlan plan;
    for (size_t i = 0; i < layers.size(); ++i) {
      FloatLayer& l = layers[i];
      if (l.kind == FloatLayer::Kind::kBatchNorm) {
        if (plan.steps_.empty() || plan.steps_.back().kind != FloatLayer::Kind::kConv ||
            plan.steps_.back().relu) {
          return absl::FailedPreconditionError(absl::StrCat(
              "precision int8: layer ", i,
              " is a BatchNorm2d that does not follow a Conv2d (int8 folds each batch norm "
              "into the convolution before it); serve this model in fp32 or bf16"));
        }
        Fold(l, &plan.steps_.back().layer);
        continue;
      }
      if (l.kind == FloatLayer::Kind::kReLU && !plan.steps_.empty() &&
          (plan.steps_.back().kind == FloatLayer::Kind::kConv ||
           plan.steps_.back().kind == FloatLayer::Kind::kLinear) &&
          !plan.steps_.back().relu) {
        plan.steps_.back().relu = true;
        continue;
      }
      Step s;
      s.kind = l.kind;
      s.layer = std::move(l);
      plan.steps_.push_back(std::move(s));
    }
    return plan;
  }

  std::vector<Step>& steps() { return steps_; }

  // The float network; `observe(k, y)` sees the input (k = 0) and the output of
  // each convolution and linear layer (k = its step's index + 1).
  template <typename Observe>
  at::Tensor Forward(at::Tensor x, Observe&& observe) const {
    observe(0, x);
    for (size_t i = 0; i < steps_.size(); ++i) {
      const Step& s = steps_[i];
      const FloatLayer& l = s.layer;
      switch (s.kind) {
        case FloatLayer::Kind::kConv:
          x = at::conv2d(x, l.weight, l.bias, l.stride, l.padding, l.dilation, l.groups);
          if (s.relu) x = at::relu(x);
          observe(i + 1, x);
          break;
        case FloatLayer::Kind::kLinear:
          x = at::linear(x, l.weight, l.bias);
          if (s.relu) x = at::relu(x);
          observe(i + 1, x);
          break;
        default:
          x = RunShared(l, x);
      }
    }
    return x;
  }

  // The layers that run the same on float and quantized tensors.
  static at::Tensor RunShared(const FloatLayer& l, const at::Tensor& x) {
    switch (l.kind) {
      case FloatLayer::Kind::kReLU:
        return at::relu(x);
      case FloatLayer::Kind::kMaxPool:
        return at::max_pool2d(x, l.kernel, l.stride, l.padding, l.dilation, l.ceil_mode);
      case FloatLayer::Kind::kAvgPool:
        return at::avg_pool2d(x, l.kernel, l.stride, l.padding, l.ceil_mode, l.count_include_pad);
      case FloatLayer::Kind::kAdaptiveAvgPool:
        return at::adaptive_avg_pool2d(x, l.output_size);
      case FloatLayer::Kind::kFlatten:
        return at::flatten(x, l.start_dim, l.end_dim);
      default:
        TORCH_CHECK(false, "int8: unexpected layer");
    }
  }

 private:
  // conv(x) then batch_norm  ==  conv'(x) with w' = w * g / sqrt(var + eps),
  // b' = (b - mean) * g / sqrt(var + eps) + beta (torch.ao's fuse_conv_bn_weights).
  // The same operations in the same order as fuse_conv_bn_weights (torch 1.13 to 2.6).
  static void Fold(const FloatLayer& bn, FloatLayer* conv) {
    const at::Tensor inv = at::rsqrt(bn.running_var + bn.eps);
    const at::Tensor w = bn.weight.defined() ? bn.weight : at::ones_like(bn.running_mean);
    const at::Tensor beta = bn.bias.defined() ? bn.bias : at::zeros_like(bn.running_mean);
    const at::Tensor b = conv->bias.defined() ? conv->bias : at::zeros_like(bn.running_mean);
    conv->weight = (conv->weight * (w * inv).reshape({-1, 1, 1, 1})).contiguous();
    conv->bias = ((b - bn.running_mean) * inv * w + beta).contiguous();
  }

  std::vector<Step> steps_;
};

// The quantized network: immutable after Build.
class Int8Network {
 public:
  Int8Network(std::vector<Step> steps, QParams input) : steps_(std::move(steps)), input_(input) {}

  at::Tensor Forward(const at::Tensor& x) const {
    static const c10::OperatorHandle conv = Op("quantized::conv2d", "new");
    static const c10::OperatorHandle conv_relu = Op("quantized::conv2d_relu", "new");
    static const c10::OperatorHandle linear = Op("quantized::linear", "");
    static const c10::OperatorHandle linear_relu = Op("quantized::linear_relu", "");
    at::Tensor q = at::quantize_per_tensor(x.to(at::kFloat).contiguous(), input_.scale,
                                           input_.zero_point, at::kQUInt8);
    for (const Step& s : steps_) {
      switch (s.kind) {
        case FloatLayer::Kind::kConv:
          q = CallBoxed(s.relu ? conv_relu : conv, {q, s.packed, s.out.scale, s.out.zero_point})
                  .toTensor();
          break;
        case FloatLayer::Kind::kLinear:
          q = CallBoxed(s.relu ? linear_relu : linear, {q, s.packed, s.out.scale, s.out.zero_point})
                  .toTensor();
          break;
        default:
          q = FloatPlan::RunShared(s.layer, q);
      }
    }
    return q.dequantize();
  }

  int64_t weight_bytes() const {
    int64_t n = 0;
    for (const Step& s : steps_) n += s.weight_bytes;
    return n;
  }

 private:
  std::vector<Step> steps_;
  QParams input_;
};

// The int8 network served as a Model; inputs, shapes, Save and the rest are the
// float model's.
class Int8Model : public TorchModel {
 public:
  Int8Model(std::shared_ptr<const Model> float_model, std::shared_ptr<const Int8Network> net,
            ModelInfo info)
      : TorchModel(std::move(info), at::Device(at::kCPU), Numerics{Precision::kInt8, false},
                   absl::StatusCode::kInternal, "the int8 forward pass"),
        float_(std::move(float_model)),
        net_(std::move(net)) {}

  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override {
    return float_->ValidateInput(dtype, shape);
  }
  bool IsUnbatched(const std::vector<int64_t>& shape) const override {
    return float_->IsUnbatched(shape);
  }
  std::vector<int64_t> WarmupShape() const override { return float_->WarmupShape(); }
  int64_t ForwardBytes(const std::vector<int64_t>& shape) const override {
    return float_->ForwardBytes(shape);  // the float pass's: int8 activations are smaller
  }
  absl::Status Save(ModelFormat format, const std::string& path) const override {
    return float_->Save(format, path);  // the version's float weights
  }

 protected:
  absl::StatusOr<at::Tensor> Run(const at::Tensor& x) const override { return net_->Forward(x); }

 private:
  std::shared_ptr<const Model> float_;
  std::shared_ptr<const Int8Network> net_;
};

// The calibration samples: a float32 .npy the model takes as a batch.
absl::StatusOr<HostTensor> ReadCalibration(const Int8Options& options, const Model& float_model) {
  constexpr char kHow[] =
      "; int8 is calibrated on samples of the version's own inputs (never random ones): "
      "upload them with `model-client upload --calibration samples.npy` (a float32 .npy of "
      "[samples, ...] as the model takes them, e.g. numpy.save('samples.npy', batch)), or copy "
      "that file into the version directory as calibration.npy (or images into its "
      "calibration/ folder, run through the version's preprocess); or serve it in fp32 or bf16";
  if (options.calibration_samples != nullptr) {
    const HostTensor& t = *options.calibration_samples;
    if (t.shape.empty() || t.shape[0] < 1 || !float_model.ValidateInput(t.dtype, t.shape).ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("precision int8: the calibration images, preprocessed, are ",
                       ShapeString(t.shape), ", not a batch this model takes: ",
                       float_model.ValidateInput(t.dtype, t.shape).message()));
    }
    return t;
  }
  if (options.calibration_path.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("precision int8: ", options.what, " has no calibration samples", kHow));
  }
  std::ifstream in(options.calibration_path, std::ios::binary | std::ios::ate);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat("precision int8: cannot read ", options.calibration_path, kHow));
  }
  const std::streamoff size = in.tellg();
  if (size < 0 || size > kMaxCalibrationBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("precision int8: ", options.calibration_path, " has ", size,
                     " bytes; calibration samples may take at most ", kMaxCalibrationBytes,
                     " (a few dozen samples are enough)"));
  }
  in.seekg(0);
  std::string bytes(static_cast<size_t>(size), '\0');
  if (!in.read(bytes.data(), size)) {
    return absl::FailedPreconditionError(
        absl::StrCat("precision int8: cannot read ", options.calibration_path));
  }
  absl::StatusOr<HostTensor> t = ParseNpy(bytes);
  if (!t.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("precision int8: ", options.calibration_path, ": ", t.status().message()));
  }
  if (t->dtype != DType::kFloat32 || t->shape.empty() || t->shape[0] < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("precision int8: ", options.calibration_path, " holds ", DTypeName(t->dtype),
                     " ", ShapeString(t->shape),
                     "; calibration samples are float32 [samples, ...] with at least one"));
  }
  if (float_model.IsUnbatched(t->shape) || !float_model.ValidateInput(t->dtype, t->shape).ok()) {
    const absl::Status why = float_model.ValidateInput(t->dtype, t->shape);
    return absl::FailedPreconditionError(
        absl::StrCat("precision int8: the calibration samples ", ShapeString(t->shape),
                     " are not a batch this model takes", why.ok() ? "" : ": ", why.message()));
  }
  return t;
}

// Samples [begin, end) of `all` as a HostTensor batch.
HostTensor Slice(const HostTensor& all, int64_t begin, int64_t end) {
  const size_t per = all.data.size() / static_cast<size_t>(all.shape[0]);
  HostTensor t;
  t.dtype = all.dtype;
  t.shape = all.shape;
  t.shape[0] = end - begin;
  t.data =
      all.data.substr(static_cast<size_t>(begin) * per, static_cast<size_t>(end - begin) * per);
  return t;
}

// Top-1 agreement and the worst cosine of int8 against float on every sample.
// `layers_first` is what the float layers (the plan int8 was made from) computed on
// the first batch: the float model must compute the same, or the layers are not
// its network (FAILED_PRECONDITION).
absl::StatusOr<Int8Accuracy> Compare(const Model& float_model, const Model& int8_model,
                                     const HostTensor& samples, const at::Tensor& layers_first,
                                     const std::string& what) {
  Int8Accuracy a;
  a.samples = samples.shape[0];
  a.worst_cosine = 1;
  int64_t agree = 0;
  for (int64_t b = 0; b < samples.shape[0]; b += kCalibrationBatch) {
    const HostTensor batch = Slice(samples, b, std::min(samples.shape[0], b + kCalibrationBatch));
    ASSIGN_OR_RETURN(HostTensor f, float_model.Forward(batch));
    ASSIGN_OR_RETURN(HostTensor q, int8_model.Forward(batch));
    ASSIGN_OR_RETURN(at::Tensor ft, ViewHostTensor(f));
    ASSIGN_OR_RETURN(at::Tensor qt, ViewHostTensor(q));
    ft = ft.reshape({ft.size(0), -1}).to(at::kDouble);
    qt = qt.reshape({qt.size(0), -1}).to(at::kDouble);
    if (b == 0) {
      const at::Tensor lt = layers_first.reshape({layers_first.size(0), -1}).to(at::kDouble);
      const double largest = ft.numel() == 0 ? 0 : ft.abs().max().item<double>();
      const double diff = lt.sizes() != ft.sizes() ? std::numeric_limits<double>::infinity()
                                                   : (lt - ft).abs().max().item<double>();
      if (!(diff <= 1e-3 * largest)) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "precision int8: the layers read from %s do not compute what its float model "
            "computes (outputs %s against %s, largest difference %g of outputs up to %g), so "
            "they are not its network; serve it in fp32 or bf16",
            what, ShapeString(std::vector<int64_t>(lt.sizes().begin(), lt.sizes().end())),
            ShapeString(std::vector<int64_t>(ft.sizes().begin(), ft.sizes().end())), diff,
            largest));
      }
    }
    agree += at::eq(ft.argmax(1), qt.argmax(1)).sum().item<int64_t>();
    const at::Tensor dot = (ft * qt).sum(1);
    const at::Tensor norms = ft.norm(2, 1) * qt.norm(2, 1);
    // Two zero outputs agree; one zero output against another does not.
    const at::Tensor cos = at::where(
        norms > 0, dot / norms.clamp_min(1e-300),
        at::where(ft.norm(2, 1) + qt.norm(2, 1) > 0, at::zeros_like(dot), at::ones_like(dot)));
    a.worst_cosine = std::min(a.worst_cosine, cos.min().item<double>());
  }
  a.top1_agreement = static_cast<double>(agree) / static_cast<double>(a.samples);
  return a;
}

bool ReduceRange() {
  // fbgemm / x86 kernels without VNNI can saturate 16-bit sums of u8 x s8
  // products: PyTorch's qconfigs for them observe 7-bit activations.
  const std::string engine = absl::AsciiStrToLower(QuantizedEngine());
  return engine == "fbgemm" || engine == "x86";
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> QuantizeInt8(std::vector<FloatLayer> layers,
                                                          std::shared_ptr<const Model> float_model,
                                                          const Int8Options& options) {
  ASSIGN_OR_RETURN(const HostTensor samples, ReadCalibration(options, *float_model));
  ASSIGN_OR_RETURN(FloatPlan plan, FloatPlan::Make(std::move(layers)));
  std::shared_ptr<const Int8Network> net;
  QParams input;
  at::Tensor layers_first;  // the float layers' outputs on the first batch
  try {
    c10::InferenceMode guard;
    // Observe: min / max of the input and of each convolution's and linear
    // layer's output over every sample.
    std::vector<std::pair<double, double>> ranges(
        plan.steps().size() + 1,
        {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()});
    ASSIGN_OR_RETURN(const at::Tensor all, ViewHostTensor(samples));
    for (int64_t b = 0; b < all.size(0); b += kCalibrationBatch) {
      at::Tensor y =
          plan.Forward(all.slice(0, b, std::min(all.size(0), b + kCalibrationBatch)),
                       [&ranges](size_t k, const at::Tensor& y) {
                         ranges[k].first = std::min(ranges[k].first, y.min().item<double>());
                         ranges[k].second = std::max(ranges[k].second, y.max().item<double>());
                       });
      if (b == 0) layers_first = std::move(y);
    }
    if (!std::isfinite(ranges[0].first) || !std::isfinite(ranges[0].second)) {
      return absl::FailedPreconditionError(
          absl::StrCat("precision int8: the calibration samples hold values from ", ranges[0].first,
                       " to ", ranges[0].second, "; they must be finite"));
    }
    const bool reduce = ReduceRange();
    input = ActivationParams(ranges[0].first, ranges[0].second, reduce);
    static const c10::OperatorHandle conv_prepack = Op("quantized::conv2d_prepack", "");
    static const c10::OperatorHandle linear_prepack = Op("quantized::linear_prepack", "");
    for (size_t i = 0; i < plan.steps().size(); ++i) {
      Step& s = plan.steps()[i];
      if (s.kind != FloatLayer::Kind::kConv && s.kind != FloatLayer::Kind::kLinear) continue;
      const auto [lo, hi] = ranges[i + 1];
      if (!std::isfinite(lo) || !std::isfinite(hi)) {
        return absl::FailedPreconditionError(
            absl::StrCat("precision int8: the float model's layer ", i, " computes ", lo, " .. ",
                         hi, " on the calibration samples; int8 needs finite activations"));
      }
      s.out = ActivationParams(lo, hi, reduce);
      // Per output channel, symmetric: scale = max|w| / 127.5 in float32, zero
      // point 0 (PerChannelMinMaxObserver, per_channel_symmetric, qint8).
      const at::Tensor w = s.layer.weight.to(at::kFloat).contiguous();
      const at::Tensor amax = w.abs().reshape({w.size(0), -1}).amax(1);
      const at::Tensor scales =
          (amax / 127.5).clamp_min(static_cast<double>(std::numeric_limits<float>::epsilon()));
      const at::Tensor zeros = at::zeros({w.size(0)}, at::kLong);
      const at::Tensor qw =
          at::quantize_per_channel(w, scales.to(at::kDouble), zeros, 0, at::kQInt8);
      const c10::IValue bias = s.layer.bias.defined()
                                   ? c10::IValue(s.layer.bias.to(at::kFloat).contiguous())
                                   : c10::IValue();
      if (s.kind == FloatLayer::Kind::kConv) {
        s.packed = CallBoxed(conv_prepack, {qw, bias, c10::List<int64_t>(s.layer.stride),
                                            c10::List<int64_t>(s.layer.padding),
                                            c10::List<int64_t>(s.layer.dilation), s.layer.groups});
      } else {
        s.packed = CallBoxed(linear_prepack, {qw, bias});
      }
      s.weight_bytes = w.numel() + (s.layer.bias.defined() ? 4 * s.layer.bias.numel() : 0);
      s.layer.weight = at::Tensor();  // the float model keeps its own
      s.layer.bias = at::Tensor();
    }
    net = std::make_shared<const Int8Network>(std::move(plan.steps()), input);
  } catch (const std::exception& e) {
    return TorchError(e, "quantizing the model to int8", absl::StatusCode::kFailedPrecondition);
  }
  ModelInfo info = float_model->info();
  info.parameter_bytes += net->weight_bytes();
  ASSIGN_OR_RETURN(const Int8Accuracy accuracy,
                   Compare(*float_model, Int8Model(float_model, net, info), samples, layers_first,
                           options.what));
  const std::string numbers =
      absl::StrFormat("top-1 agreement %.4f (%d of %d calibration samples), worst cosine %.6f",
                      accuracy.top1_agreement,
                      static_cast<int64_t>(std::llround(accuracy.top1_agreement *
                                                        static_cast<double>(accuracy.samples))),
                      accuracy.samples, accuracy.worst_cosine);
  if (accuracy.top1_agreement < options.min_agreement) {
    return absl::FailedPreconditionError(absl::StrCat(
        "precision int8: ", options.what, " in int8 against its float model: ", numbers,
        ", below --min_int8_agreement ", options.min_agreement,
        "; serve it in fp32 or bf16, add calibration samples that cover its inputs, or lower "
        "--min_int8_agreement"));
  }
  LOG_INFO(options.what, " quantized to int8 (engine ", QuantizedEngine(), "): ", numbers);
  info.int8_samples = accuracy.samples;
  info.int8_top1_agreement = accuracy.top1_agreement;
  info.int8_worst_cosine = accuracy.worst_cosine;
  return std::shared_ptr<const Model>(
      std::make_shared<Int8Model>(std::move(float_model), std::move(net), std::move(info)));
}

}  // namespace modelserver
