#include "server/checkpoint/module_tree.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/state_dict_parser.h"

namespace modelserver {
namespace {

using pickle::Kind;
using pickle::Value;

constexpr int kMaxDepth = 64;
// Modules in one tree (a shared submodule counts once per place it appears);
// torchvision's largest models have under 1,000.
constexpr int kMaxModules = 20'000;
constexpr uint64_t kMaxPickleBytes = 64ull << 20;

std::string Where(const std::string& path) {
  return path.empty() ? "the model" : absl::StrCat("module '", path, "'");
}

// Adds the non-None tensors of `__dict__[group]` to `node`.
absl::Status AddTensors(const char* group, ModuleNode* node) {
  const Value* d = node->Attr(group);
  if (d == nullptr) return absl::OkStatus();
  const std::string where = Where(node->path);
  if (d->kind != Kind::kDict)
    return UnsupportedModule(where, absl::StrCat(group, " is not a dict"));
  for (const auto& [k, t] : d->entries) {
    if (k->kind != Kind::kString) return UnsupportedModule(where, "a tensor name is not a string");
    if (t->kind == Kind::kNone) continue;
    if (t->kind != Kind::kTensor) {
      return UnsupportedModule(where, absl::StrCat(group, " entry '", k->s, "' is a ",
                                                   pickle::KindName(t->kind), ", not a tensor"));
    }
    node->tensors[k->s] = t;
  }
  return absl::OkStatus();
}

// What the walk of one tree has seen: a budget of modules (memoised pickles can
// share a submodule at many places, which would otherwise expand exponentially)
// and the modules on the current path (a cycle).
struct Walk {
  int modules = 0;
  std::vector<const Value*> path;
};

absl::StatusOr<ModuleNode> ParseNode(const Value* v, const std::string& path, int depth,
                                     Walk* walk) {
  const std::string where = Where(path);
  if (depth > kMaxDepth) {
    return UnsupportedModule(where, absl::StrCat("modules nest more than ", kMaxDepth, " deep"));
  }
  if (++walk->modules > kMaxModules) {
    return UnsupportedModule(where, absl::StrCat("the model has more than ", kMaxModules,
                                                 " modules (counting shared ones at each place)"));
  }
  if (std::find(walk->path.begin(), walk->path.end(), v) != walk->path.end()) {
    return UnsupportedModule(where, "is its own ancestor (a cyclic module tree)");
  }
  if (v->kind != Kind::kObject || v->cls == nullptr) {
    return UnsupportedModule(where,
                             absl::StrCat("is a ", pickle::KindName(v->kind), ", not a module"));
  }
  ModuleNode n;
  n.path = path;
  n.cls = v->cls->s;
  if (v->state == nullptr || v->state->kind != Kind::kDict) {
    return UnsupportedModule(where, absl::StrCat(n.cls, " has no __dict__"));
  }
  n.dict = v->state;
  RETURN_IF_ERROR(AddTensors("_parameters", &n));
  RETURN_IF_ERROR(AddTensors("_buffers", &n));
  const Value* mods = n.Attr("_modules");
  if (mods == nullptr) return n;
  if (mods->kind != Kind::kDict) return UnsupportedModule(where, "_modules is not a dict");
  walk->path.push_back(v);
  for (const auto& [k, child] : mods->entries) {
    if (k->kind != Kind::kString) {
      return UnsupportedModule(where, "a submodule name is not a string");
    }
    if (child->kind == Kind::kNone) continue;
    ASSIGN_OR_RETURN(ModuleNode c,
                     ParseNode(child, path.empty() ? k->s : path + "." + k->s, depth + 1, walk));
    n.children.push_back(std::move(c));
  }
  walk->path.pop_back();
  return n;
}

}  // namespace

pickle::UnpicklerOptions PickledModuleUnpicklerOptions() {
  using namespace module_class;  // NOLINT(build/namespaces)
  pickle::UnpicklerOptions options;
  options.allowed_classes = {kVgg,     kSequential,      kConv,      kLinear,  kReLU,   kMaxPool,
                             kAvgPool, kAdaptiveAvgPool, kBatchNorm, kDropout, kFlatten};
  options.refusal_hint =
      "torch.save(model) files may only hold torchvision's VGG and the layers torch.nn.Sequential, "
      "Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, Dropout, "
      "Flatten. To serve any other model: save it as TorchScript, "
      "torch.jit.script(model).save('model.pt') (format TORCHSCRIPT); or keep the weights as a "
      "state dict with the class as an architecture template: "
      "torch.save(model.state_dict(), 'model_weights.pth'); "
      "torch.jit.script(model).save('arch.pt'), then upload model_weights.pth with "
      "--architecture_file arch.pt";
  return options;
}

absl::Status UnsupportedModule(const std::string& where, const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrCat(where, ": ", what,
                   "; export the model with torch.jit.script/trace (TORCHSCRIPT) or save "
                   "its state dict instead"));
}

