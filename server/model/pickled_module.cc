#include "server/model/pickled_module.h"

#include <c10/core/InferenceMode.h>

#include <functional>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/model/checkpoint_check.h"
#include "server/model/checkpoint_reader.h"
#include "server/model/tensor_convert.h"
#include "server/model/vgg.h"
#include "server/model/vgg_model.h"
#include "server/util/status_macros.h"

namespace modelserver {
namespace {

using pickle::Kind;
using pickle::Value;

constexpr char kVgg[] = "torchvision.models.vgg.VGG";
constexpr char kSequential[] = "torch.nn.modules.container.Sequential";
constexpr char kConv[] = "torch.nn.modules.conv.Conv2d";
constexpr char kLinear[] = "torch.nn.modules.linear.Linear";
constexpr char kReLU[] = "torch.nn.modules.activation.ReLU";
constexpr char kMaxPool[] = "torch.nn.modules.pooling.MaxPool2d";
constexpr char kAvgPool[] = "torch.nn.modules.pooling.AvgPool2d";
constexpr char kAdaptiveAvgPool[] = "torch.nn.modules.pooling.AdaptiveAvgPool2d";
constexpr char kBatchNorm[] = "torch.nn.modules.batchnorm.BatchNorm2d";
constexpr char kDropout[] = "torch.nn.modules.dropout.Dropout";
constexpr char kFlatten[] = "torch.nn.modules.flatten.Flatten";

absl::Status Unsupported(const std::string& where, const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrCat(where, ": ", what,
                   "; export the model with torch.jit.script/trace (TORCHSCRIPT) or save "
                   "its state dict instead"));
}

// One module of the pickled tree.
struct Node {
  std::string path;  // "features.0"
  std::string cls;
  const Value* dict = nullptr;                // its __dict__
  std::vector<Node> children;                 // _modules, in order
  std::map<std::string, at::Tensor> tensors;  // _parameters and _buffers (not None)
};

const Value* Attr(const Node& n, const char* name) { return n.dict->Get(name); }

absl::StatusOr<Node> BuildNode(const Value* v, const std::string& path, const TensorMaterializer& m,
                               int depth) {
  const std::string where = path.empty() ? "the model" : absl::StrCat("module '", path, "'");
  if (depth > 64) return Unsupported(where, "modules nest more than 64 deep");
  if (v->kind != Kind::kObject || v->cls == nullptr) {
    return Unsupported(where, absl::StrCat("is a ", pickle::KindName(v->kind), ", not a module"));
  }
  Node n;
  n.path = path;
  n.cls = v->cls->s;
  if (v->state == nullptr || v->state->kind != Kind::kDict) {
    return Unsupported(where, absl::StrCat(n.cls, " has no __dict__"));
  }
  n.dict = v->state;
  for (const char* group : {"_parameters", "_buffers"}) {
    const Value* d = Attr(n, group);
    if (d == nullptr) continue;
    if (d->kind != Kind::kDict) return Unsupported(where, absl::StrCat(group, " is not a dict"));
    for (const auto& [k, t] : d->entries) {
      if (k->kind != Kind::kString) return Unsupported(where, "a tensor name is not a string");
      if (t->kind == Kind::kNone) continue;
      ASSIGN_OR_RETURN(at::Tensor tensor, m.Tensor(*t));
      n.tensors[k->s] = tensor;
    }
  }
  if (const Value* mods = Attr(n, "_modules"); mods != nullptr) {
    if (mods->kind != Kind::kDict) return Unsupported(where, "_modules is not a dict");
    for (const auto& [k, child] : mods->entries) {
      if (k->kind != Kind::kString) return Unsupported(where, "a submodule name is not a string");
      if (child->kind == Kind::kNone) continue;
      ASSIGN_OR_RETURN(Node c,
                       BuildNode(child, path.empty() ? k->s : path + "." + k->s, m, depth + 1));
      n.children.push_back(std::move(c));
    }
  }
  return n;
}

absl::StatusOr<int64_t> Int(const Node& n, const char* name) {
  const Value* v = Attr(n, name);
  if (v == nullptr || v->kind != Kind::kInt) {
    return Unsupported(n.path, absl::StrCat(n.cls, ".", name, " is missing or not an int"));
  }
  return v->i;
}
absl::StatusOr<double> Float(const Node& n, const char* name) {
  const Value* v = Attr(n, name);
  if (v != nullptr && v->kind == Kind::kFloat) return v->f;
  if (v != nullptr && v->kind == Kind::kInt) return static_cast<double>(v->i);
  return Unsupported(n.path, absl::StrCat(n.cls, ".", name, " is missing or not a number"));
}
bool Bool(const Node& n, const char* name, bool fallback) {
  const Value* v = Attr(n, name);
  return v != nullptr && v->kind == Kind::kBool ? v->b : fallback;
}
// An int or a tuple of two ints (kernel_size, stride, padding, ...).
absl::StatusOr<std::vector<int64_t>> Pair(const Node& n, const char* name,
                                          std::vector<int64_t> if_none = {}) {
  const Value* v = Attr(n, name);
  if (v != nullptr && v->kind == Kind::kInt) return std::vector<int64_t>{v->i, v->i};
  if (v != nullptr && v->kind == Kind::kNone && !if_none.empty()) return if_none;
  if (v != nullptr && (v->kind == Kind::kTuple || v->kind == Kind::kList) && v->items.size() == 2 &&
      v->items[0]->kind == Kind::kInt && v->items[1]->kind == Kind::kInt) {
    return std::vector<int64_t>{v->items[0]->i, v->items[1]->i};
  }
  return Unsupported(n.path, absl::StrCat(n.cls, ".", name, " is not an int or a pair of ints"));
}

absl::StatusOr<at::Tensor> Need(const Node& n, const char* name) {
  auto it = n.tensors.find(name);
  if (it == n.tensors.end()) {
    return Unsupported(n.path, absl::StrCat(n.cls, " has no ", name));
  }
  at::Tensor t = it->second;
  if (at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kFloat) t = t.to(at::kFloat);
  return t.contiguous();
}
at::Tensor Maybe(const Node& n, const char* name) {
  auto it = n.tensors.find(name);
  return it == n.tensors.end() ? at::Tensor() : it->second.to(at::kFloat).contiguous();
}

// One step of the generic network.
struct Layer {
  std::function<at::Tensor(const at::Tensor&)> run;
  std::vector<at::Tensor> tensors;  // kept for device moves
};

absl::Status Flatten(const Node& n, std::vector<Layer>* out) {
  if (n.cls == kSequential) {
    for (const Node& c : n.children) RETURN_IF_ERROR(Flatten(c, out));
    return absl::OkStatus();
  }
  if (n.cls == kVgg) {  // forward: features, avgpool, flatten(1), classifier
    std::map<std::string, const Node*> parts;
    for (const Node& c : n.children) parts[c.path.substr(c.path.rfind('.') + 1)] = &c;
    for (const char* p : {"features", "avgpool", "classifier"}) {
      if (parts.count(p) == 0) return Unsupported(n.path, absl::StrCat("VGG without ", p));
    }
    RETURN_IF_ERROR(Flatten(*parts["features"], out));
    RETURN_IF_ERROR(Flatten(*parts["avgpool"], out));
    out->push_back({[](const at::Tensor& x) { return at::flatten(x, 1); }, {}});
    return Flatten(*parts["classifier"], out);
  }
  if (!n.children.empty()) return Unsupported(n.path, absl::StrCat(n.cls, " has submodules"));
  if (n.cls == kConv) {
    ASSIGN_OR_RETURN(at::Tensor w, Need(n, "weight"));
    at::Tensor b = Maybe(n, "bias");
    ASSIGN_OR_RETURN(auto stride, Pair(n, "stride"));
    ASSIGN_OR_RETURN(auto padding, Pair(n, "padding"));
    ASSIGN_OR_RETURN(auto dilation, Pair(n, "dilation"));
    ASSIGN_OR_RETURN(int64_t groups, Int(n, "groups"));
    const Value* mode = Attr(n, "padding_mode");
    if (mode != nullptr && !(mode->kind == Kind::kString && mode->s == "zeros")) {
      return Unsupported(n.path, "Conv2d padding_mode other than 'zeros'");
    }
    out->push_back({[=](const at::Tensor& x) {
                      return at::conv2d(x, w, b, stride, padding, dilation, groups);
                    },
                    {w, b}});
    return absl::OkStatus();
  }
  if (n.cls == kLinear) {
    ASSIGN_OR_RETURN(at::Tensor w, Need(n, "weight"));
    at::Tensor b = Maybe(n, "bias");
    out->push_back({[=](const at::Tensor& x) { return at::linear(x, w, b); }, {w, b}});
    return absl::OkStatus();
  }
  if (n.cls == kBatchNorm) {
    ASSIGN_OR_RETURN(at::Tensor mean, Need(n, "running_mean"));
    ASSIGN_OR_RETURN(at::Tensor var, Need(n, "running_var"));
    at::Tensor w = Maybe(n, "weight"), b = Maybe(n, "bias");
    ASSIGN_OR_RETURN(double eps, Float(n, "eps"));
    out->push_back({[=](const at::Tensor& x) {
                      return at::batch_norm(x, w, b, mean, var, /*training=*/false, 0.1, eps,
                                            /*cudnn_enabled=*/true);
                    },
                    {mean, var, w, b}});
    return absl::OkStatus();
  }
  if (n.cls == kReLU) {
    out->push_back({[](const at::Tensor& x) { return at::relu(x); }, {}});
    return absl::OkStatus();
  }
  if (n.cls == kDropout) return absl::OkStatus();  // eval: identity
  if (n.cls == kMaxPool) {
    ASSIGN_OR_RETURN(auto k, Pair(n, "kernel_size"));
    ASSIGN_OR_RETURN(auto s, Pair(n, "stride", k));
    ASSIGN_OR_RETURN(auto p, Pair(n, "padding"));
    ASSIGN_OR_RETURN(auto d, Pair(n, "dilation"));
    const bool ceil = Bool(n, "ceil_mode", false);
    if (Bool(n, "return_indices", false)) return Unsupported(n.path, "MaxPool2d return_indices");
    out->push_back({[=](const at::Tensor& x) { return at::max_pool2d(x, k, s, p, d, ceil); }, {}});
    return absl::OkStatus();
  }
  if (n.cls == kAvgPool) {
    ASSIGN_OR_RETURN(auto k, Pair(n, "kernel_size"));
    ASSIGN_OR_RETURN(auto s, Pair(n, "stride", k));
    ASSIGN_OR_RETURN(auto p, Pair(n, "padding"));
    const bool ceil = Bool(n, "ceil_mode", false), include = Bool(n, "count_include_pad", true);
    const Value* div = Attr(n, "divisor_override");
    if (div != nullptr && div->kind != Kind::kNone) {
      return Unsupported(n.path, "AvgPool2d divisor_override");
    }
    out->push_back(
        {[=](const at::Tensor& x) { return at::avg_pool2d(x, k, s, p, ceil, include); }, {}});
    return absl::OkStatus();
  }
  if (n.cls == kAdaptiveAvgPool) {
    ASSIGN_OR_RETURN(auto size, Pair(n, "output_size"));
    out->push_back({[=](const at::Tensor& x) { return at::adaptive_avg_pool2d(x, size); }, {}});
    return absl::OkStatus();
  }
  if (n.cls == kFlatten) {
    ASSIGN_OR_RETURN(int64_t start, Int(n, "start_dim"));
    ASSIGN_OR_RETURN(int64_t end, Int(n, "end_dim"));
    out->push_back({[=](const at::Tensor& x) { return at::flatten(x, start, end); }, {}});
    return absl::OkStatus();
  }
  return Unsupported(n.path, absl::StrCat("layer class ", n.cls, " is not supported"));
}

// A tree of allowlisted layers run in order, eval mode. Immutable; thread-safe.
class LayerStackModel : public Model {
 public:
  LayerStackModel(std::vector<Layer> layers, ModelInfo info, int64_t in_channels)
      : layers_(std::move(layers)), info_(std::move(info)), in_channels_(in_channels) {}

