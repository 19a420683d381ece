#include "server/model/torchscript_ops.h"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace modelserver {
namespace {

// prim:: nodes of scripted and traced models: constants, containers, attributes
// of the module (read-only), control flow, type refinement, exceptions.
const std::set<std::string>& AllowedPrim() {
  static const auto* ops = new std::set<std::string>{"Constant",
                                                     "ListConstruct",
                                                     "ListUnpack",
                                                     "TupleConstruct",
                                                     "TupleUnpack",
                                                     "TupleIndex",
                                                     "TupleSlice",
                                                     "DictConstruct",
                                                     "GetAttr",
                                                     "If",
                                                     "Loop",
                                                     "NumToTensor",
                                                     "device",
                                                     "dtype",
                                                     "layout",
                                                     "is_cuda",
                                                     "unchecked_cast",
                                                     "RaiseException",
                                                     "Uninitialized",
                                                     "min",
                                                     "max",
                                                     "isinstance",
                                                     "shape",
                                                     "requires_grad",
                                                     "ConstantChunk",
                                                     "EnumValue",
                                                     "EnumName",
                                                     "tolist",
                                                     "abs",
                                                     "AutogradAdd",
                                                     "type",
                                                     "is_quantized",
                                                     "data",
                                                     "ListIndex"};
  return *ops;
}

// aten:: operators by base name (no overload, no trailing '_').
const std::set<std::string>& AllowedAten() {
  static const auto* ops = new std::set<std::string>{
      // linear algebra and convolution
      "linear", "bilinear", "matmul", "mm", "bmm", "mv", "dot", "addmm", "addmv", "addbmm",
      "baddbmm", "einsum", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
      "conv_transpose3d", "_convolution", "convolution", "embedding",
      // normalisation, activations, dropout (eval: identity)
      "batch_norm", "instance_norm", "layer_norm", "group_norm", "relu", "relu6", "leaky_relu",
      "elu", "selu", "celu", "gelu", "silu", "mish", "hardtanh", "hardswish", "hardsigmoid",
      "sigmoid", "tanh", "softplus", "softsign", "softmax", "log_softmax", "_softmax", "prelu",
      "threshold", "glu", "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
      // pooling, resizing, padding
      "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
      "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
      "adaptive_max_pool2d", "max_pool2d_with_indices", "upsample_nearest1d", "upsample_nearest2d",
      "upsample_bilinear2d", "upsample_bicubic2d", "upsample_linear1d", "pad", "constant_pad_nd",
      "reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d",
      "pixel_shuffle", "pixel_unshuffle",
      // shape and indexing
      "flatten", "unflatten", "view", "reshape", "view_as", "reshape_as", "squeeze", "unsqueeze",
      "permute", "transpose", "t", "contiguous", "expand", "expand_as", "repeat", "cat", "concat",
      "stack", "split", "split_with_sizes", "chunk", "unbind", "narrow", "slice", "select",
      "index_select", "gather", "index", "masked_fill", "masked_select", "where", "roll", "flip",
      "tile", "movedim", "size", "dim", "numel", "_shape_as_tensor",
      // element-wise and reductions
      "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "remainder", "fmod", "neg",
      "abs", "pow", "exp", "log", "log1p", "log2", "log10", "sqrt", "rsqrt", "reciprocal", "sin",
      "cos", "erf", "floor", "ceil", "round", "sign", "clamp", "clamp_min", "clamp_max", "clip",
      "minimum", "maximum", "mean", "sum", "prod", "max", "min", "amax", "amin", "argmax", "argmin",
      "topk", "sort", "argsort", "norm", "std", "var", "logsumexp", "cumsum", "all", "any", "isnan",
      "isinf", "nan_to_num", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or",
      "logical_not", "bitwise_and", "bitwise_or", "bitwise_not",
      // creating and converting tensors (initialised)
      "zeros", "ones", "zeros_like", "ones_like", "full", "full_like", "arange", "linspace",
      "tensor", "scalar_tensor", "to", "type_as", "float", "double", "half", "bfloat16", "int",
      "long", "bool", "detach", "clone", "fill", "zero", "copy", "alias", "lift_fresh",
      // scalars, strings, lists and dicts of scripted code
      "Int", "Float", "Bool", "ScalarImplicit", "IntImplicit", "FloatImplicit", "item",
      "__getitem__", "__setitem__", "__contains__", "__is__", "__isnot__", "__not__", "__and__",
      "__or__", "__xor__", "__range_length", "__derive_index", "len", "append", "extend", "insert",
      "pop", "keys", "values", "items", "get", "format", "str", "list", "dict", "floordiv",
      "is_floating_point", "is_contiguous", "_set_item", "__interpolate", "__upsample",
      "__upsample_bilinear", "_assert"};
  return *ops;
}

// Every node of `block`, nested blocks included; the first refused one's kind.
const torch::jit::Node* FirstRefused(const torch::jit::Block* block) {
  for (const torch::jit::Node* n : block->nodes()) {
    if (!IsAllowedTorchScriptOperator(n->kind().toQualString())) return n;
    for (const torch::jit::Block* b : n->blocks()) {
      if (const torch::jit::Node* refused = FirstRefused(b)) return refused;
    }
  }
  return nullptr;
}

}  // namespace

bool IsAllowedTorchScriptOperator(absl::string_view qualified_name) {
  absl::string_view name = qualified_name;
  if (absl::ConsumePrefix(&name, "prim::")) return AllowedPrim().count(std::string(name)) > 0;
  if (!absl::ConsumePrefix(&name, "aten::")) return false;
  if (AllowedAten().count(std::string(name)) > 0) return true;
  // In-place variants follow their base operator ("relu_", "add_"); not "__x__".
  return absl::EndsWith(name, "_") && !absl::EndsWith(name, "__") &&
         AllowedAten().count(std::string(name.substr(0, name.size() - 1))) > 0;
}

absl::Status CheckTorchScriptOperators(const torch::jit::Module& module) {
  std::vector<torch::jit::Module> modules = {module};
  for (const torch::jit::Module& m : module.modules()) modules.push_back(m);
  for (const torch::jit::Module& m : modules) {
    for (const torch::jit::Method& method : m.get_methods()) {
      std::shared_ptr<torch::jit::Graph> graph = method.graph()->copy();
      torch::jit::Inline(*graph);
      if (const torch::jit::Node* n = FirstRefused(graph->block())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the TorchScript module calls operator ", n->kind().toQualString(), " in ",
            m.type()->name() ? m.type()->name()->qualifiedName() : "module", ".", method.name(),
            ", which is not on the server's allowlist of tensor operators (file, process, "
            "network, print and state-changing operators are refused); serve it only with "
            "--trust_torchscript if you vouch for the file"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace modelserver