const Value* ModuleNode::Attr(const char* name) const { return dict->Get(name); }

absl::StatusOr<int64_t> ModuleNode::Int(const char* name) const {
  const Value* v = Attr(name);
  if (v == nullptr || v->kind != Kind::kInt) {
    return UnsupportedModule(path, absl::StrCat(cls, ".", name, " is missing or not an int"));
  }
  return v->i;
}

absl::StatusOr<double> ModuleNode::Float(const char* name) const {
  const Value* v = Attr(name);
  if (v != nullptr && v->kind == Kind::kFloat) return v->f;
  if (v != nullptr && v->kind == Kind::kInt) return static_cast<double>(v->i);
  return UnsupportedModule(path, absl::StrCat(cls, ".", name, " is missing or not a number"));
}

bool ModuleNode::Bool(const char* name, bool fallback) const {
  const Value* v = Attr(name);
  return v != nullptr && v->kind == Kind::kBool ? v->b : fallback;
}

absl::StatusOr<std::vector<int64_t>> ModuleNode::Pair(const char* name,
                                                      std::vector<int64_t> if_none) const {
  const Value* v = Attr(name);
  if (v != nullptr && v->kind == Kind::kInt) return std::vector<int64_t>{v->i, v->i};
  if (v != nullptr && v->kind == Kind::kNone && !if_none.empty()) return if_none;
  if (v != nullptr && (v->kind == Kind::kTuple || v->kind == Kind::kList) && v->items.size() == 2 &&
      v->items[0]->kind == Kind::kInt && v->items[1]->kind == Kind::kInt) {
    return std::vector<int64_t>{v->items[0]->i, v->items[1]->i};
  }
  return UnsupportedModule(path, absl::StrCat(cls, ".", name, " is not an int or a pair of ints"));
}

std::string ModuleNode::Name() const {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

absl::StatusOr<ModuleNode> ParseModuleTree(const Value* root) {
  Walk walk;
  return ParseNode(root, "", 0, &walk);
}

absl::StatusOr<PickledModuleTree> ParsePickledModule(const ZipReader& zip,
                                                     const std::string& what) {
  ASSIGN_OR_RETURN(PickledStateDict parsed,
                   ParseArchivePickle(zip, what, kMaxPickleBytes, PickledModuleUnpicklerOptions()));
  if (parsed.pickled->root()->kind == Kind::kDict) {
    return absl::FailedPreconditionError(absl::StrCat(
        what,
        " holds a dict (a state dict, torch.save(model.state_dict())), not a module; use "
        "format STATE_DICT with an architecture"));
  }
  PickledModuleTree out;
  ASSIGN_OR_RETURN(out.root, ParseModuleTree(parsed.pickled->root()));
  out.prefix = std::move(parsed.prefix);
  out.pickled = std::move(parsed.pickled);
  return out;
}

}  // namespace modelserver
