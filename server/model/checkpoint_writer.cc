#include "server/model/checkpoint_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>

#include "absl/strings/str_cat.h"
#include "server/model/pickle_writer.h"
#include "server/model/tensor_convert.h"
#include "server/model/vgg.h"
#include "server/model/zip_writer.h"
#include "server/util/status_macros.h"

namespace modelserver {
namespace {

absl::StatusOr<pickle::StorageType> StorageTypeOf(at::ScalarType t) {
  using pickle::StorageType;
  switch (t) {
    case at::kFloat:
      return StorageType::kFloat;
    case at::kDouble:
      return StorageType::kDouble;
    case at::kHalf:
      return StorageType::kHalf;
    case at::kBFloat16:
      return StorageType::kBFloat16;
    case at::kLong:
      return StorageType::kLong;
    case at::kInt:
      return StorageType::kInt;
    case at::kShort:
      return StorageType::kShort;
    case at::kChar:
      return StorageType::kChar;
    case at::kByte:
      return StorageType::kByte;
    case at::kBool:
      return StorageType::kBool;
    case at::kComplexFloat:
      return StorageType::kComplexFloat;
    case at::kComplexDouble:
      return StorageType::kComplexDouble;
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("cannot save dtype ", c10::toString(t)));
}

PickledTensor Describe(const std::string& key, const at::Tensor& t, size_t index,
                       pickle::StorageType type) {
  PickledTensor p;
  p.key = key;
  p.type = type;
  p.storage_key = std::to_string(index);
  p.numel = t.numel();
  p.sizes.assign(t.sizes().begin(), t.sizes().end());
  // Contiguous strides of the saved copy.
  p.strides.assign(p.sizes.size(), 1);
  for (int d = static_cast<int>(p.sizes.size()) - 2; d >= 0; --d) {
    p.strides[d] = p.strides[d + 1] * std::max<int64_t>(1, p.sizes[d + 1]);
  }
  return p;
}

// A torch.save archive: archive/data.pkl, one record per storage, version, byteorder.
absl::Status WriteArchive(int fd, const std::string& pkl, const std::vector<at::Tensor>& storages,
                          const std::vector<std::string>& names) {
  ZipWriter zip(fd);
  RETURN_IF_ERROR(zip.Add("archive/data.pkl", pkl.data(), pkl.size()));
  static constexpr char kByteOrder[] = "little";
  RETURN_IF_ERROR(zip.Add("archive/byteorder", kByteOrder, sizeof(kByteOrder) - 1));
  for (size_t i = 0; i < storages.size(); ++i) {
    at::Tensor t;
    try {
      t = storages[i].to(at::kCPU).contiguous();
    } catch (const std::exception& e) {
      return TorchError(e, absl::StrCat("copying ", names[i], " to the CPU"));
    }
    RETURN_IF_ERROR(zip.Add(absl::StrCat("archive/data/", i), t.data_ptr(), t.nbytes()));
  }
  static constexpr char kVersion[] = "3\n";
  RETURN_IF_ERROR(zip.Add("archive/version", kVersion, sizeof(kVersion) - 1));
  return zip.Finish();
}

absl::Status WriteFile(const std::string& path, const std::function<absl::Status(int)>& write) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  absl::Status s = write(fd);
  if (s.ok() && fsync(fd) != 0) {
    s = absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(errno)));
  }
  close(fd);
  return s;
}

// Builds the pickled object tree of a torchvision VGG (torch 1.13's attributes;
// later versions fill in what they add in Module.__setstate__).
class VggTree {
 public:
  explicit VggTree(const VggImpl& vgg) {
    for (auto& [k, t] : vgg.state_dict()) sd_[k] = t;
  }

