#include "server/model/torchscript_ops.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <optional>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

// prim:: nodes of scripted and traced models: constants, containers, attributes
// of the module (read-only), control flow, type refinement, exceptions.
const std::set<std::string>& AllowedPrim() {
  static const auto* ops = new std::set<std::string>{
      "Constant", "ListConstruct", "ListUnpack", "TupleConstruct", "TupleUnpack", "TupleIndex",
      "TupleSlice", "DictConstruct", "GetAttr", "If", "Loop", "NumToTensor", "device", "dtype",
      "layout", "is_cuda", "unchecked_cast", "RaiseException", "Uninitialized", "min", "max",
      "isinstance", "shape", "requires_grad", "ConstantChunk", "EnumValue", "EnumName", "tolist",
      "abs", "AutogradAdd", "type", "is_quantized", "data", "ListIndex",
      // queries of where a tensor lives
      "is_nested", "is_sparse", "is_sparse_csr", "is_mkldnn", "is_meta", "is_xpu", "is_mps",
      "is_xla", "is_vulkan", "is_ipu", "is_hpu", "is_maia", "unchecked_unwrap_optional"};
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
      "batch_norm", "_native_batch_norm_legit_no_training",  // (core ATen's: writes nothing)
      "instance_norm", "layer_norm", "group_norm", "relu", "relu6", "leaky_relu", "elu", "selu",
      "celu", "gelu", "silu", "mish", "hardtanh", "hardswish", "hardsigmoid", "sigmoid", "tanh",
      "softplus", "softsign", "softmax", "log_softmax", "_softmax", "prelu", "threshold", "glu",
      "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
      // pooling, resizing, padding
      "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
      "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
      "adaptive_max_pool1d", "adaptive_max_pool2d", "max_pool2d_with_indices", "upsample_nearest1d",
      "upsample_nearest2d", "upsample_bilinear2d", "upsample_bicubic2d", "upsample_linear1d", "pad",
      "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "replication_pad1d",
      "replication_pad2d", "pixel_shuffle", "pixel_unshuffle",
      // shape and indexing
      "flatten", "unflatten", "view", "reshape", "view_as", "reshape_as", "squeeze", "unsqueeze",
      "permute", "transpose", "t", "contiguous", "expand", "expand_as", "repeat", "cat", "concat",
      "stack", "split", "split_with_sizes", "chunk", "unbind", "narrow", "slice", "select",
      "index_select", "gather", "index", "masked_fill", "masked_select", "where", "roll", "flip",
      "tile", "movedim", "swapaxes", "swapdims", "size", "dim", "numel", "_shape_as_tensor",
      "_unsafe_view", "triu", "tril", "meshgrid",
      // element-wise and reductions
      "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "remainder", "fmod", "neg",
      "abs", "pow", "exp", "log", "log1p", "log2", "log10", "sqrt", "rsqrt", "reciprocal", "sin",
      "cos", "erf", "floor", "ceil", "round", "sign", "clamp", "clamp_min", "clamp_max", "clip",
      "minimum", "maximum", "mean", "sum", "prod", "max", "min", "amax", "amin", "argmax", "argmin",
      "topk", "sort", "argsort", "norm", "std", "var", "logsumexp", "cumsum", "all", "any", "isnan",
      "isinf", "nan_to_num", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or",
      "logical_not", "bitwise_and", "bitwise_or", "bitwise_not",
      // attention (torchvision's ViT, nn.MultiheadAttention's fast path)
      "_native_multi_head_attention", "scaled_dot_product_attention",
      "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention_for_cpu",
      "_transformer_encoder_layer_fwd", "_masked_softmax",
      // creating and converting tensors (initialised)
      "zeros", "ones", "zeros_like", "ones_like", "full", "full_like", "new_zeros", "new_ones",
      "new_full", "new_tensor", "arange", "linspace", "tensor", "scalar_tensor", "to", "type_as",
      "float", "double", "half", "bfloat16", "int", "long", "bool", "detach", "clone", "fill",
      "zero", "copy", "alias", "lift_fresh",
      // scalars, strings, lists and dicts of scripted code
      "Int", "Float", "Bool", "ScalarImplicit", "IntImplicit", "FloatImplicit", "item",
      "__getitem__", "__setitem__", "__contains__", "__is__", "__isnot__", "__not__", "__and__",
      "__or__", "__xor__", "__range_length", "__derive_index", "len", "append", "extend", "insert",
      "pop", "keys", "values", "items", "get", "format", "str", "list", "dict", "floordiv",
      "is_floating_point", "is_contiguous", "_set_item", "__interpolate", "__upsample",
      "__upsample_bilinear", "_assert", "find",
      // queries of the calling context (autocast, autograd)
      "is_autocast_enabled", "is_autocast_cpu_enabled", "get_autocast_dtype",
      "get_autocast_gpu_dtype", "get_autocast_cpu_dtype", "is_grad_enabled",
      // warnings.warn: the server logs it (ModelWarningLog), rate-limited
      "warn",
      // quantized tensors (eager and FX int8 models, traced or scripted)
      "quantize_per_tensor", "quantize_per_tensor_dynamic", "quantize_per_channel", "dequantize",
      "q_scale", "q_zero_point", "q_per_channel_scales", "q_per_channel_zero_points",
      "q_per_channel_axis", "qscheme", "int_repr", "_make_per_tensor_quantized_tensor",
      "_make_per_channel_quantized_tensor", "quantized_max_pool1d", "quantized_max_pool2d",
      "quantized_batch_norm", "fbgemm_linear_fp16_weight"};
  return *ops;
}

