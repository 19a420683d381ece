#include "server/model/exported_program_model.h"

#include <ATen/ScalarOps.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/Device.h>
#include <torch/version.h>

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "server/checkpoint/exported_program.h"
#include "server/checkpoint/zip_reader.h"
#include "server/model/cpu_block_cache.h"
#include "server/model/device.h"
#include "server/model/int8_network.h"
#include "server/model/quantized_decomposed_ops.h"
#include "server/model/state_dict_writer.h"
#include "server/model/tensor_convert.h"
#include "server/model/tensor_materializer.h"
#include "server/model/torchscript_ops.h"

namespace modelserver {

namespace {

using exported::ArgKind;
using exported::Argument;

// The schema's enums as c10's numbers.
std::optional<at::ScalarType> C10ScalarType(int64_t v) {
  auto storage = exported::StorageTypeOf(v);
  if (!storage.ok()) return std::nullopt;
  return ScalarTypeOf(*storage);
}
std::optional<at::MemoryFormat> C10MemoryFormat(int64_t v) {
  switch (v) {
    case 1:
      return at::MemoryFormat::Contiguous;
    case 2:
      return at::MemoryFormat::ChannelsLast;
    case 3:
      return at::MemoryFormat::ChannelsLast3d;
    case 4:
      return at::MemoryFormat::Preserve;
    default:
      return std::nullopt;
  }
}

// Where a value of the graph lives during a call.
using Slot = int;

// One argument of a node, bound to its schema argument at load.
struct BoundArg {
  enum Kind { kConstant, kTensor, kTensors, kOptionalTensors, kSymInt, kSymInts };
  Kind kind = kConstant;
  c10::IValue constant;
  std::vector<Slot> slots;    // kTensor (one), kTensors, kOptionalTensors (-1: None)
  std::vector<int64_t> ints;  // kSymInt(s): constants, where slots[i] == -1
  bool to_float = false;      // kSymInt into a float argument
};

struct NodeOutput {
  enum Kind { kNone, kValue, kList };
  Kind kind = kNone;
  std::vector<Slot> slots;  // kValue: one; kList: one per element (-1: not used)
};

struct CompiledNode {
  enum Kind {
    kOperator,
    kSymSize,
    kSymNumel,
    kSymStride,
    kIntArith,
    kAssert,
    kNoOp,
  };
  Kind kind = kOperator;
  std::string where;  // "node 3 (torch.ops.aten.conv2d.default)"
  std::optional<c10::OperatorHandle> op;
  std::vector<BoundArg> args;
  std::vector<NodeOutput> outputs;
  std::string arith;  // kIntArith: "add", "mul", ...; kAssert: the message
  std::vector<Slot> free_after;
};

using exported::InputDim;

}  // namespace

struct ExportedProgramModel::Program {
  std::vector<CompiledNode> nodes;
  int num_slots = 0;
  std::vector<std::pair<Slot, at::Tensor>> weights;  // bound before each call
  Slot input_slot = -1;
  std::vector<std::pair<Slot, int>> input_symbols;  // slot <- x.size(dim)
  std::vector<InputDim> input_dims;
  at::ScalarType input_dtype = at::kFloat;
  std::vector<std::pair<std::string, Slot>> outputs;  // name, slot (-1: None, skipped)
  std::vector<int64_t> warmup_shape;
  uint64_t forward_memory_bytes = 0;  // SetForwardMemoryBudget
  // For Save(STATE_DICT): the state dict's tensors on the CPU, float32 as stored.
  StateDict state_dict;
};

namespace {

// What a target names: "torch.ops.aten.conv2d.default" -> ("aten", "conv2d", "default").
struct OpName {
  std::string ns, name, overload;
};
std::optional<OpName> ParseTarget(absl::string_view target) {
  if (!absl::ConsumePrefix(&target, "torch.ops.")) return std::nullopt;
  std::vector<std::string> parts = absl::StrSplit(target, '.');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty() || parts[2].empty()) {
    return std::nullopt;
  }
  return OpName{parts[0], parts[1], parts[2]};
}

class Compiler {
 public:
  // `weights`: a state dict whose tensors replace the program's parameters and
  // persistent buffers (an architecture template), or null.
  Compiler(const exported::ExportedProgram& p, const at::Device& device, const Numerics& numerics,
           const std::map<std::string, at::Tensor>* weights)
      : p_(p), device_(device), numerics_(numerics), weights_(weights) {}

  absl::Status Compile(ExportedProgramModel::Program* out, const std::string& what,
                       bool verify_crc);

 private:
  Slot Define(const std::string& name) {
    auto [it, inserted] = slots_.emplace(name, next_slot_);
    if (inserted) ++next_slot_;
    return it->second;
  }
  Slot Lookup(const std::string& name) const {
    auto it = slots_.find(name);
    return it == slots_.end() ? -1 : it->second;
  }
  absl::Status Refuse(const std::string& where, const std::string& why) const {
    return absl::FailedPreconditionError(absl::StrCat(what_, ": ", where, ": ", why));
  }
  absl::StatusOr<at::Tensor> Materialize(const exported::TensorData& t, bool verify_crc);
  absl::Status CompileOperator(const exported::Node& node, const OpName& name, CompiledNode* c);
  absl::StatusOr<BoundArg> Bind(const Argument& a, const c10::Argument& schema,
                                const std::string& where);
  absl::StatusOr<BoundArg> Dynamic(const Argument& a, const std::string& where);
  absl::Status BindOutputs(const exported::Node& node, CompiledNode* c);

