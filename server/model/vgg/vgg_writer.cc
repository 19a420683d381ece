#include "server/model/vgg/vgg_writer.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/pickle_writer.h"
#include "server/model/state_dict_writer.h"

namespace modelserver {
namespace {

using Children = std::vector<std::pair<std::string, PyValue>>;
using Attrs = std::vector<std::pair<std::string, PyValue>>;

PyValue OrderedDict() {
  PyValue d;
  d.type = PyValue::Type::kOrderedDict;
  return d;
}

// Builds the pickled object tree of a torchvision VGG, adding its tensors to an
// archive under their state-dict keys.
class VggTree {
 public:
  VggTree(const VggImpl& vgg, TensorArchiveWriter* archive) : archive_(archive) {
    for (auto& [k, t] : vgg.state_dict()) sd_[k] = t;
  }

  absl::StatusOr<PyValue> Build(const VggConfig& c) {
    ASSIGN_OR_RETURN(PyValue features, Features(c));
    ASSIGN_OR_RETURN(PyValue classifier, Classifier(c));
    ASSIGN_OR_RETURN(PyValue pool,
                     Module("torch.nn.modules.pooling", "AdaptiveAvgPool2d", "", {}, {}, {},
                            {{"output_size", PyValue::IntTuple({c.pool, c.pool})}}));
    return Module("torchvision.models.vgg", "VGG", "", {}, {},
                  {{"features", features}, {"avgpool", pool}, {"classifier", classifier}}, {});
  }

 private:
  // features: Conv2d [BatchNorm2d] ReLU per conv, MaxPool2d per 'M'.
  absl::StatusOr<PyValue> Features(const VggConfig& c) {
    Children layers;
    int index = 0;
    int64_t in = c.in_channels;
    for (int v : c.layers) {
      if (v == VggConfig::kMaxPool) {
        ASSIGN_OR_RETURN(PyValue pool, MaxPool());
        layers.push_back({std::to_string(index++), pool});
        continue;
      }
      ASSIGN_OR_RETURN(PyValue conv, Conv(absl::StrCat("features.", index), in, v));
      layers.push_back({std::to_string(index++), conv});
      if (c.batch_norm) {
        ASSIGN_OR_RETURN(PyValue bn, BatchNorm(absl::StrCat("features.", index), v));
        layers.push_back({std::to_string(index++), bn});
      }
      ASSIGN_OR_RETURN(PyValue relu, ReLU());
      layers.push_back({std::to_string(index++), relu});
      in = v;
    }
    return Module("torch.nn.modules.container", "Sequential", "", {}, {}, std::move(layers), {});
  }

  // classifier: Linear ReLU Dropout Linear ReLU Dropout Linear.
  absl::StatusOr<PyValue> Classifier(const VggConfig& c) {
    int64_t channels = c.in_channels;
    for (int v : c.layers) {
      if (v != VggConfig::kMaxPool) channels = v;
    }
    const int64_t in = channels * c.pool * c.pool;
    const int64_t dims[3][2] = {{in, c.hidden}, {c.hidden, c.hidden}, {c.hidden, c.num_classes}};
    Children layers;
    for (int i = 0; i < 7; ++i) {
      absl::StatusOr<PyValue> layer;
      if (i % 3 == 0) {
        layer = Linear(absl::StrCat("classifier.", i), dims[i / 3][0], dims[i / 3][1]);
      } else {
        layer = i % 3 == 1 ? ReLU() : Dropout();
      }
      if (!layer.ok()) return layer.status();
      layers.push_back({std::to_string(i), *std::move(layer)});
    }
    return Module("torch.nn.modules.container", "Sequential", "", {}, {}, std::move(layers), {});
  }

  absl::StatusOr<PyValue> Conv(const std::string& prefix, int64_t in, int64_t out) {
    PyValue padding_list;
    padding_list.type = PyValue::Type::kList;
    for (int k = 0; k < 4; ++k) padding_list.items.push_back(PyValue::Int(1));
    return Module("torch.nn.modules.conv", "Conv2d", prefix, {"weight", "bias"}, {}, {},
                  {{"in_channels", PyValue::Int(in)},
                   {"out_channels", PyValue::Int(out)},
                   {"kernel_size", PyValue::IntTuple({3, 3})},
                   {"stride", PyValue::IntTuple({1, 1})},
                   {"padding", PyValue::IntTuple({1, 1})},
                   {"dilation", PyValue::IntTuple({1, 1})},
                   {"transposed", PyValue::Bool(false)},
                   {"output_padding", PyValue::IntTuple({0, 0})},
                   {"groups", PyValue::Int(1)},
                   {"padding_mode", PyValue::Str("zeros")},
                   {"_reversed_padding_repeated_twice", padding_list}});
  }