  const ModelInfo& info() const override { return info_; }
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
    return absl::UnimplementedError(absl::StrCat("saving a pickled ", info_.architecture, " as ",
                                                 ModelFormatName(format), " is not supported yet"));
  }
  absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const override {
    RETURN_IF_ERROR(ValidateInput(batch.dtype, batch.shape));
    ASSIGN_OR_RETURN(at::Tensor x, ViewHostTensor(batch));
    try {
      c10::InferenceMode guard;
      for (const Layer& l : layers_) x = l.run(x);
      return ToHostTensor(x);
    } catch (const std::exception& e) {
      return TorchError(e, "the model rejected the input", absl::StatusCode::kInvalidArgument);
    }
  }

 private:
  std::vector<Layer> layers_;
  ModelInfo info_;
  int64_t in_channels_;  // of the first Conv2d, 0 when the net does not start with one
};

// Our native VGG when the tree has torchvision's VGG layout, else nullopt.
std::optional<VggConfig> NativeVggConfig(const Node& root) {
  if (root.cls != kVgg || root.children.size() != 3) return std::nullopt;
  const Node& features = root.children[0];
  const Node& avgpool = root.children[1];
  const Node& classifier = root.children[2];
  VggConfig c;
  size_t i = 0;
  const auto& f = features.children;
  while (i < f.size()) {
    if (f[i].cls == kMaxPool) {
      auto k = Pair(f[i], "kernel_size");
      auto s = Pair(f[i], "stride", *k);
      if (!k.ok() || !s.ok() || *k != std::vector<int64_t>{2, 2} || *s != *k ||
          Bool(f[i], "ceil_mode", false)) {
        return std::nullopt;
      }
      c.layers.push_back(VggConfig::kMaxPool);
      ++i;
      continue;
    }
    if (f[i].cls != kConv) return std::nullopt;
    auto k = Pair(f[i], "kernel_size");
    auto p = Pair(f[i], "padding");
    auto s = Pair(f[i], "stride");
    auto out = Int(f[i], "out_channels");
    if (!k.ok() || !p.ok() || !s.ok() || !out.ok() || *k != std::vector<int64_t>{3, 3} ||
        *p != std::vector<int64_t>{1, 1} || *s != std::vector<int64_t>{1, 1}) {
      return std::nullopt;
    }
    c.layers.push_back(static_cast<int>(*out));
    ++i;
    if (i < f.size() && f[i].cls == kBatchNorm) {
      if (!c.batch_norm && c.layers.size() > 1) return std::nullopt;
      c.batch_norm = true;
      ++i;
    } else if (c.batch_norm) {
      return std::nullopt;
    }
    if (i >= f.size() || f[i].cls != kReLU) return std::nullopt;
    ++i;
  }
  auto pool = Pair(avgpool, "output_size");
  if (avgpool.cls != kAdaptiveAvgPool || !pool.ok() || (*pool)[0] != (*pool)[1]) {
    return std::nullopt;
  }
  c.pool = (*pool)[0];
  const auto& cl = classifier.children;
  const char* expected[] = {kLinear, kReLU, kDropout, kLinear, kReLU, kDropout, kLinear};
  if (cl.size() != 7) return std::nullopt;
  for (int j = 0; j < 7; ++j) {
    if (cl[j].cls != expected[j]) return std::nullopt;
  }
  auto hidden = Int(cl[0], "out_features");
  auto classes = Int(cl[6], "out_features");
  if (!hidden.ok() || !classes.ok()) return std::nullopt;
  c.hidden = *hidden;
  c.num_classes = *classes;
  return c;
}