  const exported::ExportedProgram& p_;
  at::Device device_;
  Numerics numerics_;
  const std::map<std::string, at::Tensor>* weights_;
  std::string what_;
  std::map<std::string, Slot> slots_;
  Slot next_slot_ = 0;
  std::set<Slot> weight_aliases_;  // weights, and what may be a view of one
  // Storages read so far, by record and dtype (a record two weights view in two
  // dtypes is read twice, each view checked against its own storage).
  std::map<std::tuple<const ZipReader*, const ZipReader::Entry*, pickle::StorageType>, at::Tensor>
      storages_;
};

absl::StatusOr<at::Tensor> Compiler::Materialize(const exported::TensorData& t, bool verify_crc) {
  const auto key = std::make_tuple(t.zip, t.record, t.dtype);
  auto it = storages_.find(key);
  if (it == storages_.end()) {
    at::Tensor storage = at::empty({static_cast<int64_t>(t.storage_numel)},
                                   at::TensorOptions(ScalarTypeOf(t.dtype)));
    RETURN_IF_ERROR(t.zip->ReadInto(*t.record, storage.data_ptr(), verify_crc));
    it = storages_.emplace(key, storage).first;
  }
  return it->second.as_strided(t.sizes, t.strides, t.storage_offset);
}

absl::StatusOr<BoundArg> Compiler::Dynamic(const Argument& a, const std::string& where) {
  BoundArg b;
  auto slot = [&](const std::string& name) -> absl::StatusOr<Slot> {
    Slot s = Lookup(name);
    if (s < 0) return Refuse(where, absl::StrCat("'", name, "' is not defined"));
    return s;
  };
  switch (a.kind) {
    case ArgKind::kTensor:
    case ArgKind::kTensors:
    case ArgKind::kOptionalTensors:
      b.kind = a.kind == ArgKind::kTensor    ? BoundArg::kTensor
               : a.kind == ArgKind::kTensors ? BoundArg::kTensors
                                             : BoundArg::kOptionalTensors;
      for (const std::string& n : a.names) {
        if (n.empty()) {
          b.slots.push_back(-1);
          continue;
        }
        ASSIGN_OR_RETURN(Slot s, slot(n));
        b.slots.push_back(s);
      }
      return b;
    case ArgKind::kSymInt:
    case ArgKind::kSymInts:
      b.kind = a.kind == ArgKind::kSymInt ? BoundArg::kSymInt : BoundArg::kSymInts;
      for (const exported::SymInt& s : a.sym_ints) {
        if (s.is_constant) {
          b.slots.push_back(-1);
          b.ints.push_back(s.value);
          continue;
        }
        ASSIGN_OR_RETURN(Slot sl, slot(s.symbol.empty() ? s.expr : s.symbol));
        b.slots.push_back(sl);
        b.ints.push_back(0);
      }
      return b;
    default:
      return Refuse(where, "not a tensor or int argument");
  }
}

absl::StatusOr<BoundArg> Compiler::Bind(const Argument& a, const c10::Argument& schema,
                                        const std::string& where) {
  c10::TypePtr type = schema.type();
  if (auto opt = type->cast<c10::OptionalType>()) type = opt->getElementType();
  const bool wants_float = type->kind() == c10::TypeKind::FloatType;
  BoundArg b;
  // A Python number where the operator takes a tensor (x * 0.5 as aten.mul.Tensor): a
  // "wrapped number" tensor, as Python passes it (type promotion treats it as a scalar).
  if (type->kind() == c10::TypeKind::TensorType &&
      (a.kind == ArgKind::kInt || a.kind == ArgKind::kFloat || a.kind == ArgKind::kBool)) {
    const at::Scalar value = a.kind == ArgKind::kInt     ? at::Scalar(a.i)
                             : a.kind == ArgKind::kFloat ? at::Scalar(a.f)
                                                         : at::Scalar(a.b);
    at::Tensor t = c10::scalar_to_tensor(value, device_);
    t.unsafeGetTensorImpl()->set_wrapped_number(true);
    b.constant = c10::IValue(t);
    return b;
  }
  switch (a.kind) {
    case ArgKind::kNone:
      b.constant = c10::IValue();
      return b;
    case ArgKind::kInt:
      b.constant = wants_float ? c10::IValue(static_cast<double>(a.i)) : c10::IValue(a.i);
      return b;
    case ArgKind::kFloat:
      b.constant = c10::IValue(a.f);
      return b;
    case ArgKind::kBool:
      b.constant = c10::IValue(a.b);
      return b;
    case ArgKind::kString:
      b.constant = c10::IValue(a.s);
      return b;
    case ArgKind::kInts:
      b.constant = c10::IValue(a.ints);
      return b;
    case ArgKind::kFloats:
      b.constant = c10::IValue(a.floats);
      return b;
    case ArgKind::kBools: {
      c10::List<bool> list;
      for (bool v : a.bools) list.push_back(v);
      b.constant = c10::IValue(list);
      return b;
    }
    case ArgKind::kStrings:
      b.constant = c10::IValue(a.strings);
      return b;
    case ArgKind::kScalarType: {
      std::optional<at::ScalarType> t = C10ScalarType(a.i);
      if (!t) return Refuse(where, absl::StrCat("dtype number ", a.i, " is not served"));
      b.constant = c10::IValue(static_cast<int64_t>(*t));
      return b;
    }
    case ArgKind::kMemoryFormat: {
      std::optional<at::MemoryFormat> f = C10MemoryFormat(a.i);
      if (!f) return Refuse(where, absl::StrCat("memory format number ", a.i, " is unknown"));
      b.constant = c10::IValue(static_cast<int64_t>(*f));
      return b;
    }
    case ArgKind::kLayout:
      if (a.i != 7) return Refuse(where, "only strided tensors are served");
      b.constant = c10::IValue(static_cast<int64_t>(at::kStrided));
      return b;
    case ArgKind::kDevice:
      // Exported where it was traced; it runs where the model is.
      b.constant = c10::IValue(device_);
      return b;
    case ArgKind::kSymInt:
    case ArgKind::kSymInts:
    case ArgKind::kTensor:
    case ArgKind::kTensors:
    case ArgKind::kOptionalTensors: {
      ASSIGN_OR_RETURN(b, Dynamic(a, where));
      b.to_float = wants_float;
      if (b.kind == BoundArg::kSymInt && b.slots[0] < 0) {
        b.kind = BoundArg::kConstant;
        b.constant =
            wants_float ? c10::IValue(static_cast<double>(b.ints[0])) : c10::IValue(b.ints[0]);
      }
      return b;
    }
    case ArgKind::kSymBool:
    case ArgKind::kSymFloat:
      if (a.s.empty()) {
        b.constant = a.kind == ArgKind::kSymBool ? c10::IValue(a.b) : c10::IValue(a.f);
        return b;
      }
      return Refuse(where, "symbolic bools and floats as operator arguments are not served");
    case ArgKind::kOther:
      return Refuse(where, absl::StrCat("arguments of kind ", a.other, " are not served"));
  }
  return Refuse(where, "an unknown argument kind");
}

absl::Status Compiler::BindOutputs(const exported::Node& node, CompiledNode* c) {
  for (const Argument& o : node.outputs) {
    NodeOutput out;
    switch (o.kind) {
      case ArgKind::kNone:
        break;
      case ArgKind::kTensor:
        out.kind = NodeOutput::kValue;
        out.slots.push_back(Define(o.names[0]));
        break;
      case ArgKind::kTensors:
      case ArgKind::kOptionalTensors:
        out.kind = NodeOutput::kList;
        for (const std::string& n : o.names) out.slots.push_back(n.empty() ? -1 : Define(n));
        break;
      case ArgKind::kSymInt:
        if (o.sym_ints[0].is_constant) break;
        out.kind = NodeOutput::kValue;
        out.slots.push_back(Define(o.sym_ints[0].expr));
        break;
      case ArgKind::kSymBool:
        if (o.s.empty()) break;
        out.kind = NodeOutput::kValue;
        out.slots.push_back(Define(o.s));
        break;
      default:
        return Refuse(c->where, "an output that is not a tensor, a list of tensors or an int");
    }
    c->outputs.push_back(std::move(out));
  }
  return absl::OkStatus();
}

absl::Status Compiler::CompileOperator(const exported::Node& node, const OpName& name,
                                       CompiledNode* c) {
  const std::string qualified = absl::StrCat(name.ns, "::", name.name);
  const std::string overload = name.overload == "default" ? "" : name.overload;
  // PT2E quantization's operators (defined by torch in Python): ours.
  const bool pt2e = name.ns == "quantized_decomposed" && IsQuantizedDecomposedOp(name.name);
  if (pt2e) RegisterQuantizedDecomposedOps();
  auto handle = c10::Dispatcher::singleton().findSchema(c10::OperatorName(qualified, overload));
  if (!handle.has_value()) {
    return Refuse(c->where, absl::StrCat("this LibTorch (", TORCH_VERSION, ") has no operator ",
                                         qualified, ".", name.overload));
  }
  // What torch.export adds to TorchScript's operators: copies and aliases of lifted
  // constants, and metadata assertions.
  static const std::set<std::string> kExportOperators = {"lift_fresh_copy", "lift_fresh", "alias",
                                                         "_assert_tensor_metadata"};
  if (!pt2e && (name.ns != "aten" || (!IsAllowedTorchScriptOperator(qualified) &&
                                      kExportOperators.count(name.name) == 0))) {
    return Refuse(c->where,
                  absl::StrCat("the operator ", qualified, ".", name.overload,
                               " is not on the allowlist (ATen tensor operators that touch no "
                               "files, processes, printing or random state)"));
  }
  c->op = *handle;
  const c10::FunctionSchema& schema = handle->schema();
  std::set<std::string> used;
  bool reads_weight = false;
  for (const c10::Argument& sa : schema.arguments()) {
    const exported::NamedArgument* given = nullptr;
    for (const exported::NamedArgument& na : node.inputs) {
      if (na.name == sa.name()) given = &na;
    }
    const std::string where = absl::StrCat(c->where, " argument '", sa.name(), "'");
    BoundArg b;
    if (given != nullptr) {
      used.insert(given->name);
      ASSIGN_OR_RETURN(b, Bind(given->arg, sa, where));
    } else if (sa.default_value().has_value()) {
      b.constant = *sa.default_value();
    } else if (sa.type()->kind() == c10::TypeKind::OptionalType) {
      b.constant = c10::IValue();
    } else {
      return Refuse(c->where, absl::StrCat("no value for argument '", sa.name(), "' of ",
                                           schema.name(), ".", name.overload));
    }
    // Nothing may write to a weight (or what may be a view of one).
    const bool writes = sa.alias_info() != nullptr && sa.alias_info()->isWrite();
    if (writes && b.kind == BoundArg::kConstant && b.constant.isTensor()) {
      return Refuse(c->where, absl::StrCat(schema.name(), ".", name.overload,
                                           " writes to a number of the program (a constant "
                                           "every request shares)"));
    }
    for (Slot s : b.slots) {
      if (s < 0 || weight_aliases_.count(s) == 0) continue;
      reads_weight = true;
      if (writes) {
        return Refuse(c->where, absl::StrCat(schema.name(), ".", name.overload,
                                             " writes to a weight (parameter, buffer or "
                                             "constant), so one request would change the "
                                             "answers to later ones"));
      }
    }
    c->args.push_back(std::move(b));
  }
  for (const exported::NamedArgument& na : node.inputs) {
    if (used.count(na.name) == 0) {
      return Refuse(c->where, absl::StrCat("argument '", na.name, "' is not one of ", schema.name(),
                                           ".", name.overload, "'s"));
    }
  }
  if (schema.returns().size() != node.outputs.size()) {
    return Refuse(c->where, absl::StrCat(schema.name(), " returns ", schema.returns().size(),
                                         " values, the node names ", node.outputs.size()));
  }
  RETURN_IF_ERROR(BindOutputs(node, c));
  // A return that may alias an argument (a view) of a weight aliases the weight.
  for (size_t i = 0; i < schema.returns().size(); ++i) {
    if (!reads_weight || schema.returns()[i].alias_info() == nullptr) continue;
    for (Slot s : c->outputs[i].slots) {
      if (s >= 0) weight_aliases_.insert(s);
    }
  }
  return absl::OkStatus();
}

absl::Status Compiler::Compile(ExportedProgramModel::Program* out, const std::string& what,
                               bool verify_crc) {
  what_ = what;
  using exported::InputSpec;
  // Inputs: weights, and exactly one user tensor.
  for (size_t i = 0; i < p_.input_specs.size(); ++i) {
    const InputSpec& s = p_.input_specs[i];
    const std::string where = absl::StrCat("input ", i);
    switch (s.kind) {
      case InputSpec::Kind::kUserInput: {
        if (s.arg.kind != ArgKind::kTensor) {
          return Refuse(where, "a user input that is not a tensor is not served");
        }
        if (out->input_slot >= 0) {
          return Refuse(where, "the program takes several tensors; one is served");
        }
        out->input_slot = Define(s.arg.names[0]);
        auto meta = p_.graph.tensor_values.find(s.arg.names[0]);
        if (meta == p_.graph.tensor_values.end()) {
          return Refuse(where, "the input has no shape in the graph");
        }
        if (std::optional<at::ScalarType> t = C10ScalarType(meta->second.dtype)) {
          out->input_dtype = *t;
        }
        {
          absl::StatusOr<std::vector<InputDim>> dims =
              exported::UserInputDims(p_, 0, &out->warmup_shape);
          if (!dims.ok()) return Refuse(where, std::string(dims.status().message()));
          out->input_dims = *std::move(dims);
        }
        for (size_t d = 0; d < out->input_dims.size(); ++d) {
          if (!out->input_dims[d].constant) {
            out->input_symbols.emplace_back(Define(out->input_dims[d].symbol), static_cast<int>(d));
          }
        }
        if (out->input_dims.empty()) return Refuse(where, "a scalar input is not served");
        break;
      }
      case InputSpec::Kind::kParameter:
      case InputSpec::Kind::kBuffer:
      case InputSpec::Kind::kTensorConstant: {
        at::Tensor cpu;
        if (weights_ != nullptr && weights_->count(s.target) > 0) {
          cpu = weights_->at(s.target);
        } else {
          const exported::TensorData* t = nullptr;
          for (const auto* map : {&p_.state_dict, &p_.constants}) {
            auto it = map->find(s.target);
            if (t == nullptr && it != map->end()) t = &it->second;
          }
          if (t == nullptr) return Refuse(where, absl::StrCat("'", s.target, "' has no tensor"));
          ASSIGN_OR_RETURN(cpu, Materialize(*t, verify_crc));
        }
        if (s.kind != InputSpec::Kind::kTensorConstant) {
          out->state_dict.emplace_back(s.target, cpu);
        }
        const Slot slot = Define(s.arg.names[0]);
        weight_aliases_.insert(slot);
        out->weights.emplace_back(slot, numerics_.Apply(cpu).to(device_));
        break;
      }
      default:
        return Refuse(where,
                      "inputs other than tensors and weights (tokens, custom objects, "
                      "constants) are not served");
    }
  }
  if (out->input_slot < 0) return Refuse("the program", "it takes no tensor input");
  for (const exported::OutputSpec& o : p_.output_specs) {
    if (o.kind != exported::OutputSpec::Kind::kUserOutput) {
      return Refuse("the program",
                    "it mutates a buffer or an input or returns gradients or tokens; export "
                    "the model in eval mode (model.eval()) for inference");
    }
  }
  // Nodes.
  for (size_t n = 0; n < p_.graph.nodes.size(); ++n) {
    const exported::Node& node = p_.graph.nodes[n];
    CompiledNode c;
    c.where = absl::StrCat("node ", n, " (", node.target, ")");
    const absl::string_view t = node.target;
    auto tensor_and_int = [&](CompiledNode::Kind kind, bool needs_dim) -> absl::Status {
      c.kind = kind;
      if (node.inputs.size() != (needs_dim ? 2u : 1u) || node.outputs.size() != 1) {
        return Refuse(c.where, "unexpected arguments");
      }
      ASSIGN_OR_RETURN(BoundArg self, Dynamic(node.inputs[0].arg, c.where));
      if (self.kind != BoundArg::kTensor)
        return Refuse(c.where, "the first argument is not a tensor");
      c.args.push_back(std::move(self));
      if (needs_dim) {
        if (node.inputs[1].arg.kind != ArgKind::kInt) return Refuse(c.where, "dim is not an int");
        BoundArg dim;
        dim.constant = c10::IValue(node.inputs[1].arg.i);
        c.args.push_back(std::move(dim));
      }
      return BindOutputs(node, &c);
    };
    if (t == "torch.ops.aten.sym_size.int") {
      RETURN_IF_ERROR(tensor_and_int(CompiledNode::kSymSize, true));
    } else if (t == "torch.ops.aten.sym_stride.int") {
      RETURN_IF_ERROR(tensor_and_int(CompiledNode::kSymStride, true));
    } else if (t == "torch.ops.aten.sym_numel.default") {
      RETURN_IF_ERROR(tensor_and_int(CompiledNode::kSymNumel, false));
    } else if (t == "torch.ops.aten.sym_constrain_range_for_size.default" ||
               t == "torch.ops.aten.sym_constrain_range.default") {
      c.kind = CompiledNode::kNoOp;  // the ranges are checked on the input
    } else if (t == "torch.ops.aten._assert_scalar.default") {
      c.kind = CompiledNode::kAssert;
      if (node.inputs.empty()) return Refuse(c.where, "no condition");
      const Argument& cond = node.inputs[0].arg;
      BoundArg b;
      if (cond.kind == ArgKind::kSymBool && !cond.s.empty()) {
        const Slot s = Lookup(cond.s);
        if (s < 0) return Refuse(c.where, absl::StrCat("'", cond.s, "' is not defined"));
        b.kind = BoundArg::kSymInt;
        b.slots.push_back(s);
        b.ints.push_back(0);
      } else if (cond.kind == ArgKind::kBool || cond.kind == ArgKind::kSymBool) {
        b.constant = c10::IValue(cond.b);
      } else {
        return Refuse(c.where, "the condition is not a bool");
      }
      c.args.push_back(std::move(b));
      c.arith = node.inputs.size() > 1 ? node.inputs[1].arg.s : "a runtime assertion failed";
    } else if (absl::StartsWith(t, "_operator.")) {
      c.kind = CompiledNode::kIntArith;
      c.arith = std::string(t.substr(sizeof("_operator.") - 1));
      static const std::set<std::string> kOps = {"add", "sub", "mul", "floordiv", "mod", "neg",
                                                 "eq",  "ne",  "lt",  "le",       "gt",  "ge"};
      if (kOps.count(c.arith) == 0) {
        return Refuse(c.where, absl::StrCat("the Python operator ", t, " is not served"));
      }
      const size_t arity = c.arith == "neg" ? 1 : 2;
      if (node.inputs.size() != arity || node.outputs.size() != 1) {
        return Refuse(c.where, "unexpected arguments");
      }
      for (const exported::NamedArgument& na : node.inputs) {
        BoundArg b;
        if (na.arg.kind == ArgKind::kInt) {
          b.kind = BoundArg::kSymInt;
          b.slots.push_back(-1);
          b.ints.push_back(na.arg.i);
        } else if (na.arg.kind == ArgKind::kSymInt) {
          ASSIGN_OR_RETURN(b, Dynamic(na.arg, c.where));
        } else {
          return Refuse(c.where, "int arithmetic on something other than ints");
        }
        c.args.push_back(std::move(b));
      }
      RETURN_IF_ERROR(BindOutputs(node, &c));
    } else if (std::optional<OpName> name = ParseTarget(t)) {
      RETURN_IF_ERROR(CompileOperator(node, *name, &c));
    } else {
      return Refuse(c.where, "the target is not an operator this server runs");
    }
    out->nodes.push_back(std::move(c));
  }
  // Outputs: "output" for one, else "output<i>" by position, None skipped.
  const size_t n_outputs = p_.graph.outputs.size();
  for (size_t i = 0; i < n_outputs; ++i) {
    const Argument& o = p_.graph.outputs[i];
    const std::string name = n_outputs == 1 ? "output" : absl::StrCat("output", i);
    if (o.kind == ArgKind::kNone) continue;
    if (o.kind != ArgKind::kTensor) {
      return Refuse(absl::StrCat("output ", i), "outputs that are not tensors are not served");
    }
    out->outputs.emplace_back(name, Lookup(o.names[0]));
  }
  if (out->outputs.empty()) return Refuse("the program", "it returns no tensor");
  if (out->outputs.size() > kMaxModelOutputs) {
    return Refuse("the program", absl::StrCat("it returns ", out->outputs.size(),
                                              " tensors; at most ", kMaxModelOutputs));
  }
  // Free each value after its last use (weights and outputs are kept).
  std::map<Slot, size_t> last_use;
  for (size_t n = 0; n < out->nodes.size(); ++n) {
    for (const BoundArg& b : out->nodes[n].args) {
      for (Slot s : b.slots) {
        if (s >= 0) last_use[s] = n;
      }
    }
  }
  std::set<Slot> keep;
  for (const auto& [slot, tensor] : out->weights) keep.insert(slot);
  for (const auto& [name, slot] : out->outputs) keep.insert(slot);
  for (const auto& [slot, n] : last_use) {
    if (keep.count(slot) == 0) out->nodes[n].free_after.push_back(slot);
  }
  out->num_slots = next_slot_;
  return absl::OkStatus();
}

// Python's int arithmetic on the program's sizes, checked: a program's constants
// are the file's, so a product or sum past int64 is an error, not wrapped.
c10::IValue IntArith(const std::string& op, int64_t a, int64_t b) {
  int64_t r = 0;
  bool overflow = false;
  if (op == "add") {
    overflow = __builtin_add_overflow(a, b, &r);
  } else if (op == "sub") {
    overflow = __builtin_sub_overflow(a, b, &r);
  } else if (op == "mul") {
    overflow = __builtin_mul_overflow(a, b, &r);
  } else if (op == "neg") {
    overflow = __builtin_sub_overflow(int64_t{0}, a, &r);
  } else if (op == "floordiv" || op == "mod") {
    TORCH_CHECK(b != 0, "integer division by zero in the program's size arithmetic");
    TORCH_CHECK(!(a == std::numeric_limits<int64_t>::min() && b == -1),
                "integer overflow in the program's size arithmetic (", op, ")");
    int64_t q = a / b;
    if (a % b != 0 && ((a < 0) != (b < 0))) --q;
    r = op == "floordiv" ? q : a - q * b;
  } else if (op == "eq") {
    return a == b;
  } else if (op == "ne") {
    return a != b;
  } else if (op == "lt") {
    return a < b;
  } else if (op == "le") {
    return a <= b;
  } else if (op == "gt") {
    return a > b;
  } else {
    return a >= b;
  }
  TORCH_CHECK(!overflow, "integer overflow in the program's size arithmetic (", op, " of ", a,
              " and ", b, ")");
  return r;
}

}  // namespace