// quantized:: operators (LibTorch's int8 kernels: oneDNN, QNNPACK, FBGEMM) by
// base name: the layers of eager and FX quantized models, and the weight
// packing their __setstate__ / __getstate__ and a frozen model's constants use.
const std::set<std::string>& AllowedQuantized() {
  static const auto* ops = new std::set<std::string>{
      "conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu", "conv_transpose1d",
      "conv_transpose2d", "conv_transpose3d", "linear", "linear_relu", "linear_dynamic",
      "linear_relu_dynamic", "linear_dynamic_fp16", "linear_relu_dynamic_fp16", "add", "add_relu",
      "add_scalar", "add_scalar_relu", "mul", "mul_relu", "mul_scalar", "mul_scalar_relu", "cat",
      "cat_relu", "batch_norm", "batch_norm1d", "batch_norm2d", "batch_norm3d", "batch_norm_relu",
      "batch_norm1d_relu", "batch_norm2d_relu", "batch_norm3d_relu", "hardswish", "sigmoid",
      "relu6", "leaky_relu", "elu", "celu", "threshold", "layer_norm", "group_norm",
      "instance_norm", "softmax", "matmul", "max_pool1d", "max_pool2d", "embedding_byte",
      "embedding_4bit", "embedding_bag_byte", "embedding_bag_4bit",
      "embedding_bag_byte_rowwise_offsets", "embedding_bag_4bit_rowwise_offsets",
      // weight packing (load and save of the packed parameters)
      "conv1d_prepack", "conv2d_prepack", "conv3d_prepack", "conv_transpose1d_prepack",
      "conv_transpose2d_prepack", "conv_transpose3d_prepack", "conv1d_unpack", "conv2d_unpack",
      "conv3d_unpack", "conv_transpose1d_unpack", "conv_transpose2d_unpack",
      "conv_transpose3d_unpack", "conv2d_stride", "conv2d_padding", "conv2d_output_padding",
      "conv2d_dilation", "conv2d_groups", "conv2d_transpose", "conv3d_stride", "conv3d_padding",
      "conv3d_output_padding", "conv3d_dilation", "conv3d_groups", "conv3d_transpose",
      "linear_prepack", "linear_prepack_fp16", "linear_unpack", "linear_unpack_fp16",
      "embedding_bag_prepack", "embedding_bag_unpack", "embedding_bag_byte_prepack",
      "embedding_bag_byte_unpack", "embedding_bag_4bit_prepack", "embedding_bag_4bit_unpack"};
  return *ops;
}