void CollectTensors(const Node& n, StateDict* out) {
  for (const auto& [k, t] : n.tensors) out->emplace_back(n.path + "." + k, t);
  for (const Node& c : n.children) CollectTensors(c, out);
}

}  // namespace

const std::vector<std::string>& PickledModuleClasses() {
  static const auto* classes = new std::vector<std::string>{
      kVgg,     kSequential,      kConv,      kLinear,  kReLU,   kMaxPool,
      kAvgPool, kAdaptiveAvgPool, kBatchNorm, kDropout, kFlatten};
  return *classes;
}

absl::StatusOr<std::shared_ptr<const Model>> LoadPickledModule(const std::string& path,
                                                               const std::string& device,
                                                               bool verify_crc) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  pickle::UnpicklerOptions options;
  options.allowed_classes = PickledModuleClasses();
  options.refusal_hint =
      "torch.save(model) files may only hold torchvision's VGG and the layers torch.nn.Sequential, "
      "Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, Dropout, "
      "Flatten; export other models with torch.jit.script/trace (TORCHSCRIPT) or save their "
      "state dict";
  ASSIGN_OR_RETURN(PickledStateDict parsed, ParseArchivePickle(*zip, path, 64ull << 20, options));
  TensorMaterializer materializer(*zip, parsed.prefix, verify_crc);
  RETURN_IF_ERROR(materializer.LoadStorages(*parsed.pickled));
  ASSIGN_OR_RETURN(Node root, BuildNode(parsed.pickled->root(), "", materializer, 0));
  if (std::optional<VggConfig> config = NativeVggConfig(root)) {
    StateDict sd;
    for (const Node& c : root.children) CollectTensors(c, &sd);
    ASSIGN_OR_RETURN(std::shared_ptr<VggImpl> vgg, VggImpl::Create(*config, std::move(sd)));
    ASSIGN_OR_RETURN(std::shared_ptr<VggModel> model,
                     VggModel::Create(std::move(vgg), ModelFormat::kPickledModule, device));
    return std::shared_ptr<const Model>(std::move(model));
  }
  if (device != "cpu") {
    return absl::UnimplementedError(
        "pickled modules other than torchvision's VGG layout are served on the CPU only");
  }
  std::vector<Layer> layers;
  RETURN_IF_ERROR(Flatten(root, &layers));
  ModelInfo info;
  info.architecture = root.cls;
  info.format = ModelFormat::kPickledModule;
  info.device = device;
  int64_t in_channels = 0;
  for (const Layer& l : layers) {
    for (const at::Tensor& t : l.tensors) {
      if (t.defined()) info.parameter_bytes += t.nbytes();
    }
  }
  // The first layer's input channels, when it is a convolution.
  const Node* first = &root;
  while (!first->children.empty()) first = &first->children[0];
  if (first->cls == kConv) {
    if (auto c = Int(*first, "in_channels"); c.ok()) in_channels = *c;
  }
  return std::shared_ptr<const Model>(
      std::make_shared<LayerStackModel>(std::move(layers), std::move(info), in_channels));
}

}  // namespace modelserver