ExportedProgramModel::ExportedProgramModel(std::unique_ptr<Program> program, ModelInfo info,
                                           at::Device device, const Numerics& numerics)
    : TorchModel(std::move(info), device, numerics, absl::StatusCode::kInvalidArgument,
                 "the exported program"),
      program_(std::move(program)) {}

ExportedProgramModel::~ExportedProgramModel() = default;

absl::StatusOr<std::shared_ptr<ExportedProgramModel>> ExportedProgramModel::Load(
    const std::string& path, const std::string& device, const Numerics& numerics, bool verify_crc) {
  return LoadFrom(path, "", device, numerics, verify_crc);
}

absl::StatusOr<std::shared_ptr<ExportedProgramModel>> ExportedProgramModel::LoadTemplate(
    const std::string& template_path, const std::string& weights_path, const std::string& device,
    const Numerics& numerics, bool verify_crc) {
  return LoadFrom(template_path, weights_path, device, numerics, verify_crc);
}

absl::StatusOr<std::shared_ptr<ExportedProgramModel>> ExportedProgramModel::LoadFrom(
    const std::string& path, const std::string& weights_path, const std::string& device,
    const Numerics& numerics, bool verify_crc) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  ASSIGN_OR_RETURN(exported::ExportedProgram program,
                   exported::ReadExportedProgram(std::move(zip), path));
  // An architecture template: the state dict's tensors, checked to fit.
  std::map<std::string, at::Tensor> weights;
  if (!weights_path.empty()) {
    CheckpointReadOptions read;
    read.verify_crc = verify_crc;
    ASSIGN_OR_RETURN(StateDict state, ReadStateDict(weights_path, read));
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& [k, t] : state) {
      shapes[k] = std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
      weights[k] = t;
    }
    RETURN_IF_ERROR(exported::CheckStateDictFitsProgram(program, shapes, weights_path));
  }
  auto compiled = std::make_unique<Program>();
  at::Device dev(at::kCPU);
  try {
    dev = at::Device(device);
    Compiler compiler(program, dev, numerics, weights_path.empty() ? nullptr : &weights);
    RETURN_IF_ERROR(compiler.Compile(compiled.get(), path, verify_crc));
  } catch (const std::exception& e) {
    return TorchError(e, absl::StrCat("loading ", path));
  }
  ModelInfo info;
  info.architecture = weights_path.empty() ? "exported program" : "template exported program";
  info.format = weights_path.empty() ? ModelFormat::kExportedProgram : ModelFormat::kStateDict;
  info.from_template = !weights_path.empty();
  info.device = device;
  info.precision = PrecisionName(numerics.precision);
  info.memory_format = numerics.channels_last ? "channels_last" : "contiguous";
  std::vector<at::Tensor> on_device;
  for (const auto& [slot, t] : compiled->weights) on_device.push_back(t);
  AddParameterBytes(on_device, &info);
  return std::shared_ptr<ExportedProgramModel>(
      new ExportedProgramModel(std::move(compiled), std::move(info), dev, numerics));
}

