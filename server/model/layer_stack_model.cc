#include "server/model/layer_stack_model.h"

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/model/torch_model.h"

namespace modelserver {
namespace {

namespace mc = module_class;

// One step of the network.
struct Layer {
  std::function<at::Tensor(const at::Tensor&)> run;
  std::vector<at::Tensor> tensors;  // counted in parameter_bytes
  FloatLayer spec;                  // the same step for --precision int8
};

FloatLayer Spec(FloatLayer::Kind kind) {
  FloatLayer f;
  f.kind = kind;
  return f;
}

// Turns a module tree into layers, materialising tensors as float32.
class LayerBuilder {
 public:
  LayerBuilder(const TensorMaterializer& tensors, const Numerics& numerics)
      : tensors_(tensors), numerics_(numerics) {}

  absl::Status Add(const ModuleNode& n, std::vector<Layer>* out) const {
    if (n.cls == mc::kSequential) {
      for (const ModuleNode& c : n.children) RETURN_IF_ERROR(Add(c, out));
      return absl::OkStatus();
    }
    if (n.cls == mc::kVgg) return AddVgg(n, out);
    if (!n.children.empty())
      return UnsupportedModule(n.path, absl::StrCat(n.cls, " has submodules"));
    using Step = absl::Status (LayerBuilder::*)(const ModuleNode&, std::vector<Layer>*) const;
    static const auto* steps = new std::map<std::string, Step>{
        {mc::kConv, &LayerBuilder::AddConv},
        {mc::kLinear, &LayerBuilder::AddLinear},
        {mc::kBatchNorm, &LayerBuilder::AddBatchNorm},
        {mc::kReLU, &LayerBuilder::AddReLU},
        {mc::kDropout, &LayerBuilder::AddDropout},
        {mc::kMaxPool, &LayerBuilder::AddMaxPool},
        {mc::kAvgPool, &LayerBuilder::AddAvgPool},
        {mc::kAdaptiveAvgPool, &LayerBuilder::AddAdaptiveAvgPool},
        {mc::kFlatten, &LayerBuilder::AddFlatten},
    };
    auto it = steps->find(n.cls);
    if (it == steps->end()) {
      return UnsupportedModule(n.path, absl::StrCat("layer class ", n.cls, " is not supported"));
    }
    return (this->*(it->second))(n, out);
  }

 private:
  // A required float tensor of `n`.
  absl::StatusOr<at::Tensor> Need(const ModuleNode& n, const char* name) const {
    auto it = n.tensors.find(name);
    if (it == n.tensors.end())
      return UnsupportedModule(n.path, absl::StrCat(n.cls, " has no ", name));
    ASSIGN_OR_RETURN(at::Tensor t, tensors_.Tensor(*it->second));
    return numerics_.Apply(t);  // the serving precision and layout, once
  }
  // An optional one: undefined when absent.
  absl::StatusOr<at::Tensor> Maybe(const ModuleNode& n, const char* name) const {
    if (n.tensors.count(name) == 0) return at::Tensor();
    return Need(n, name);
  }

  // torchvision's VGG.forward: features, avgpool, flatten(1), classifier.
  absl::Status AddVgg(const ModuleNode& n, std::vector<Layer>* out) const {
    std::map<std::string, const ModuleNode*> parts;
    for (const ModuleNode& c : n.children) parts[c.Name()] = &c;
    for (const char* p : {"features", "avgpool", "classifier"}) {
      if (parts.count(p) == 0) return UnsupportedModule(n.path, absl::StrCat("VGG without ", p));
    }
    RETURN_IF_ERROR(Add(*parts["features"], out));
    RETURN_IF_ERROR(Add(*parts["avgpool"], out));
    out->push_back({[](const at::Tensor& x) { return at::flatten(x, 1); },
                    {},
                    Spec(FloatLayer::Kind::kFlatten)});
    return Add(*parts["classifier"], out);
  }