  absl::StatusOr<PyValue> BatchNorm(const std::string& prefix, int64_t features) {
    return Module("torch.nn.modules.batchnorm", "BatchNorm2d", prefix, {"weight", "bias"},
                  {"running_mean", "running_var", "num_batches_tracked"}, {},
                  {{"num_features", PyValue::Int(features)},
                   {"eps", PyValue::Float(1e-5)},
                   {"momentum", PyValue::Float(0.1)},
                   {"affine", PyValue::Bool(true)},
                   {"track_running_stats", PyValue::Bool(true)}});
  }

  absl::StatusOr<PyValue> Linear(const std::string& prefix, int64_t in, int64_t out) {
    return Module("torch.nn.modules.linear", "Linear", prefix, {"weight", "bias"}, {}, {},
                  {{"in_features", PyValue::Int(in)}, {"out_features", PyValue::Int(out)}});
  }

  absl::StatusOr<PyValue> MaxPool() {
    return Module("torch.nn.modules.pooling", "MaxPool2d", "", {}, {}, {},
                  {{"kernel_size", PyValue::Int(2)},
                   {"stride", PyValue::Int(2)},
                   {"padding", PyValue::Int(0)},
                   {"dilation", PyValue::Int(1)},
                   {"return_indices", PyValue::Bool(false)},
                   {"ceil_mode", PyValue::Bool(false)}});
  }

  absl::StatusOr<PyValue> ReLU() {
    return Module("torch.nn.modules.activation", "ReLU", "", {}, {}, {},
                  {{"inplace", PyValue::Bool(true)}});
  }

  absl::StatusOr<PyValue> Dropout() {
    return Module("torch.nn.modules.dropout", "Dropout", "", {}, {}, {},
                  {{"p", PyValue::Float(0.5)}, {"inplace", PyValue::Bool(false)}});
  }

  absl::StatusOr<PyValue> Tensor(const std::string& key, bool parameter) {
    auto it = sd_.find(key);
    if (it == sd_.end()) return absl::InternalError(absl::StrCat("no tensor ", key));
    PyValue v;
    v.type = parameter ? PyValue::Type::kParameter : PyValue::Type::kTensor;
    ASSIGN_OR_RETURN(v.tensor, archive_->Add(key, it->second));
    return v;
  }

  // An OrderedDict of the tensors `names`, each named `prefix.name` in the state dict.
  absl::StatusOr<PyValue> Tensors(const std::string& prefix, const std::vector<std::string>& names,
                                  bool parameters) {
    PyValue d = OrderedDict();
    for (const std::string& n : names) {
      ASSIGN_OR_RETURN(PyValue t, Tensor(prefix + "." + n, parameters));
      d.entries.push_back({n, t});
    }
    return d;
  }

  // A module with torch.nn.Module's attributes, its tensors (named under
  // `prefix`), its children and its own attributes.
  absl::StatusOr<PyValue> Module(const std::string& module, const std::string& name,
                                 const std::string& prefix,
                                 const std::vector<std::string>& parameters,
                                 const std::vector<std::string>& buffers, Children children,
                                 Attrs attrs) {
    PyValue m;
    m.type = PyValue::Type::kModule;
    m.module = module;
    m.name = name;
    ASSIGN_OR_RETURN(PyValue params, Tensors(prefix, parameters, /*parameters=*/true));
    ASSIGN_OR_RETURN(PyValue bufs, Tensors(prefix, buffers, /*parameters=*/false));
    PyValue mods = OrderedDict(), empty_set;
    empty_set.type = PyValue::Type::kSet;
    mods.entries = std::move(children);
    m.entries = {{"training", PyValue::Bool(false)},
                 {"_parameters", params},
                 {"_buffers", bufs},
                 {"_non_persistent_buffers_set", empty_set},
                 {"_backward_hooks", OrderedDict()},
                 {"_is_full_backward_hook", PyValue::None()},
                 {"_forward_hooks", OrderedDict()},
                 {"_forward_pre_hooks", OrderedDict()},
                 {"_state_dict_hooks", OrderedDict()},
                 {"_load_state_dict_pre_hooks", OrderedDict()},
                 {"_load_state_dict_post_hooks", OrderedDict()},
                 {"_modules", mods}};
    for (auto& a : attrs) m.entries.push_back(std::move(a));
    return m;
  }

  TensorArchiveWriter* archive_;
  std::map<std::string, at::Tensor> sd_;
};

}  // namespace

absl::Status WriteVggModule(const VggImpl& vgg, const std::string& path) {
  TensorArchiveWriter archive;
  VggTree tree(vgg, &archive);
  ASSIGN_OR_RETURN(PyValue root, tree.Build(vgg.config()));
  return archive.Write(path, PickleValue(root));
}

}  // namespace modelserver