// The value of a bool known before the graph runs in eval mode: `training`
// attributes (the server loads modules with eval()), bool constants, and not /
// and / or / if of known ones. Lets the state check skip training-only branches
// (BatchNorm's num_batches_tracked.add_) without evaluating any operator. Looks
// at most `*budget` nodes (a chain of `x = x & x` would otherwise double the
// walk at each link); unknown beyond.
std::optional<bool> KnownBool(const torch::jit::Value* v, int* budget) {
  if (--*budget < 0) return std::nullopt;
  const torch::jit::Node* n = v->node();
  const std::string kind = n->kind().toQualString();
  if (kind == "prim::GetAttr") {
    // A module's (eval() cleared it on every submodule), not a class object's.
    const c10::ClassTypePtr owner = n->input(0)->type()->cast<c10::ClassType>();
    if (owner != nullptr && owner->is_module() && n->s(torch::jit::attr::name) == "training") {
      return false;
    }
  } else if (kind == "prim::Constant") {
    if (v->type()->kind() == c10::TypeKind::BoolType) return n->i(torch::jit::attr::value) != 0;
  } else if (kind == "aten::__not__" && n->inputs().size() == 1) {
    if (auto b = KnownBool(n->input(0), budget)) return !*b;
  } else if ((kind == "aten::__and__" || kind == "aten::__or__") && n->inputs().size() == 2 &&
             v->type()->kind() == c10::TypeKind::BoolType) {
    auto a = KnownBool(n->input(0), budget), b = KnownBool(n->input(1), budget);
    if (kind == "aten::__and__" && ((a && !*a) || (b && !*b))) return false;
    if (kind == "aten::__or__" && ((a && *a) || (b && *b))) return true;
    if (a && b) return kind == "aten::__and__" ? (*a && *b) : (*a || *b);
  } else if (kind == "prim::If") {
    if (auto c = KnownBool(n->input(0), budget)) {
      const torch::jit::Block* live = n->blocks()[*c ? 0 : 1];
      for (size_t k = 0; k < n->outputs().size(); ++k) {
        if (n->outputs()[k] == v && k < live->outputs().size()) {
          return KnownBool(live->outputs()[k], budget);
        }
      }
    }
  }
  return std::nullopt;
}

// Whether block `b` of `n` never runs in eval mode (the branch of an if whose
// condition is known).
bool IsDeadBlock(const torch::jit::Node* n, const torch::jit::Block* b) {
  if (n->kind() != c10::prim::If) return false;
  int budget = 256;  // and/or of one value with itself, nested, must not explode
  std::optional<bool> c = KnownBool(n->input(0), &budget);
  return c.has_value() && b != n->blocks()[*c ? 0 : 1];
}

// A method call on LibTorch's packed int8 weights (torch.classes.quantized.*:
// C++ classes, such as Conv2dPackedParamsBase.unpack()), which Inline leaves as
// a call.
bool IsPackedParamsCall(const torch::jit::Node* n) {
  if (n->kind() != c10::prim::CallMethod || n->inputs().empty()) return false;
  const auto cls = n->input(0)->type()->cast<c10::ClassType>();
  return cls != nullptr && cls->name() &&
         absl::StartsWith(cls->name()->qualifiedName(), "__torch__.torch.classes.quantized.");
}

// Every node of `block` that may run in eval mode, nested blocks included (not
// the branches of a known `if`: training-only code such as torchvision's
// stochastic depth, which draws random numbers into an uninitialised tensor);
// the first refused one. `per_request`: the graph is a module's forward (with
// what it calls inlined), which every request runs: setting an attribute
// (prim::SetAttr) there would change later answers. Other methods run only
// when the file is loaded or saved (__setstate__ / __getstate__ and what they
// call, such as torch's quantized modules' set_weight_bias), where setting the
// module's own attributes is what they are for.
const torch::jit::Node* FirstRefused(const torch::jit::Block* block, bool per_request) {
  for (const torch::jit::Node* n : block->nodes()) {
    if (!IsAllowedTorchScriptOperator(n->kind().toQualString()) &&
        !(!per_request && n->kind() == c10::prim::SetAttr) && !IsPackedParamsCall(n)) {
      return n;
    }
    for (const torch::jit::Block* b : n->blocks()) {
      if (IsDeadBlock(n, b)) continue;
      if (const torch::jit::Node* refused = FirstRefused(b, per_request)) return refused;
    }
  }
  return nullptr;
}