  absl::Status AddConv(const ModuleNode& n, std::vector<Layer>* out) const {
    ASSIGN_OR_RETURN(at::Tensor w, Need(n, "weight"));
    ASSIGN_OR_RETURN(at::Tensor b, Maybe(n, "bias"));
    ASSIGN_OR_RETURN(auto stride, n.Pair("stride"));
    ASSIGN_OR_RETURN(auto padding, n.Pair("padding"));
    ASSIGN_OR_RETURN(auto dilation, n.Pair("dilation"));
    ASSIGN_OR_RETURN(int64_t groups, n.Int("groups"));
    const pickle::Value* mode = n.Attr("padding_mode");
    if (mode != nullptr && !(mode->kind == pickle::Kind::kString && mode->s == "zeros")) {
      return UnsupportedModule(n.path, "Conv2d padding_mode other than 'zeros'");
    }
    FloatLayer f = Spec(FloatLayer::Kind::kConv);
    f.weight = w, f.bias = b, f.groups = groups;
    f.stride = {stride[0], stride[1]};
    f.padding = {padding[0], padding[1]};
    f.dilation = {dilation[0], dilation[1]};
    out->push_back({[=](const at::Tensor& x) {
                      return at::conv2d(x, w, b, stride, padding, dilation, groups);
                    },
                    {w, b},
                    std::move(f)});
    return absl::OkStatus();
  }

  absl::Status AddLinear(const ModuleNode& n, std::vector<Layer>* out) const {
    ASSIGN_OR_RETURN(at::Tensor w, Need(n, "weight"));
    ASSIGN_OR_RETURN(at::Tensor b, Maybe(n, "bias"));
    FloatLayer f = Spec(FloatLayer::Kind::kLinear);
    f.weight = w, f.bias = b;
    out->push_back({[=](const at::Tensor& x) { return at::linear(x, w, b); }, {w, b}, f});
    return absl::OkStatus();
  }

  absl::Status AddBatchNorm(const ModuleNode& n, std::vector<Layer>* out) const {
    ASSIGN_OR_RETURN(at::Tensor mean, Need(n, "running_mean"));
    ASSIGN_OR_RETURN(at::Tensor var, Need(n, "running_var"));
    ASSIGN_OR_RETURN(at::Tensor w, Maybe(n, "weight"));
    ASSIGN_OR_RETURN(at::Tensor b, Maybe(n, "bias"));
    ASSIGN_OR_RETURN(double eps, n.Float("eps"));
    FloatLayer f = Spec(FloatLayer::Kind::kBatchNorm);
    f.weight = w, f.bias = b, f.running_mean = mean, f.running_var = var, f.eps = eps;
    out->push_back({[=](const at::Tensor& x) {
                      return at::batch_norm(x, w, b, mean, var, /*training=*/false, 0.1, eps,
                                            /*cudnn_enabled=*/true);
                    },
                    {mean, var, w, b},
                    f});
    return absl::OkStatus();
  }

  absl::Status AddReLU(const ModuleNode&, std::vector<Layer>* out) const {
    out->push_back(
        {[](const at::Tensor& x) { return at::relu(x); }, {}, Spec(FloatLayer::Kind::kReLU)});
    return absl::OkStatus();
  }

  absl::Status AddDropout(const ModuleNode&, std::vector<Layer>*) const {
    return absl::OkStatus();  // eval mode: the identity
  }

  absl::Status AddMaxPool(const ModuleNode& n, std::vector<Layer>* out) const {
    ASSIGN_OR_RETURN(auto k, n.Pair("kernel_size"));
    ASSIGN_OR_RETURN(auto s, n.Pair("stride", k));
    ASSIGN_OR_RETURN(auto p, n.Pair("padding"));
    ASSIGN_OR_RETURN(auto d, n.Pair("dilation"));
    const bool ceil = n.Bool("ceil_mode", false);
    if (n.Bool("return_indices", false))
      return UnsupportedModule(n.path, "MaxPool2d return_indices");
    FloatLayer f = Spec(FloatLayer::Kind::kMaxPool);
    f.kernel = {k[0], k[1]}, f.stride = {s[0], s[1]}, f.padding = {p[0], p[1]};
    f.dilation = {d[0], d[1]}, f.ceil_mode = ceil;
    out->push_back(
        {[=](const at::Tensor& x) { return at::max_pool2d(x, k, s, p, d, ceil); }, {}, f});
    return absl::OkStatus();
  }

  absl::Status AddAvgPool(const ModuleNode& n, std::vector<Layer>* out) const {
    ASSIGN_OR_RETURN(auto k, n.Pair("kernel_size"));
    ASSIGN_OR_RETURN(auto s, n.Pair("stride", k));
    ASSIGN_OR_RETURN(auto p, n.Pair("padding"));
    const bool ceil = n.Bool("ceil_mode", false), include = n.Bool("count_include_pad", true);
    const pickle::Value* div = n.Attr("divisor_override");
    if (div != nullptr && div->kind != pickle::Kind::kNone) {
      return UnsupportedModule(n.path, "AvgPool2d divisor_override");
    }
    FloatLayer f = Spec(FloatLayer::Kind::kAvgPool);
    f.kernel = {k[0], k[1]}, f.stride = {s[0], s[1]}, f.padding = {p[0], p[1]};
    f.ceil_mode = ceil, f.count_include_pad = include;
    out->push_back(
        {[=](const at::Tensor& x) { return at::avg_pool2d(x, k, s, p, ceil, include); }, {}, f});
    return absl::OkStatus();
  }