  absl::StatusOr<PyValue> Build(const VggConfig& c) {
    std::vector<std::pair<std::string, PyValue>> features;
    int index = 0;
    int64_t in = c.in_channels;
    for (int v : c.layers) {
      if (v == VggConfig::kMaxPool) {
        features.push_back({std::to_string(index++),
                            *Module("torch.nn.modules.pooling", "MaxPool2d", "", {}, {}, {},
                                    {{"kernel_size", PyValue::Int(2)},
                                     {"stride", PyValue::Int(2)},
                                     {"padding", PyValue::Int(0)},
                                     {"dilation", PyValue::Int(1)},
                                     {"return_indices", PyValue::Bool(false)},
                                     {"ceil_mode", PyValue::Bool(false)}})});
        continue;
      }
      const std::string conv = absl::StrCat("features.", index);
      PyValue padding_list;
      padding_list.type = PyValue::Type::kList;
      for (int k = 0; k < 4; ++k) padding_list.items.push_back(PyValue::Int(1));
      ASSIGN_OR_RETURN(PyValue conv_module,
                       Module("torch.nn.modules.conv", "Conv2d", conv, {"weight", "bias"}, {}, {},
                              {{"in_channels", PyValue::Int(in)},
                               {"out_channels", PyValue::Int(v)},
                               {"kernel_size", PyValue::IntTuple({3, 3})},
                               {"stride", PyValue::IntTuple({1, 1})},
                               {"padding", PyValue::IntTuple({1, 1})},
                               {"dilation", PyValue::IntTuple({1, 1})},
                               {"transposed", PyValue::Bool(false)},
                               {"output_padding", PyValue::IntTuple({0, 0})},
                               {"groups", PyValue::Int(1)},
                               {"padding_mode", PyValue::Str("zeros")},
                               {"_reversed_padding_repeated_twice", padding_list}}));
      features.push_back({std::to_string(index++), conv_module});
      if (c.batch_norm) {
        ASSIGN_OR_RETURN(
            PyValue bn,
            Module("torch.nn.modules.batchnorm", "BatchNorm2d", absl::StrCat("features.", index),
                   {"weight", "bias"}, {"running_mean", "running_var", "num_batches_tracked"}, {},
                   {{"num_features", PyValue::Int(v)},
                    {"eps", PyValue::Float(1e-5)},
                    {"momentum", PyValue::Float(0.1)},
                    {"affine", PyValue::Bool(true)},
                    {"track_running_stats", PyValue::Bool(true)}}));
        features.push_back({std::to_string(index++), bn});
      }
      features.push_back({std::to_string(index++), ReLU()});
      in = v;
    }
    std::vector<std::pair<std::string, PyValue>> classifier;
    const int64_t dims[3][2] = {
        {in * c.pool * c.pool, c.hidden}, {c.hidden, c.hidden}, {c.hidden, c.num_classes}};
    for (int i = 0; i < 7; ++i) {
      if (i % 3 == 0) {
        ASSIGN_OR_RETURN(PyValue lin,
                         Module("torch.nn.modules.linear", "Linear", absl::StrCat("classifier.", i),
                                {"weight", "bias"}, {}, {},
                                {{"in_features", PyValue::Int(dims[i / 3][0])},
                                 {"out_features", PyValue::Int(dims[i / 3][1])}}));
        classifier.push_back({std::to_string(i), lin});
      } else if (i % 3 == 1) {
        classifier.push_back({std::to_string(i), ReLU()});
      } else {
        classifier.push_back(
            {std::to_string(i),
             *Module("torch.nn.modules.dropout", "Dropout", "", {}, {}, {},
                     {{"p", PyValue::Float(0.5)}, {"inplace", PyValue::Bool(false)}})});
      }
    }
    ASSIGN_OR_RETURN(PyValue f,
                     Module("torch.nn.modules.container", "Sequential", "", {}, {}, features, {}));
    ASSIGN_OR_RETURN(
        PyValue cl, Module("torch.nn.modules.container", "Sequential", "", {}, {}, classifier, {}));
    ASSIGN_OR_RETURN(PyValue pool,
                     Module("torch.nn.modules.pooling", "AdaptiveAvgPool2d", "", {}, {}, {},
                            {{"output_size", PyValue::IntTuple({c.pool, c.pool})}}));
    return Module("torchvision.models.vgg", "VGG", "", {}, {},
                  {{"features", f}, {"avgpool", pool}, {"classifier", cl}}, {});
  }