// Which values of an inlined graph are (views of) module state -- attributes
// (prim::GetAttr: parameters, buffers, lists, dicts) and tensor constants -- and
// which containers hold such values, so that a write to one can be named.
class StateTracker {
 public:
  // Marks until nothing changes (loops carry values back to their start).
  void Run(const torch::jit::Block* block) {
    for (int pass = 0; pass < 64; ++pass) {
      changed_ = false;
      Visit(block);
      if (!changed_) return;
    }
  }

  // The first node that writes to module state (an in-place operator, an out=
  // argument, append/insert/__setitem__ on a list or dict attribute), or null.
  const torch::jit::Node* FirstWrite(const torch::jit::Block* block) const {
    for (const torch::jit::Node* n : block->nodes()) {
      if (const c10::FunctionSchema* schema = n->maybeSchema()) {
        const auto& args = schema->arguments();
        for (size_t i = 0; i < n->inputs().size() && i < args.size(); ++i) {
          if (args[i].alias_info() != nullptr && args[i].alias_info()->isWrite() &&
              state_.count(n->inputs()[i]) > 0) {
            return n;
          }
        }
      }
      for (const torch::jit::Block* b : n->blocks()) {
        if (IsDeadBlock(n, b)) continue;
        if (const torch::jit::Node* w = FirstWrite(b)) return w;
      }
    }
    return nullptr;
  }

 private:
  void Mark(std::set<const torch::jit::Value*>& set, const torch::jit::Value* v) {
    if (set.insert(v).second) changed_ = true;
  }
  bool Is(const torch::jit::Value* v) const { return state_.count(v) > 0; }
  bool Holds(const torch::jit::Value* v) const { return holders_.count(v) > 0; }

  void Visit(const torch::jit::Block* block) {
    for (const torch::jit::Node* n : block->nodes()) {
      const std::string kind = n->kind().toQualString();
      if (kind == "prim::GetAttr") {
        Mark(state_, n->output());
      } else if (kind == "prim::Constant") {
        if (n->output()->type()->kind() == c10::TypeKind::TensorType) Mark(state_, n->output());
      } else if (kind == "prim::ListConstruct" || kind == "prim::TupleConstruct" ||
                 kind == "prim::DictConstruct") {
        // A new container: writing to it is fine, its elements may be state.
        for (const torch::jit::Value* in : n->inputs()) {
          if (Is(in) || Holds(in)) Mark(holders_, n->output());
        }
      } else if (kind == "prim::If") {
        for (const torch::jit::Block* b : n->blocks()) {
          if (IsDeadBlock(n, b)) continue;
          Visit(b);
          for (size_t k = 0; k < b->outputs().size() && k < n->outputs().size(); ++k) {
            Carry(b->outputs()[k], n->outputs()[k]);
          }
        }
      } else if (kind == "prim::Loop") {
        // inputs: trip count, condition, carried...; block: iteration, carried... ->
        // condition, carried...; outputs: carried...
        const torch::jit::Block* b = n->blocks()[0];
        for (size_t k = 0; k < n->outputs().size(); ++k) {
          if (2 + k < n->inputs().size() && 1 + k < b->inputs().size()) {
            Carry(n->inputs()[2 + k], b->inputs()[1 + k]);
          }
        }
        Visit(b);
        for (size_t k = 0; k < n->outputs().size(); ++k) {
          if (1 + k < b->outputs().size()) {
            Carry(b->outputs()[1 + k], n->outputs()[k]);
            if (1 + k < b->inputs().size()) Carry(b->outputs()[1 + k], b->inputs()[1 + k]);
          }
        }
      } else if (const c10::FunctionSchema* schema = n->maybeSchema()) {
        // An output that may alias an input (a view, a list's element) is state if
        // that input is.
        bool from_state = false, from_holder = false;
        const auto& args = schema->arguments();
        for (size_t i = 0; i < n->inputs().size() && i < args.size(); ++i) {
          if (args[i].alias_info() == nullptr) continue;
          from_state |= Is(n->inputs()[i]);
          from_holder |= Holds(n->inputs()[i]);
        }
        const auto& returns = schema->returns();
        for (size_t k = 0; k < n->outputs().size() && k < returns.size(); ++k) {
          if (returns[k].alias_info() == nullptr) continue;
          if (from_state || from_holder) Mark(state_, n->outputs()[k]);
          if (from_holder) Mark(holders_, n->outputs()[k]);
        }
      } else {
        // Other prim nodes (unpacking, casts, indexing): outputs follow inputs.
        bool from_state = false, from_holder = false;
        for (const torch::jit::Value* in : n->inputs()) {
          from_state |= Is(in);
          from_holder |= Holds(in);
        }
        for (const torch::jit::Value* out : n->outputs()) {
          if (from_state || from_holder) Mark(state_, out);
          if (from_holder) Mark(holders_, out);
        }
      }
    }
  }