  absl::Status AddAdaptiveAvgPool(const ModuleNode& n, std::vector<Layer>* out) const {
    ASSIGN_OR_RETURN(auto size, n.Pair("output_size"));
    FloatLayer f = Spec(FloatLayer::Kind::kAdaptiveAvgPool);
    f.output_size = {size[0], size[1]};
    out->push_back({[=](const at::Tensor& x) { return at::adaptive_avg_pool2d(x, size); }, {}, f});
    return absl::OkStatus();
  }

  absl::Status AddFlatten(const ModuleNode& n, std::vector<Layer>* out) const {
    ASSIGN_OR_RETURN(int64_t start, n.Int("start_dim"));
    ASSIGN_OR_RETURN(int64_t end, n.Int("end_dim"));
    FloatLayer f = Spec(FloatLayer::Kind::kFlatten);
    f.start_dim = start, f.end_dim = end;
    out->push_back({[=](const at::Tensor& x) { return at::flatten(x, start, end); }, {}, f});
    return absl::OkStatus();
  }

  const TensorMaterializer& tensors_;
  const Numerics numerics_;
};

// A tree of allowlisted layers run in order, eval mode, on the CPU. Immutable;
// thread-safe.
class LayerStackModel : public TorchModel {
 public:
  LayerStackModel(std::vector<Layer> layers, ModelInfo info, int64_t in_channels,
                  const Numerics& numerics)
      : TorchModel(std::move(info), at::Device(at::kCPU), numerics,
                   absl::StatusCode::kInvalidArgument, "the model rejected the input"),
        layers_(std::move(layers)),
        in_channels_(in_channels) {}

  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override {
    if (dtype != DType::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat("input dtype ", DTypeName(dtype), " is not supported, expected float32"));
    }
    if (shape.size() < 2 || shape[0] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input shape ", ShapeString(shape), " needs a batch dimension and at least one sample"));
    }
    if (in_channels_ > 0 && (shape.size() != 4 || shape[1] != in_channels_)) {
      return absl::InvalidArgumentError(absl::StrCat("input shape ", ShapeString(shape),
                                                     ", expected [N,", in_channels_, ",H,W]"));
    }
    return absl::OkStatus();
  }
  bool IsUnbatched(const std::vector<int64_t>&) const override { return false; }
  std::vector<int64_t> WarmupShape() const override { return {}; }  // input size unknown
  absl::Status Save(ModelFormat format, const std::string&) const override {
    return absl::UnimplementedError(absl::StrCat("saving a pickled ", info().architecture, " as ",
                                                 ModelFormatName(format), " is not supported yet"));
  }

 protected:
  absl::StatusOr<at::Tensor> Run(const at::Tensor& input) const override {
    at::Tensor x = input;
    for (const Layer& l : layers_) x = l.run(x);
    return x;
  }

 private:
  std::vector<Layer> layers_;
  int64_t in_channels_;  // of the first Conv2d, 0 when the net does not start with one
};

// The input channels of the first layer, when it is a convolution; else 0.
int64_t FirstConvInChannels(const ModuleNode& root) {
  const ModuleNode* first = &root;
  while (!first->children.empty()) first = &first->children[0];
  if (first->cls != mc::kConv) return 0;
  auto c = first->Int("in_channels");
  return c.ok() ? *c : 0;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> BuildLayerStackModel(const ModuleNode& root,
                                                                  const TensorMaterializer& tensors,
                                                                  const Numerics& numerics,
                                                                  std::vector<FloatLayer>* spec) {
  std::vector<Layer> layers;
  RETURN_IF_ERROR(LayerBuilder(tensors, numerics).Add(root, &layers));
  if (spec != nullptr) {
    for (const Layer& l : layers) spec->push_back(l.spec);
  }
  ModelInfo info;
  info.architecture = root.cls;
  info.format = ModelFormat::kPickledModule;
  info.device = "cpu";
  for (const Layer& l : layers) AddParameterBytes(l.tensors, &info);
  return std::shared_ptr<const Model>(std::make_shared<LayerStackModel>(
      std::move(layers), std::move(info), FirstConvInChannels(root), numerics));
}

}  // namespace modelserver