bool ExportedProgramModel::dynamic_batch() const { return !program_->input_dims[0].constant; }
int64_t ExportedProgramModel::min_batch() const {
  const InputDim& d = program_->input_dims[0];
  return d.constant ? d.value : std::max<int64_t>(d.min, 1);
}
int64_t ExportedProgramModel::max_batch() const {
  const InputDim& d = program_->input_dims[0];
  return d.constant ? d.value : d.max;
}

std::vector<int64_t> ExportedProgramModel::WarmupShape() const { return program_->warmup_shape; }

absl::Status ExportedProgramModel::ValidateInput(DType dtype,
                                                 const std::vector<int64_t>& shape) const {
  const bool floating = dtype == DType::kFloat32 || dtype == DType::kFloat16 ||
                        dtype == DType::kBFloat16 || dtype == DType::kFloat64;
  if (at::isFloatingType(program_->input_dtype) != floating) {
    return absl::InvalidArgumentError(absl::StrCat("the program takes ",
                                                   c10::toString(program_->input_dtype),
                                                   " input, not ", DTypeName(dtype)));
  }
  return exported::CheckInputShape(program_->input_dims, shape, "the program was exported");
}

TorchModel::NamedOutputs ExportedProgramModel::Interpret(const at::Tensor& x) const {
  const Program& p = *program_;
  std::vector<c10::IValue> env(static_cast<size_t>(p.num_slots));
  for (const auto& [slot, t] : p.weights) env[slot] = t;
  env[p.input_slot] = x;
  for (const auto& [slot, dim] : p.input_symbols) env[slot] = x.size(dim);
  auto int_of = [&](const BoundArg& b, size_t i) -> int64_t {
    return b.slots[i] < 0 ? b.ints[i] : env[b.slots[i]].toInt();
  };
  torch::jit::Stack stack;
  for (const CompiledNode& node : p.nodes) {
    switch (node.kind) {
      case CompiledNode::kNoOp:
        break;
      case CompiledNode::kSymSize:
      case CompiledNode::kSymStride:
      case CompiledNode::kSymNumel: {
        const at::Tensor& t = env[node.args[0].slots[0]].toTensor();
        int64_t v = 0;
        if (node.kind == CompiledNode::kSymNumel) {
          v = t.numel();
        } else {
          const int64_t dim = node.args[1].constant.toInt();
          v = node.kind == CompiledNode::kSymSize ? t.size(dim) : t.stride(dim);
        }
        if (!node.outputs[0].slots.empty()) env[node.outputs[0].slots[0]] = v;
        break;
      }
      case CompiledNode::kAssert: {
        const BoundArg& b = node.args[0];
        const bool holds =
            b.kind == BoundArg::kConstant ? b.constant.toBool() : env[b.slots[0]].toBool();
        TORCH_CHECK(holds, node.arith);
        break;
      }
      case CompiledNode::kIntArith: {
        const int64_t a = int_of(node.args[0], 0);
        const int64_t b = node.args.size() > 1 ? int_of(node.args[1], 0) : 0;
        c10::IValue v = IntArith(node.arith, a, b);
        if (!node.outputs[0].slots.empty()) env[node.outputs[0].slots[0]] = std::move(v);
        break;
      }
      case CompiledNode::kOperator: {
        stack.clear();
        for (const BoundArg& b : node.args) {
          switch (b.kind) {
            case BoundArg::kConstant:
              stack.push_back(b.constant);
              break;
            case BoundArg::kTensor:
              stack.push_back(env[b.slots[0]]);
              break;
            case BoundArg::kTensors: {
              c10::List<at::Tensor> list;
              for (Slot s : b.slots) list.push_back(env[s].toTensor());
              stack.emplace_back(std::move(list));
              break;
            }
            case BoundArg::kOptionalTensors: {
              c10::List<c10::optional<at::Tensor>> list;
              for (Slot s : b.slots) {
                list.push_back(s < 0 ? c10::optional<at::Tensor>()
                                     : c10::optional<at::Tensor>(env[s].toTensor()));
              }
              stack.emplace_back(std::move(list));
              break;
            }
            case BoundArg::kSymInt:
              if (b.to_float) {
                stack.emplace_back(static_cast<double>(int_of(b, 0)));
              } else {
                stack.emplace_back(int_of(b, 0));
              }
              break;
            case BoundArg::kSymInts: {
              std::vector<int64_t> v;
              for (size_t i = 0; i < b.slots.size(); ++i) v.push_back(int_of(b, i));
              stack.emplace_back(std::move(v));
              break;
            }
          }
        }
        node.op->callBoxed(&stack);
        for (size_t i = 0; i < node.outputs.size() && i < stack.size(); ++i) {
          const NodeOutput& o = node.outputs[i];
          if (o.kind == NodeOutput::kValue) {
            env[o.slots[0]] = std::move(stack[i]);
          } else if (o.kind == NodeOutput::kList) {
            c10::List<at::Tensor> list = stack[i].toTensorList();
            TORCH_CHECK(list.size() == o.slots.size(), node.where, " returned ", list.size(),
                        " tensors, the program names ", o.slots.size());
            for (size_t k = 0; k < o.slots.size(); ++k) {
              if (o.slots[k] >= 0) env[o.slots[k]] = list.get(k);
            }
          }
        }
        break;
      }
    }
    for (Slot s : node.free_after) env[s] = c10::IValue();
  }
  NamedOutputs out;
  for (const auto& [name, slot] : p.outputs) out.emplace_back(name, env[slot].toTensor());
  return out;
}