  void Carry(const torch::jit::Value* from, const torch::jit::Value* to) {
    if (Is(from)) Mark(state_, to);
    if (Holds(from)) Mark(holders_, to);
  }

  std::set<const torch::jit::Value*> state_;
  std::set<const torch::jit::Value*> holders_;
  bool changed_ = false;
};

// FAILED_PRECONDITION naming `where` if its graph calls a refused operator or
// writes to module state. `per_request`: see FirstRefused.
absl::Status CheckGraph(torch::jit::Graph& source, const std::string& where, bool per_request) {
  std::shared_ptr<torch::jit::Graph> graph = source.copy();
  torch::jit::Inline(*graph);
  if (const torch::jit::Node* n = FirstRefused(graph->block(), per_request)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the TorchScript module calls operator ", n->kind().toQualString(), " in ", where,
        ", which is not on the server's allowlist of tensor operators (file, process, "
        "network, print and state-changing operators are refused); serve it only with "
        "--trust_torchscript if you vouch for the file"));
  }
  StateTracker state;
  state.Run(graph->block());
  if (const torch::jit::Node* n = state.FirstWrite(graph->block())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the TorchScript module changes its own state in ", where, " (", n->kind().toQualString(),
        " writes to a parameter, buffer, constant or list/dict attribute), so one request "
        "would change the answers to later ones; serve it only with --trust_torchscript if "
        "you vouch for the file"));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsAllowedTorchScriptOperator(absl::string_view qualified_name) {
  absl::string_view name = qualified_name;
  if (absl::ConsumePrefix(&name, "prim::")) return AllowedPrim().count(std::string(name)) > 0;
  if (absl::ConsumePrefix(&name, "quantized::")) {
    return AllowedQuantized().count(std::string(name)) > 0;
  }
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
      RETURN_IF_ERROR(
          CheckGraph(*method.graph(),
                     absl::StrCat(m.type()->name() ? m.type()->name()->qualifiedName() : "module",
                                  ".", method.name()),
                     /*per_request=*/method.name() == "forward"));
    }
  }
  // Methods of TorchScript classes (objects held as attributes): every method in
  // the file's compilation unit. A class's __init__ is not run for a loaded
  // object (its state is unpickled).
  const std::shared_ptr<torch::jit::CompilationUnit> unit = module._ivalue()->compilation_unit();
  for (torch::jit::Function* fn : unit->get_functions()) {
    if (fn->name() == "__init__") continue;
    // A free function runs only when a method calls it, and is checked there,
    // inlined with its caller's arguments (torchvision's stochastic_depth gets
    // `training` from its module: alone, its training branch would be live).
    const std::string owner = fn->qualname().prefix();
    if (owner.empty() || unit->get_class(c10::QualifiedName(owner)) == nullptr) continue;
    torch::jit::GraphFunction* graph_fn = torch::jit::tryToGraphFunction(*fn);
    if (graph_fn == nullptr) continue;
    RETURN_IF_ERROR(
        CheckGraph(*graph_fn->graph(), fn->qualname().qualifiedName(), /*per_request=*/false));
  }
  return absl::OkStatus();
}

}  // namespace modelserver