  const std::vector<at::Tensor>& storages() const { return storages_; }
  const std::vector<std::string>& names() const { return names_; }

 private:
  PyValue ReLU() {
    return *Module("torch.nn.modules.activation", "ReLU", "", {}, {}, {},
                   {{"inplace", PyValue::Bool(true)}});
  }

  absl::StatusOr<PyValue> Tensor(const std::string& key, bool parameter) {
    auto it = sd_.find(key);
    if (it == sd_.end()) return absl::InternalError(absl::StrCat("no tensor ", key));
    ASSIGN_OR_RETURN(pickle::StorageType type, StorageTypeOf(it->second.scalar_type()));
    PyValue v;
    v.type = parameter ? PyValue::Type::kParameter : PyValue::Type::kTensor;
    v.tensor = Describe(key, it->second, storages_.size(), type);
    storages_.push_back(it->second);
    names_.push_back(key);
    return v;
  }

  // A module with torch.nn.Module's attributes, its tensors (named under
  // `prefix`), its children and its own attributes.
  absl::StatusOr<PyValue> Module(const std::string& module, const std::string& name,
                                 const std::string& prefix,
                                 const std::vector<std::string>& parameters,
                                 const std::vector<std::string>& buffers,
                                 std::vector<std::pair<std::string, PyValue>> children,
                                 std::vector<std::pair<std::string, PyValue>> attrs) {
    PyValue m;
    m.type = PyValue::Type::kModule;
    m.module = module;
    m.name = name;
    auto odict = [] {
      PyValue d;
      d.type = PyValue::Type::kOrderedDict;
      return d;
    };
    PyValue params = odict(), bufs = odict(), mods = odict(), empty_set;
    empty_set.type = PyValue::Type::kSet;
    for (const std::string& p : parameters) {
      ASSIGN_OR_RETURN(PyValue t, Tensor(prefix + "." + p, /*parameter=*/true));
      params.entries.push_back({p, t});
    }
    for (const std::string& b : buffers) {
      ASSIGN_OR_RETURN(PyValue t, Tensor(prefix + "." + b, /*parameter=*/false));
      bufs.entries.push_back({b, t});
    }
    mods.entries = std::move(children);
    m.entries = {{"training", PyValue::Bool(false)},
                 {"_parameters", params},
                 {"_buffers", bufs},
                 {"_non_persistent_buffers_set", empty_set},
                 {"_backward_hooks", odict()},
                 {"_is_full_backward_hook", PyValue::None()},
                 {"_forward_hooks", odict()},
                 {"_forward_pre_hooks", odict()},
                 {"_state_dict_hooks", odict()},
                 {"_load_state_dict_pre_hooks", odict()},
                 {"_load_state_dict_post_hooks", odict()},
                 {"_modules", mods}};
    for (auto& a : attrs) m.entries.push_back(std::move(a));
    return m;
  }

  std::map<std::string, at::Tensor> sd_;
  std::vector<at::Tensor> storages_;
  std::vector<std::string> names_;
};

}  // namespace

absl::Status WriteStateDict(const StateDict& state, const std::string& path) {
  std::vector<PickledTensor> entries;
  std::vector<at::Tensor> storages;
  std::vector<std::string> names;
  for (size_t i = 0; i < state.size(); ++i) {
    ASSIGN_OR_RETURN(pickle::StorageType type, StorageTypeOf(state[i].second.scalar_type()));
    entries.push_back(Describe(state[i].first, state[i].second, i, type));
    storages.push_back(state[i].second);
    names.push_back(state[i].first);
  }
  const std::string pkl = PickleStateDict(entries);
  return WriteFile(path, [&](int fd) { return WriteArchive(fd, pkl, storages, names); });
}

absl::Status WriteVggModule(const VggImpl& vgg, const std::string& path) {
  VggTree tree(vgg);
  ASSIGN_OR_RETURN(PyValue root, tree.Build(vgg.config()));
  const std::string pkl = PickleValue(root);
  return WriteFile(path,
                   [&](int fd) { return WriteArchive(fd, pkl, tree.storages(), tree.names()); });
}

}  // namespace modelserver