void ExportedProgramModel::SetForwardMemoryBudget(uint64_t bytes) {
  program_->forward_memory_bytes = bytes;
}

absl::StatusOr<TorchModel::NamedOutputs> ExportedProgramModel::RunAll(const at::Tensor& x) const {
  std::optional<ScopedCpuMemoryBudget> budget;
  if (program_->forward_memory_bytes > 0) budget.emplace(program_->forward_memory_bytes);
  const int64_t n = x.size(0);
  const int64_t lo = min_batch(), hi = max_batch();
  if (n >= lo && n <= hi) return Interpret(x);
  // A merged batch past the program's range: pieces inside it, run one by one.
  std::vector<int64_t> pieces;
  if (!dynamic_batch()) {
    if (n % lo != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("a batch of ", n, " for a program exported at a fixed batch of ", lo));
    }
    pieces.assign(static_cast<size_t>(n / lo), lo);
  } else {
    const int64_t k = (n + hi - 1) / hi;
    for (int64_t i = 0; i < k; ++i) pieces.push_back(n / k + (i < n % k ? 1 : 0));
    if (pieces.back() < lo) {
      return absl::InvalidArgumentError(
          absl::StrCat("a batch of ", n, " cannot be split into pieces in [", lo, ", ", hi, "]"));
    }
  }
  std::vector<NamedOutputs> parts;
  int64_t at = 0;
  for (int64_t size : pieces) {
    parts.push_back(Interpret(x.narrow(0, at, size)));
    at += size;
  }
  NamedOutputs out;
  for (size_t o = 0; o < parts[0].size(); ++o) {
    std::vector<at::Tensor> each;
    for (size_t i = 0; i < parts.size(); ++i) {
      const at::Tensor& t = parts[i][o].second;
      if (t.dim() == 0 || t.size(0) != pieces[i]) {
        return absl::FailedPreconditionError(
            absl::StrCat("output '", parts[0][o].first, "' has no batch dimension, so batches of ",
                         n, " cannot be run in pieces; send at most ", hi, " samples per request"));
      }
      each.push_back(t);
    }
    out.emplace_back(parts[0][o].first, at::cat(each, 0));
  }
  return out;
}

absl::StatusOr<at::Tensor> ExportedProgramModel::Run(const at::Tensor& x) const {
  ASSIGN_OR_RETURN(NamedOutputs all, RunAll(x));
  return all.front().second;
}

absl::Status ExportedProgramModel::Save(ModelFormat format, const std::string& path) const {
  if (format != ModelFormat::kStateDict) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an exported program saves as STATE_DICT (its weights), not ", ModelFormatName(format)));
  }
  return WriteStateDict(program_->state_dict, path);
}

absl::StatusOr<std::vector<FloatLayer>> ExportedProgramModel::Int8Layers() const {
  const Program& p = *program_;
  std::map<Slot, at::Tensor> weights;  // and what nodes on weights alone computed
  for (const auto& [slot, t] : p.weights) weights[slot] = t;
  std::set<Slot> data = {p.input_slot};  // every tensor computed from the input
  Slot current = p.input_slot;           // the chain's last value
  std::vector<FloatLayer> layers;
  bool quantizable = false;
  const CompiledNode* node = nullptr;
  auto refuse = [&node](const std::string& why) {
    return absl::FailedPreconditionError(absl::StrCat(
        "precision int8: ", node == nullptr ? std::string("the program") : node->where, ": ", why,
        "; int8 quantizes exported programs that are one chain of 2-d convolutions, batch norms, "
        "ReLUs, pooling, flatten and linear layers: serve this one in fp32 or bf16, or quantize "
        "it with PT2E and serve that"));
  };
  // Argument i of the node as a weight (undefined for None), an int list, an int,
  // a bool or a float.
  auto tensor = [&](size_t i) -> absl::StatusOr<at::Tensor> {
    const BoundArg& b = node->args[i];
    if (b.kind == BoundArg::kConstant && b.constant.isNone()) return at::Tensor();
    if (b.kind == BoundArg::kConstant && b.constant.isTensor()) return b.constant.toTensor();
    if (b.kind == BoundArg::kTensor && weights.count(b.slots[0]) > 0) {
      return weights.at(b.slots[0]);
    }
    return refuse(absl::StrCat("argument ", i, " is neither a weight nor None"));
  };
  auto ints = [&](size_t i) -> absl::StatusOr<std::vector<int64_t>> {
    const BoundArg& b = node->args[i];
    if (b.kind == BoundArg::kConstant && b.constant.isIntList()) return b.constant.toIntVector();
    if (b.kind == BoundArg::kConstant && b.constant.isInt()) {
      return std::vector<int64_t>{b.constant.toInt()};
    }
    if (b.kind == BoundArg::kSymInts &&
        std::all_of(b.slots.begin(), b.slots.end(), [](Slot s) { return s < 0; })) {
      return b.ints;
    }
    return refuse(absl::StrCat("argument ", i, " is not a list of constant ints"));
  };
  auto constant = [&](size_t i) -> absl::StatusOr<c10::IValue> {
    const BoundArg& b = node->args[i];
    if (b.kind != BoundArg::kConstant) {
      return refuse(absl::StrCat("argument ", i, " is not a constant"));
    }
    return b.constant;
  };
  auto is_true = [&](size_t i) -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(c10::IValue v, constant(i));
    if (!v.isBool()) return refuse(absl::StrCat("argument ", i, " is not a bool"));
    return v.toBool();
  };
  auto number = [&](size_t i) -> absl::StatusOr<double> {
    ASSIGN_OR_RETURN(c10::IValue v, constant(i));
    if (!v.isDouble() && !v.isInt())
      return refuse(absl::StrCat("argument ", i, " is not a number"));
    return v.isDouble() ? v.toDouble() : static_cast<double>(v.toInt());
  };
  using K = FloatLayer::Kind;
  try {
    for (const CompiledNode& n : p.nodes) {
      node = &n;
      if (n.kind != CompiledNode::kOperator) continue;  // sizes and assertions
      const std::string op = n.op->schema().name();
      const std::string& overload = n.op->schema().overload_name();
      // The arguments that read values computed from the input.
      std::vector<size_t> reads;
      for (size_t i = 0; i < n.args.size(); ++i) {
        const BoundArg& b = n.args[i];
        if (b.kind != BoundArg::kTensor && b.kind != BoundArg::kTensors &&
            b.kind != BoundArg::kOptionalTensors) {
          continue;
        }
        if (std::any_of(b.slots.begin(), b.slots.end(),
                        [&data](Slot s) { return s >= 0 && data.count(s) > 0; })) {
          reads.push_back(i);
        }
      }
      if (reads.empty()) {
        // On weights alone: a linear weight's transpose (core ATen's addmm), evaluated
        // once, here. Only views: nothing a program asks for is allocated at load.
        if (op != "aten::t" && op != "aten::permute" && op != "aten::transpose") {
          return refuse(absl::StrCat("the operator ", op,
                                     " computes on weights alone; int8 "
                                     "takes only a transpose of a weight there"));
        }
        torch::jit::Stack stack;
        for (size_t i = 0; i < n.args.size(); ++i) {
          const BoundArg& b = n.args[i];
          if (b.kind == BoundArg::kTensor) {
            ASSIGN_OR_RETURN(at::Tensor t, tensor(i));
            stack.emplace_back(t);
          } else if (b.kind == BoundArg::kConstant) {
            stack.push_back(b.constant);
          } else if (b.kind == BoundArg::kSymInts || b.kind == BoundArg::kSymInt) {
            ASSIGN_OR_RETURN(std::vector<int64_t> v, ints(i));
            if (b.kind == BoundArg::kSymInt) {
              stack.emplace_back(v[0]);
            } else {
              stack.emplace_back(v);
            }
          } else {
            return refuse("a node on weights with a list of tensors");
          }
        }
        n.op->callBoxed(&stack);
        for (size_t i = 0; i < n.outputs.size() && i < stack.size(); ++i) {
          if (n.outputs[i].kind == NodeOutput::kValue && stack[i].isTensor()) {
            weights[n.outputs[i].slots[0]] = stack[i].toTensor();
          }
        }
        continue;
      }
      // The one data argument: the chain's last value.
      const size_t in = op == "aten::addmm" ? 1 : 0;
      if (reads.size() != 1 || reads[0] != in || n.args[in].kind != BoundArg::kTensor) {
        return refuse(
            "it combines values computed from the input (a residual connection or a "
            "branch)");
      }
      if (n.args[in].slots[0] != current) {
        return refuse(
            "it reads an earlier value than the last layer's (a residual connection "
            "or a branch)");
      }
      FloatLayer l;
      bool identity = false;
      if ((op == "aten::conv2d" || op == "aten::convolution") && overload.empty()) {
        // core ATen's convolution: transposed and output_padding before groups.
        const bool core = op == "aten::convolution";
        if (core) {
          ASSIGN_OR_RETURN(const bool transposed, is_true(6));
          if (transposed) return refuse("a transposed convolution");
        }
        l.kind = K::kConv;
        ASSIGN_OR_RETURN(l.weight, tensor(1));
        ASSIGN_OR_RETURN(l.bias, tensor(2));
        ASSIGN_OR_RETURN(l.stride, ints(3));
        ASSIGN_OR_RETURN(l.padding, ints(4));
        ASSIGN_OR_RETURN(l.dilation, ints(5));
        ASSIGN_OR_RETURN(const double groups, number(core ? 8 : 6));
        l.groups = static_cast<int64_t>(groups);
      } else if ((op == "aten::batch_norm" || op == "aten::native_batch_norm" ||
                  op == "aten::_native_batch_norm_legit_no_training") &&
                 overload.empty()) {
        const bool legit = op == "aten::_native_batch_norm_legit_no_training";
        if (!legit) {
          ASSIGN_OR_RETURN(const bool training, is_true(5));
          if (training) return refuse("a batch norm in training mode");
        }
        l.kind = K::kBatchNorm;
        ASSIGN_OR_RETURN(l.weight, tensor(1));
        ASSIGN_OR_RETURN(l.bias, tensor(2));
        ASSIGN_OR_RETURN(l.running_mean, tensor(3));
        ASSIGN_OR_RETURN(l.running_var, tensor(4));
        ASSIGN_OR_RETURN(l.eps, number(legit ? 6 : 7));
        if (!l.running_mean.defined() || !l.running_var.defined()) {
          return refuse("a batch norm without running statistics");
        }
      } else if ((op == "aten::relu" || op == "aten::relu_") && overload.empty()) {
        l.kind = K::kReLU;
      } else if ((op == "aten::max_pool2d" || op == "aten::max_pool2d_with_indices") &&
                 overload.empty()) {
        l.kind = K::kMaxPool;
        ASSIGN_OR_RETURN(l.kernel, ints(1));
        ASSIGN_OR_RETURN(l.stride, ints(2));
        ASSIGN_OR_RETURN(l.padding, ints(3));
        ASSIGN_OR_RETURN(l.dilation, ints(4));
        ASSIGN_OR_RETURN(l.ceil_mode, is_true(5));
        if (l.stride.empty()) l.stride = l.kernel;
      } else if (op == "aten::avg_pool2d" && overload.empty()) {
        l.kind = K::kAvgPool;
        ASSIGN_OR_RETURN(l.kernel, ints(1));
        ASSIGN_OR_RETURN(l.stride, ints(2));
        ASSIGN_OR_RETURN(l.padding, ints(3));
        ASSIGN_OR_RETURN(l.ceil_mode, is_true(4));
        ASSIGN_OR_RETURN(l.count_include_pad, is_true(5));
        ASSIGN_OR_RETURN(const c10::IValue divisor, constant(6));
        if (!divisor.isNone()) return refuse("an average pooling with divisor_override");
        if (l.stride.empty()) l.stride = l.kernel;
      } else if ((op == "aten::adaptive_avg_pool2d" || op == "aten::_adaptive_avg_pool2d") &&
                 overload.empty()) {
        l.kind = K::kAdaptiveAvgPool;
        ASSIGN_OR_RETURN(l.output_size, ints(1));
      } else if (op == "aten::mean" && overload == "dim") {
        // x.mean((2, 3)) of an image batch: a global average pooling.
        ASSIGN_OR_RETURN(std::vector<int64_t> dims, ints(1));
        std::sort(dims.begin(), dims.end());
        if (dims != std::vector<int64_t>{2, 3} && dims != std::vector<int64_t>{-2, -1}) {
          return refuse("a mean over other dimensions than an image's height and width");
        }
        ASSIGN_OR_RETURN(const bool keepdim, is_true(2));
        ASSIGN_OR_RETURN(const c10::IValue dtype, constant(3));
        if (!dtype.isNone()) return refuse("a mean with a dtype");
        l.kind = K::kAdaptiveAvgPool;
        l.output_size = {1, 1};
        if (!keepdim) {
          layers.push_back(l);
          l = FloatLayer();
          l.kind = K::kFlatten;
        }
      } else if (op == "aten::flatten" && overload == "using_ints") {
        l.kind = K::kFlatten;
        ASSIGN_OR_RETURN(const double start, number(1));
        ASSIGN_OR_RETURN(const double end, number(2));
        l.start_dim = static_cast<int64_t>(start);
        l.end_dim = static_cast<int64_t>(end);
      } else if ((op == "aten::view" || op == "aten::reshape" || op == "aten::_unsafe_view") &&
                 overload.empty()) {
        // x.view(x.size(0), -1): a flatten, whatever the batch's spelling.
        const BoundArg& size = n.args[1];
        const bool two = size.kind == BoundArg::kSymInts ? size.slots.size() == 2
                         : size.constant.isIntList()     ? size.constant.toIntVector().size() == 2
                                                         : false;
        if (!two) return refuse("a view or reshape other than to [batch, features]");
        const int64_t features = size.kind == BoundArg::kSymInts
                                     ? (size.slots[1] < 0 ? size.ints[1] : 0)
                                     : size.constant.toIntVector()[1];
        if (features == 0) return refuse("a view or reshape to a symbolic number of features");
        l.kind = K::kFlatten;
      } else if (op == "aten::linear" && overload.empty()) {
        l.kind = K::kLinear;
        ASSIGN_OR_RETURN(l.weight, tensor(1));
        ASSIGN_OR_RETURN(l.bias, tensor(2));
      } else if ((op == "aten::addmm" || op == "aten::mm") && overload.empty()) {
        // linear as core ATen spells it: addmm(bias, x, weight.t()).
        const bool add = op == "aten::addmm";
        l.kind = K::kLinear;
        ASSIGN_OR_RETURN(at::Tensor transposed, tensor(add ? 2 : 1));
        if (!transposed.defined() || transposed.dim() != 2) return refuse("no 2-d weight");
        l.weight = transposed.t();
        if (add) {
          ASSIGN_OR_RETURN(l.bias, tensor(0));
          ASSIGN_OR_RETURN(const double beta, number(3));
          ASSIGN_OR_RETURN(const double alpha, number(4));
          if (beta != 1 || alpha != 1) return refuse("an addmm with beta or alpha other than 1");
        }
      } else if (op == "aten::dropout" && overload.empty()) {
        ASSIGN_OR_RETURN(const bool train, is_true(2));
        if (train) return refuse("a dropout in training mode");
        identity = true;
      } else if ((op == "aten::clone" || op == "aten::alias" || op == "aten::detach" ||
                  op == "aten::_assert_tensor_metadata") &&
                 overload.empty()) {
        identity = true;
      } else {
        return refuse(absl::StrCat("the operator ", op, overload.empty() ? "" : ".", overload,
                                   " is not one int8 covers"));
      }
      if (l.kind == K::kConv && (!l.weight.defined() || l.weight.dim() != 4)) {
        return refuse("a convolution without a 4-d weight (int8 covers 2-d convolutions)");
      }
      if (l.kind == K::kLinear && (!l.weight.defined() || l.weight.dim() != 2)) {
        return refuse("a linear layer without a 2-d weight");
      }
      if (!identity) {
        quantizable = quantizable || l.kind == K::kConv || l.kind == K::kLinear;
        layers.push_back(std::move(l));
      }
      // Its first output carries the chain on (an assertion has none); the others
      // (a batch norm's statistics, pooling indices) must stay unused.
      for (const NodeOutput& o : n.outputs) {
        for (Slot s : o.slots) {
          if (s >= 0) data.insert(s);
        }
      }
      if (!n.outputs.empty() && n.outputs[0].kind == NodeOutput::kValue) {
        current = n.outputs[0].slots[0];
      }
    }
  } catch (const std::exception& e) {
    return TorchError(e, "reading the program's layers for int8",
                      absl::StatusCode::kFailedPrecondition);
  }
  node = nullptr;
  if (p.outputs.size() != 1 || p.outputs[0].second != current) {
    return refuse("its output is not its last layer's (one output, at the end of the chain)");
  }
  if (!quantizable) return refuse("it has no convolution or linear layer");
  return layers;
}

}  // namespace modelserver
