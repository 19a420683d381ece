#include "server/checkpoint/exported_program.h"

#include <algorithm>
#include <limits>
#include <unordered_set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint/state_dict_parser.h"

namespace modelserver {
namespace exported {
namespace {

using Json = nlohmann::json;

constexpr int64_t kSchemaMajor = 8;
constexpr size_t kMaxJsonDepth = 64;  // the schema nests about 10 deep
// Elements a weight's view may have beyond 4x its storage (small broadcasts).
constexpr uint64_t kViewSlackElements = 1024;

// Thrown by the parse callback to stop a parse past a budget; caught in ParseJson.
struct JsonBudgetExceeded {
  std::string why;
};

// Walks the schema's JSON; every error names where in the document it is.
class JsonReader {
 public:
  JsonReader(const std::string& what, const ReadLimits& limits) : what_(what), limits_(limits) {}

  absl::Status Malformed(absl::string_view where, absl::string_view why) const {
    return absl::DataLossError(
        absl::StrCat(what_, ": the program's JSON is malformed at ", where, ": ", why));
  }
  absl::Status Refused(absl::string_view why) const {
    return absl::FailedPreconditionError(absl::StrCat(what_, ": ", why));
  }
  absl::Status TooBig(absl::string_view why) const {
    return absl::ResourceExhaustedError(absl::StrCat(what_, ": ", why));
  }

  absl::StatusOr<const Json*> Field(const Json& obj, const char* key,
                                    const std::string& where) const {
    if (!obj.is_object()) return Malformed(where, "not an object");
    auto it = obj.find(key);
    if (it == obj.end()) return Malformed(where, absl::StrCat("no field '", key, "'"));
    return &*it;
  }
  // nullptr when absent or null.
  const Json* Optional(const Json& obj, const char* key) const {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }
  absl::StatusOr<int64_t> Int(const Json& j, const std::string& where) const {
    if (j.is_number_integer()) return j.get<int64_t>();
    if (j.is_number_unsigned()) {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Malformed(where, "integer out of range");
      }
      return static_cast<int64_t>(u);
    }
    return Malformed(where, "not an integer");
  }
  absl::StatusOr<double> Float(const Json& j, const std::string& where) const {
    if (j.is_number()) return j.get<double>();
    // How Python's json writes what JSON has no number for.
    if (j.is_string()) {
      const std::string& s = j.get_ref<const std::string&>();
      if (s == "Infinity" || s == "inf") return std::numeric_limits<double>::infinity();
      if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
      if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
    }
    return Malformed(where, "not a number");
  }
  absl::StatusOr<bool> Bool(const Json& j, const std::string& where) const {
    if (!j.is_boolean()) return Malformed(where, "not a boolean");
    return j.get<bool>();
  }
  absl::StatusOr<std::string> String(const Json& j, const std::string& where) const {
    if (!j.is_string()) return Malformed(where, "not a string");
    const std::string& s = j.get_ref<const std::string&>();
    if (s.size() > limits_.max_name_bytes) {
      return TooBig(absl::StrCat(where, ": a string of ", s.size(), " bytes (at most ",
                                 limits_.max_name_bytes, ")"));
    }
    return s;
  }
  absl::StatusOr<const Json*> Array(const Json& j, const std::string& where, size_t max) const {
    if (!j.is_array()) return Malformed(where, "not a list");
    if (j.size() > max) {
      return TooBig(absl::StrCat(where, ": a list of ", j.size(), " entries (at most ", max, ")"));
    }
    return &j;
  }
  // A union: an object with exactly one field. Returns its name and value.
  absl::StatusOr<std::pair<std::string, const Json*>> Union(const Json& j,
                                                            const std::string& where) const {
    if (!j.is_object() || j.size() != 1) return Malformed(where, "not a union (one field)");
    return std::make_pair(j.begin().key(), &j.begin().value());
  }

  absl::StatusOr<SymInt> ParseSymInt(const Json& j, const std::string& where) const;
  absl::StatusOr<Argument> ParseArgument(const Json& j, const std::string& where) const;
  absl::StatusOr<TensorMeta> ParseTensorMeta(const Json& j, const std::string& where) const;
  absl::StatusOr<Graph> ParseGraph(const Json& j) const;
  absl::Status ParseSignature(const Json& j, ExportedProgram* out) const;

  const std::string& what() const { return what_; }
  const ReadLimits& limits() const { return limits_; }

 private:
  const std::string& what_;
  const ReadLimits& limits_;
};

// The symbol an expression is when it is one ("s0" and "Symbol('s0', positive=True,
// integer=True)"); "" otherwise.
std::string SymbolOf(absl::string_view expr) {
  expr = absl::StripAsciiWhitespace(expr);
  if (absl::ConsumePrefix(&expr, "Symbol('")) {
    const size_t end = expr.find('\'');
    if (end == absl::string_view::npos || end == 0) return "";
    expr = expr.substr(0, end);
  }
  if (expr.empty() || absl::ascii_isdigit(expr[0])) return "";
  for (char c : expr) {
    if (!absl::ascii_isalnum(c) && c != '_') return "";
  }
  return std::string(expr);
}

absl::StatusOr<SymInt> JsonReader::ParseSymInt(const Json& j, const std::string& where) const {
  ASSIGN_OR_RETURN(auto u, Union(j, where));
  SymInt out;
  if (u.first == "as_int") {
    ASSIGN_OR_RETURN(out.value, Int(*u.second, where));
    return out;
  }
  out.is_constant = false;
  if (u.first == "as_name") {
    ASSIGN_OR_RETURN(out.expr, String(*u.second, where));
    return out;
  }
  if (u.first == "as_expr") {
    ASSIGN_OR_RETURN(const Json* e, Field(*u.second, "expr_str", where));
    ASSIGN_OR_RETURN(out.expr, String(*e, where));
    out.symbol = SymbolOf(out.expr);
    if (const Json* hint = Optional(*u.second, "hint")) {
      ASSIGN_OR_RETURN(auto h, Union(*hint, where + ".hint"));
      if (h.first == "as_int") {
        ASSIGN_OR_RETURN(int64_t v, Int(*h.second, where + ".hint"));
        out.hint = v;
      }
    }
    return out;
  }
  return Malformed(where, absl::StrCat("unknown SymInt kind '", u.first, "'"));
}

absl::StatusOr<Argument> JsonReader::ParseArgument(const Json& j, const std::string& where) const {
  ASSIGN_OR_RETURN(auto u, Union(j, where));
  const std::string& kind = u.first;
  const Json& v = *u.second;
  const std::string at = absl::StrCat(where, ".", kind);
  Argument a;
  auto tensor_name = [&](const Json& t, const std::string& w) -> absl::StatusOr<std::string> {
    ASSIGN_OR_RETURN(const Json* n, Field(t, "name", w));
    ASSIGN_OR_RETURN(std::string name, String(*n, w));
    if (name.empty()) return Malformed(w, "an empty tensor name");
    return name;
  };
  if (kind == "as_none") {
    a.kind = ArgKind::kNone;
  } else if (kind == "as_tensor") {
    a.kind = ArgKind::kTensor;
    ASSIGN_OR_RETURN(std::string n, tensor_name(v, at));
    a.names.push_back(std::move(n));
  } else if (kind == "as_tensors" || kind == "as_optional_tensors") {
    a.kind = kind == "as_tensors" ? ArgKind::kTensors : ArgKind::kOptionalTensors;
    ASSIGN_OR_RETURN(const Json* list, Array(v, at, limits_.max_list));
    for (const Json& t : *list) {
      if (a.kind == ArgKind::kTensors) {
        ASSIGN_OR_RETURN(std::string n, tensor_name(t, at));
        a.names.push_back(std::move(n));
        continue;
      }
      ASSIGN_OR_RETURN(auto ou, Union(t, at));
      if (ou.first == "as_none") {
        a.names.emplace_back();
      } else if (ou.first == "as_tensor") {
        ASSIGN_OR_RETURN(std::string n, tensor_name(*ou.second, at));
        a.names.push_back(std::move(n));
      } else {
        return Malformed(at, absl::StrCat("unknown optional tensor kind '", ou.first, "'"));
      }
    }
  } else if (kind == "as_int") {
    a.kind = ArgKind::kInt;
    ASSIGN_OR_RETURN(a.i, Int(v, at));
  } else if (kind == "as_ints") {
    a.kind = ArgKind::kInts;
    ASSIGN_OR_RETURN(const Json* list, Array(v, at, limits_.max_list));
    for (const Json& x : *list) {
      ASSIGN_OR_RETURN(int64_t n, Int(x, at));
      a.ints.push_back(n);
    }
  } else if (kind == "as_float") {
    a.kind = ArgKind::kFloat;
    ASSIGN_OR_RETURN(a.f, Float(v, at));
  } else if (kind == "as_floats") {
    a.kind = ArgKind::kFloats;
    ASSIGN_OR_RETURN(const Json* list, Array(v, at, limits_.max_list));
    for (const Json& x : *list) {
      ASSIGN_OR_RETURN(double f, Float(x, at));
      a.floats.push_back(f);
    }
  } else if (kind == "as_bool") {
    a.kind = ArgKind::kBool;
    ASSIGN_OR_RETURN(a.b, Bool(v, at));
  } else if (kind == "as_bools") {
    a.kind = ArgKind::kBools;
    ASSIGN_OR_RETURN(const Json* list, Array(v, at, limits_.max_list));
    for (const Json& x : *list) {
      ASSIGN_OR_RETURN(bool b, Bool(x, at));
      a.bools.push_back(b);
    }
  } else if (kind == "as_string") {
    a.kind = ArgKind::kString;
    ASSIGN_OR_RETURN(a.s, String(v, at));
  } else if (kind == "as_strings") {
    a.kind = ArgKind::kStrings;
    ASSIGN_OR_RETURN(const Json* list, Array(v, at, limits_.max_list));
    for (const Json& x : *list) {
      ASSIGN_OR_RETURN(std::string s, String(x, at));
      a.strings.push_back(std::move(s));
    }
  } else if (kind == "as_sym_int") {
    a.kind = ArgKind::kSymInt;
    ASSIGN_OR_RETURN(SymInt s, ParseSymInt(v, at));
    a.sym_ints.push_back(std::move(s));
  } else if (kind == "as_sym_ints") {
    a.kind = ArgKind::kSymInts;
    ASSIGN_OR_RETURN(const Json* list, Array(v, at, limits_.max_list));
    for (const Json& x : *list) {
      ASSIGN_OR_RETURN(SymInt s, ParseSymInt(x, at));
      a.sym_ints.push_back(std::move(s));
    }
  } else if (kind == "as_sym_bool" || kind == "as_sym_float") {
    a.kind = kind == "as_sym_bool" ? ArgKind::kSymBool : ArgKind::kSymFloat;
    ASSIGN_OR_RETURN(auto su, Union(v, at));
    if (su.first == "as_name") {
      ASSIGN_OR_RETURN(a.s, String(*su.second, at));
      if (a.s.empty()) return Malformed(at, "an empty name");
    } else if (su.first == "as_bool" && a.kind == ArgKind::kSymBool) {
      ASSIGN_OR_RETURN(a.b, Bool(*su.second, at));
    } else if (su.first == "as_float" && a.kind == ArgKind::kSymFloat) {
      ASSIGN_OR_RETURN(a.f, Float(*su.second, at));
    } else {
      return Malformed(at, absl::StrCat("unknown kind '", su.first, "'"));
    }
  } else if (kind == "as_scalar_type" || kind == "as_memory_format" || kind == "as_layout") {
    a.kind = kind == "as_scalar_type"     ? ArgKind::kScalarType
             : kind == "as_memory_format" ? ArgKind::kMemoryFormat
                                          : ArgKind::kLayout;
    ASSIGN_OR_RETURN(a.i, Int(v, at));
  } else if (kind == "as_device") {
    a.kind = ArgKind::kDevice;
    ASSIGN_OR_RETURN(const Json* type, Field(v, "type", at));
    ASSIGN_OR_RETURN(a.s, String(*type, at));
    if (const Json* index = Optional(v, "index")) {
      ASSIGN_OR_RETURN(int64_t i, Int(*index, at));
      a.device_index = i;
    }
  } else {
    // as_graph, as_custom_obj, as_operator, as_sym_bools, as_sym_floats, and kinds newer
    // schemas add: described by name; the interpreter refuses a node that uses one.
    a.kind = ArgKind::kOther;
    a.other = kind;
  }
  return a;
}

absl::StatusOr<TensorMeta> JsonReader::ParseTensorMeta(const Json& j,
                                                       const std::string& where) const {
  TensorMeta m;
  ASSIGN_OR_RETURN(const Json* dtype, Field(j, "dtype", where));
  ASSIGN_OR_RETURN(m.dtype, Int(*dtype, where + ".dtype"));
  for (auto [key, dst] :
       {std::pair<const char*, std::vector<SymInt>*>{"sizes", &m.sizes}, {"strides", &m.strides}}) {
    const std::string at = absl::StrCat(where, ".", key);
    ASSIGN_OR_RETURN(const Json* field, Field(j, key, where));
    ASSIGN_OR_RETURN(const Json* list, Array(*field, at, limits_.max_rank));
    for (const Json& x : *list) {
      ASSIGN_OR_RETURN(SymInt s, ParseSymInt(x, at));
      dst->push_back(std::move(s));
    }
  }
  if (const Json* off = Optional(j, "storage_offset")) {
    ASSIGN_OR_RETURN(m.storage_offset, ParseSymInt(*off, where + ".storage_offset"));
  }
  if (const Json* rg = Optional(j, "requires_grad")) {
    ASSIGN_OR_RETURN(m.requires_grad, Bool(*rg, where + ".requires_grad"));
  }
  if (const Json* dev = Optional(j, "device")) {
    ASSIGN_OR_RETURN(const Json* type, Field(*dev, "type", where + ".device"));
    ASSIGN_OR_RETURN(m.device_type, String(*type, where + ".device"));
  }
  if (const Json* layout = Optional(j, "layout")) {
    ASSIGN_OR_RETURN(m.layout, Int(*layout, where + ".layout"));
  }
  return m;
}

absl::StatusOr<Graph> JsonReader::ParseGraph(const Json& j) const {
  const std::string where = "graph_module.graph";
  Graph g;
  for (auto [key, dst] : {std::pair<const char*, std::vector<Argument>*>{"inputs", &g.inputs},
                          {"outputs", &g.outputs}}) {
    const std::string at = absl::StrCat(where, ".", key);
    ASSIGN_OR_RETURN(const Json* field, Field(j, key, where));
    ASSIGN_OR_RETURN(const Json* list, Array(*field, at, limits_.max_node_arguments * 64));
    for (size_t i = 0; i < list->size(); ++i) {
      ASSIGN_OR_RETURN(Argument a, ParseArgument((*list)[i], absl::StrCat(at, "[", i, "]")));
      dst->push_back(std::move(a));
    }
  }
  ASSIGN_OR_RETURN(const Json* nodes, Field(j, "nodes", where));
  if (!nodes->is_array()) return Malformed(where + ".nodes", "not a list");
  if (nodes->size() > limits_.max_nodes) {
    return TooBig(absl::StrCat("the graph has ", nodes->size(), " nodes; at most ",
                               limits_.max_nodes, " are served"));
  }
  g.nodes.reserve(nodes->size());
  for (size_t n = 0; n < nodes->size(); ++n) {
    const std::string at = absl::StrCat(where, ".nodes[", n, "]");
    const Json& jn = (*nodes)[n];
    Node node;
    ASSIGN_OR_RETURN(const Json* target, Field(jn, "target", at));
    ASSIGN_OR_RETURN(node.target, String(*target, at + ".target"));
    ASSIGN_OR_RETURN(const Json* inputs, Field(jn, "inputs", at));
    ASSIGN_OR_RETURN(inputs, Array(*inputs, at + ".inputs", limits_.max_node_arguments));
    for (size_t i = 0; i < inputs->size(); ++i) {
      const std::string ai = absl::StrCat(at, ".inputs[", i, "]");
      NamedArgument na;
      ASSIGN_OR_RETURN(const Json* name, Field((*inputs)[i], "name", ai));
      ASSIGN_OR_RETURN(na.name, String(*name, ai + ".name"));
      ASSIGN_OR_RETURN(const Json* arg, Field((*inputs)[i], "arg", ai));
      ASSIGN_OR_RETURN(na.arg, ParseArgument(*arg, ai + ".arg"));
      if (const Json* kind = Optional((*inputs)[i], "kind")) {
        ASSIGN_OR_RETURN(int64_t k, Int(*kind, ai + ".kind"));
        na.keyword = k == 2;
      }
      node.inputs.push_back(std::move(na));
    }
    ASSIGN_OR_RETURN(const Json* outputs, Field(jn, "outputs", at));
    ASSIGN_OR_RETURN(outputs, Array(*outputs, at + ".outputs", limits_.max_node_arguments));
    for (size_t i = 0; i < outputs->size(); ++i) {
      ASSIGN_OR_RETURN(Argument a,
                       ParseArgument((*outputs)[i], absl::StrCat(at, ".outputs[", i, "]")));
      node.outputs.push_back(std::move(a));
    }
    g.nodes.push_back(std::move(node));
  }
  if (const Json* tv = Optional(j, "tensor_values")) {
    if (!tv->is_object()) return Malformed(where + ".tensor_values", "not an object");
    for (auto it = tv->begin(); it != tv->end(); ++it) {
      ASSIGN_OR_RETURN(TensorMeta m,
                       ParseTensorMeta(it.value(), absl::StrCat(where, ".tensor_values.",
                                                                it.key().substr(0, 64))));
      g.tensor_values.emplace(it.key(), std::move(m));
    }
  }
  if (const Json* sv = Optional(j, "sym_int_values")) {
    if (!sv->is_object()) return Malformed(where + ".sym_int_values", "not an object");
    for (auto it = sv->begin(); it != sv->end(); ++it) {
      ASSIGN_OR_RETURN(SymInt s, ParseSymInt(it.value(), where + ".sym_int_values"));
      g.sym_int_values.emplace(it.key(), std::move(s));
    }
  }
  if (const Json* single = Optional(j, "is_single_tensor_return")) {
    ASSIGN_OR_RETURN(g.is_single_tensor_return, Bool(*single, where + ".is_single_tensor_return"));
  }
  return g;
}

absl::Status JsonReader::ParseSignature(const Json& j, ExportedProgram* out) const {
  const std::string where = "graph_module.signature";
  // The graph input or output a spec's `arg` names (a TensorArgument, or for user
  // inputs and outputs, an Argument).
  auto tensor_arg = [&](const Json& spec, const std::string& at) -> absl::StatusOr<Argument> {
    ASSIGN_OR_RETURN(const Json* arg, Field(spec, "arg", at));
    Argument a;
    if (arg->is_object() && arg->contains("name") && arg->size() == 1) {
      a.kind = ArgKind::kTensor;
      ASSIGN_OR_RETURN(std::string n, String((*arg)["name"], at + ".arg"));
      a.names.push_back(std::move(n));
      return a;
    }
    return ParseArgument(*arg, at + ".arg");
  };
  auto name_field = [&](const Json& spec, const char* key,
                        const std::string& at) -> absl::StatusOr<std::string> {
    ASSIGN_OR_RETURN(const Json* f, Field(spec, key, at));
    return String(*f, absl::StrCat(at, ".", key));
  };
  ASSIGN_OR_RETURN(const Json* ins, Field(j, "input_specs", where));
  ASSIGN_OR_RETURN(ins, Array(*ins, where + ".input_specs", limits_.max_tensors));
  for (size_t i = 0; i < ins->size(); ++i) {
    const std::string at = absl::StrCat(where, ".input_specs[", i, "]");
    ASSIGN_OR_RETURN(auto u, Union((*ins)[i], at));
    const Json& spec = *u.second;
    InputSpec s;
    if (u.first == "user_input") {
      s.kind = InputSpec::Kind::kUserInput;
    } else if (u.first == "parameter") {
      s.kind = InputSpec::Kind::kParameter;
      ASSIGN_OR_RETURN(s.target, name_field(spec, "parameter_name", at));
    } else if (u.first == "buffer") {
      s.kind = InputSpec::Kind::kBuffer;
      ASSIGN_OR_RETURN(s.target, name_field(spec, "buffer_name", at));
      if (const Json* p = Optional(spec, "persistent")) {
        ASSIGN_OR_RETURN(s.persistent, Bool(*p, at + ".persistent"));
      }
    } else if (u.first == "tensor_constant") {
      s.kind = InputSpec::Kind::kTensorConstant;
      ASSIGN_OR_RETURN(s.target, name_field(spec, "tensor_constant_name", at));
    } else if (u.first == "custom_obj") {
      s.kind = InputSpec::Kind::kCustomObj;
    } else if (u.first == "token") {
      s.kind = InputSpec::Kind::kToken;
    } else if (u.first == "constant_input") {
      s.kind = InputSpec::Kind::kConstantInput;
      ASSIGN_OR_RETURN(s.target, name_field(spec, "name", at));
    } else {
      return Malformed(at, absl::StrCat("unknown input kind '", u.first, "'"));
    }
    if (s.kind != InputSpec::Kind::kCustomObj && s.kind != InputSpec::Kind::kToken &&
        s.kind != InputSpec::Kind::kConstantInput) {
      ASSIGN_OR_RETURN(s.arg, tensor_arg(spec, at));
    }
    out->input_specs.push_back(std::move(s));
  }
  ASSIGN_OR_RETURN(const Json* outs, Field(j, "output_specs", where));
  ASSIGN_OR_RETURN(outs, Array(*outs, where + ".output_specs", limits_.max_tensors));
  static const std::pair<const char*, OutputSpec::Kind> kOutputKinds[] = {
      {"user_output", OutputSpec::Kind::kUserOutput},
      {"loss_output", OutputSpec::Kind::kLossOutput},
      {"buffer_mutation", OutputSpec::Kind::kBufferMutation},
      {"gradient_to_parameter", OutputSpec::Kind::kGradientToParameter},
      {"gradient_to_user_input", OutputSpec::Kind::kGradientToUserInput},
      {"user_input_mutation", OutputSpec::Kind::kUserInputMutation},
      {"token", OutputSpec::Kind::kToken},
      {"parameter_mutation", OutputSpec::Kind::kParameterMutation},
  };
  for (size_t i = 0; i < outs->size(); ++i) {
    const std::string at = absl::StrCat(where, ".output_specs[", i, "]");
    ASSIGN_OR_RETURN(auto u, Union((*outs)[i], at));
    OutputSpec s;
    bool known = false;
    for (const auto& [name, kind] : kOutputKinds) {
      if (u.first == name) {
        s.kind = kind;
        known = true;
      }
    }
    if (!known) return Malformed(at, absl::StrCat("unknown output kind '", u.first, "'"));
    if (s.kind != OutputSpec::Kind::kToken) {
      ASSIGN_OR_RETURN(s.arg, tensor_arg(*u.second, at));
    }
    for (const char* key : {"buffer_name", "parameter_name", "user_input_name"}) {
      if (const Json* t = Optional(*u.second, key)) {
        ASSIGN_OR_RETURN(s.target, String(*t, absl::StrCat(at, ".", key)));
      }
    }
    out->output_specs.push_back(std::move(s));
  }
  return absl::OkStatus();
}

// Parses `text` with budgets on the number of values and the nesting depth (the
// parser itself is iterative; the budget bounds the memory the document takes).
absl::StatusOr<Json> ParseJson(const std::string& text, const JsonReader& r) {
  uint64_t values = 0, nodes = 0;
  const uint64_t max_values = r.limits().max_json_values;
  const uint64_t max_nodes = r.limits().max_nodes;
  Json::parser_callback_t budget = [&](int depth, Json::parse_event_t event, Json& parsed) -> bool {
    if (++values > max_values) {
      throw JsonBudgetExceeded{
          absl::StrCat("the program's JSON has more than ", max_values, " values")};
    }
    // Every node has a "target" (and nothing else in the schema does): a graph past
    // the node budget stops the parse there, not after the whole document is built.
    if (event == Json::parse_event_t::key && parsed.is_string() &&
        parsed.get_ref<const std::string&>() == "target" && ++nodes > max_nodes) {
      throw JsonBudgetExceeded{absl::StrCat("the graph has more than ", max_nodes,
                                            " nodes; at most ", max_nodes, " are served")};
    }
    if (static_cast<size_t>(depth) > kMaxJsonDepth) {
      throw JsonBudgetExceeded{
          absl::StrCat("the program's JSON nests deeper than ", kMaxJsonDepth)};
    }
    return true;
  };
  try {
    return Json::parse(text, budget, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const JsonBudgetExceeded& e) {
    return r.TooBig(e.why);
  } catch (const Json::exception& e) {
    return absl::DataLossError(
        absl::StrCat(r.what(), ": the program's JSON does not parse: ", e.what()));
  } catch (const std::bad_alloc&) {
    return r.TooBig("the program's JSON does not fit in memory");
  }
}

// a + b and a * b on non-negative values, false when they overflow int64.
bool AddOk(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }
bool MulOk(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

std::string ShapeText(const std::vector<int64_t>& sizes) {
  return absl::StrCat("[", absl::StrJoin(sizes, ", "), "]");
}

// That the view (sizes, strides, offset) of a storage of `numel` elements stays
// inside it, and its element count fits.
absl::Status CheckView(const TensorData& t, const std::string& name, const JsonReader& r,
                       size_t max_rank) {
  if (t.sizes.size() > max_rank || t.strides.size() != t.sizes.size()) {
    return r.Refused(absl::StrCat("tensor '", name, "' has ", t.sizes.size(), " sizes and ",
                                  t.strides.size(), " strides (at most ", max_rank, ")"));
  }
  if (t.storage_offset < 0) {
    return r.Refused(absl::StrCat("tensor '", name, "' has a negative storage offset"));
  }
  int64_t last = t.storage_offset;  // the largest element index the view reaches
  bool empty = false;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] < 0 || t.strides[d] < 0) {
      return r.Refused(absl::StrCat("tensor '", name, "' has a negative size or stride"));
    }
    if (t.sizes[d] == 0) empty = true;
  }
  if (empty) return absl::OkStatus();
  int64_t count = 1;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    int64_t step = 0;
    if (!MulOk(t.sizes[d] - 1, t.strides[d], &step) || !AddOk(last, step, &last) ||
        !MulOk(count, t.sizes[d], &count)) {
      return r.Refused(
          absl::StrCat("tensor '", name, "' of shape ", ShapeText(t.sizes), " overflows"));
    }
  }
  if (static_cast<uint64_t>(last) >= t.storage_numel) {
    return r.Refused(absl::StrCat("tensor '", name, "' of shape ", ShapeText(t.sizes),
                                  " reaches element ", last, " of a storage of ", t.storage_numel));
  }
  // A view may repeat elements (stride 0), but not into more than a few times its
  // storage: serving materialises it.
  if (static_cast<uint64_t>(count) > 4 * t.storage_numel + kViewSlackElements) {
    return r.Refused(absl::StrCat("tensor '", name, "' of shape ", ShapeText(t.sizes), " has ",
                                  count, " elements, a view of a storage of ", t.storage_numel));
  }
  return absl::OkStatus();
}

// The tensors of a torch.save file inside the archive (2.6's serialized_state_dict.pt
// and serialized_constants.pt, the PT2 archive's legacy <model>.pt and use_pickle
// records): a dict of named tensors, or with `single`, one tensor stored as "".
absl::Status ReadPickledTensors(const ZipReader& outer, const ZipReader::Entry& entry, bool single,
                                const JsonReader& r, ExportedProgram* out,
                                std::map<std::string, TensorData>* dst) {
  const std::string what = absl::StrCat(r.what(), ":", entry.name);
  auto nested = outer.OpenNested(entry);
  if (!nested.ok()) {
    return absl::Status(nested.status().code(),
                        absl::StrCat(r.what(), ": record '", entry.name,
                                     "' is not a torch.save file: ", nested.status().message()));
  }
  pickle::UnpicklerOptions options;
  options.refusal_hint =
      "an exported program's weights and constants may only be tensors (custom objects and "
      "other Python values are not served)";
  ASSIGN_OR_RETURN(PickledStateDict p,
                   ParseArchivePickle(**nested, what, r.limits().max_pickle_bytes, options));
  const ZipReader* zip = nested->get();
  out->zips.push_back(*std::move(nested));
  std::vector<std::pair<std::string, const pickle::Value*>> tensors;
  const pickle::Value* root = p.pickled->root();
  if (single) {
    if (root->kind != pickle::Kind::kTensor) {
      return r.Refused(
          absl::StrCat(what, " holds a ", pickle::KindName(root->kind), ", not a tensor"));
    }
    tensors.emplace_back("", root);
  } else {
    if (root->kind != pickle::Kind::kDict) {
      return r.Refused(
          absl::StrCat(what, " holds a ", pickle::KindName(root->kind), ", not a dict of tensors"));
    }
    for (const auto& [k, v] : root->entries) {
      if (k->kind != pickle::Kind::kString || v->kind != pickle::Kind::kTensor) {
        return r.Refused(absl::StrCat(what, ": entry ",
                                      k->kind == pickle::Kind::kString ? "'" + k->s + "'" : "",
                                      " is a ", pickle::KindName(v->kind), ", not a tensor"));
      }
      tensors.emplace_back(k->s, v);
    }
  }
  if (dst->size() + tensors.size() > r.limits().max_tensors) {
    return r.TooBig(absl::StrCat("more than ", r.limits().max_tensors, " weights and constants"));
  }
  for (const auto& [name, v] : tensors) {
    const pickle::StorageRef& s = v->tensor.storage->storage;
    TensorData t;
    t.dtype = s.type;
    t.sizes = v->tensor.sizes;
    t.strides = v->tensor.strides;
    t.storage_offset = v->tensor.offset;
    t.zip = zip;
    auto rec = zip->Find(absl::StrCat(p.prefix, "data/", s.key));
    if (!rec.ok()) {
      return absl::DataLossError(
          absl::StrCat(what, ": storage '", s.key, "' of tensor '", name, "' has no record"));
    }
    t.record = *rec;
    if (s.numel < 0 ||
        static_cast<uint64_t>(s.numel) > t.record->size / pickle::StorageElementSize(s.type) ||
        static_cast<uint64_t>(s.numel) * pickle::StorageElementSize(s.type) != t.record->size) {
      return absl::DataLossError(absl::StrCat(what, ": storage '", s.key, "' of tensor '", name,
                                              "' does not match its record's size"));
    }
    t.storage_numel = static_cast<uint64_t>(s.numel);
    RETURN_IF_ERROR(CheckView(t, name, r, r.limits().max_rank));
    if (!dst->emplace(name, std::move(t)).second) {
      return r.Refused(absl::StrCat("tensor '", name, "' is stored twice"));
    }
  }
  return absl::OkStatus();
}

// A PT2 archive's payload config (data/weights/<model>_weights_config.json or the
// constants'): {"config": {fqn: {path_name, is_param, use_pickle, tensor_meta}}}.
absl::Status ReadPayloadConfig(const ZipReader& zip, const std::string& root,
                               const std::string& dir, const std::string& config_name,
                               const JsonReader& r, ExportedProgram* out,
                               std::map<std::string, TensorData>* dst) {
  auto entry = zip.Find(root + dir + config_name);
  if (!entry.ok()) return absl::OkStatus();  // a program without weights (or constants)
  ASSIGN_OR_RETURN(std::string text, zip.ReadToString(**entry, r.limits().max_json_bytes));
  ASSIGN_OR_RETURN(Json j, ParseJson(text, r));
  const std::string where = dir + config_name;
  ASSIGN_OR_RETURN(const Json* config, r.Field(j, "config", where));
  if (!config->is_object()) return r.Malformed(where, "config is not an object");
  if (dst->size() + config->size() > r.limits().max_tensors) {
    return r.TooBig(absl::StrCat("more than ", r.limits().max_tensors, " weights and constants"));
  }
  for (auto it = config->begin(); it != config->end(); ++it) {
    const std::string& fqn = it.key();
    const std::string at = absl::StrCat(where, ".", fqn.substr(0, 64));
    const Json& meta = it.value();
    ASSIGN_OR_RETURN(const Json* path, r.Field(meta, "path_name", at));
    ASSIGN_OR_RETURN(std::string path_name, r.String(*path, at + ".path_name"));
    if (path_name.empty() || absl::StrContains(path_name, "/") || path_name == "." ||
        path_name == "..") {
      return r.Malformed(at, "path_name is not a record of its folder");
    }
    bool use_pickle = false;
    if (const Json* p = r.Optional(meta, "use_pickle")) {
      ASSIGN_OR_RETURN(use_pickle, r.Bool(*p, at + ".use_pickle"));
    }
    auto record = zip.Find(root + dir + path_name);
    if (!record.ok()) {
      return absl::DataLossError(absl::StrCat(r.what(), ": '", fqn, "' is in record '", dir,
                                              path_name, "', which the archive lacks"));
    }
    if (use_pickle) {
      std::map<std::string, TensorData> one;
      RETURN_IF_ERROR(ReadPickledTensors(zip, **record, /*single=*/true, r, out, &one));
      if (!dst->emplace(fqn, std::move(one.begin()->second)).second) {
        return r.Refused(absl::StrCat("tensor '", fqn, "' is stored twice"));
      }
      continue;
    }
    ASSIGN_OR_RETURN(const Json* tm, r.Field(meta, "tensor_meta", at));
    ASSIGN_OR_RETURN(TensorMeta m, r.ParseTensorMeta(*tm, at + ".tensor_meta"));
    TensorData t;
    ASSIGN_OR_RETURN(t.dtype, StorageTypeOf(m.dtype));
    if (m.layout != 7) return r.Refused(absl::StrCat("tensor '", fqn, "' is not strided"));
    for (auto [from, to] :
         {std::pair<const std::vector<SymInt>*, std::vector<int64_t>*>{&m.sizes, &t.sizes},
          {&m.strides, &t.strides}}) {
      for (const SymInt& s : *from) {
        if (!s.is_constant) {
          return r.Refused(absl::StrCat("weight '", fqn, "' has a symbolic size or stride"));
        }
        to->push_back(s.value);
      }
    }
    if (!m.storage_offset.is_constant) {
      return r.Refused(absl::StrCat("weight '", fqn, "' has a symbolic storage offset"));
    }
    t.storage_offset = m.storage_offset.value;
    t.zip = &zip;
    t.record = *record;
    if (t.record->method != 0) {
      return r.Refused(absl::StrCat("record '", t.record->name, "' is compressed"));
    }
    const size_t element = pickle::StorageElementSize(t.dtype);
    if (t.record->size % element != 0) {
      return absl::DataLossError(absl::StrCat(r.what(), ": record '", t.record->name, "' holds ",
                                              t.record->size, " bytes, not whole ",
                                              pickle::StorageTypeName(t.dtype), " elements"));
    }
    t.storage_numel = t.record->size / element;
    RETURN_IF_ERROR(CheckView(t, fqn, r, r.limits().max_rank));
    if (!dst->emplace(fqn, std::move(t)).second) {
      return r.Refused(absl::StrCat("tensor '", fqn, "' is stored twice"));
    }
  }
  return absl::OkStatus();
}

// Every name a node input (or graph output) uses.
void UsedNames(const Argument& a, std::vector<const std::string*>* out) {
  for (const std::string& n : a.names) {
    if (!n.empty()) out->push_back(&n);
  }
  for (const SymInt& s : a.sym_ints) {
    if (!s.is_constant && s.symbol.empty()) out->push_back(&s.expr);
  }
  if ((a.kind == ArgKind::kSymBool || a.kind == ArgKind::kSymFloat) && !a.s.empty()) {
    out->push_back(&a.s);
  }
}

// The checks of the graph that need no operator: each value defined once, before
// its first use; the signature matching the graph; the weights present and shaped
// as the graph declares.
absl::Status CheckProgramWith(const ExportedProgram& p, const JsonReader& r) {
  std::unordered_set<std::string> defined;
  auto define = [&](const Argument& a, const std::string& where) -> absl::Status {
    std::vector<const std::string*> names;
    UsedNames(a, &names);
    for (const std::string* n : names) {
      if (!defined.insert(*n).second) {
        return r.Refused(absl::StrCat(where, " defines '", *n, "' a second time"));
      }
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < p.graph.inputs.size(); ++i) {
    RETURN_IF_ERROR(define(p.graph.inputs[i], absl::StrCat("graph input ", i)));
  }
  for (size_t n = 0; n < p.graph.nodes.size(); ++n) {
    const Node& node = p.graph.nodes[n];
    for (const NamedArgument& in : node.inputs) {
      std::vector<const std::string*> names;
      UsedNames(in.arg, &names);
      for (const std::string* name : names) {
        if (defined.count(*name) == 0) {
          return r.Refused(absl::StrCat("node ", n, " (", node.target, ") argument '", in.name,
                                        "' uses '", *name,
                                        "', which no graph input or earlier node defines"));
        }
      }
    }
    for (const Argument& o : node.outputs) {
      RETURN_IF_ERROR(define(o, absl::StrCat("node ", n, " (", node.target, ")")));
    }
  }
  for (size_t i = 0; i < p.graph.outputs.size(); ++i) {
    std::vector<const std::string*> names;
    UsedNames(p.graph.outputs[i], &names);
    for (const std::string* name : names) {
      if (defined.count(*name) == 0) {
        return r.Refused(
            absl::StrCat("graph output ", i, " is '", *name, "', which nothing defines"));
      }
    }
  }
  if (p.input_specs.size() != p.graph.inputs.size()) {
    return r.Refused(absl::StrCat("the signature lists ", p.input_specs.size(),
                                  " inputs but the graph has ", p.graph.inputs.size()));
  }
  if (p.output_specs.size() != p.graph.outputs.size()) {
    return r.Refused(absl::StrCat("the signature lists ", p.output_specs.size(),
                                  " outputs but the graph has ", p.graph.outputs.size()));
  }
  for (size_t i = 0; i < p.input_specs.size(); ++i) {
    const InputSpec& s = p.input_specs[i];
    const Argument& in = p.graph.inputs[i];
    const bool weight = s.kind == InputSpec::Kind::kParameter ||
                        s.kind == InputSpec::Kind::kBuffer ||
                        s.kind == InputSpec::Kind::kTensorConstant;
    if (s.kind == InputSpec::Kind::kUserInput || weight) {
      if (s.arg.names != in.names || (weight && in.kind != ArgKind::kTensor)) {
        return r.Refused(absl::StrCat("signature input ", i, " does not name graph input ", i));
      }
    }
    if (!weight) continue;
    // Parameters and persistent buffers are in the state dict, tensor constants and
    // non-persistent buffers with the constants; some writers differ: either place.
    const TensorData* t = nullptr;
    for (const auto* map : {&p.state_dict, &p.constants}) {
      auto it = map->find(s.target);
      if (t == nullptr && it != map->end()) t = &it->second;
    }
    if (t == nullptr) {
      return r.Refused(absl::StrCat("the program's ",
                                    s.kind == InputSpec::Kind::kParameter ? "parameter"
                                    : s.kind == InputSpec::Kind::kBuffer  ? "buffer"
                                                                          : "constant",
                                    " '", s.target, "' is not in its weights"));
    }
    auto meta = p.graph.tensor_values.find(in.names[0]);
    if (meta == p.graph.tensor_values.end()) continue;
    std::vector<int64_t> declared;
    bool constant = true;
    for (const SymInt& d : meta->second.sizes) {
      constant = constant && d.is_constant;
      declared.push_back(d.value);
    }
    if (constant && declared != t->sizes) {
      return r.Refused(absl::StrCat("'", s.target, "' is ", ShapeText(t->sizes),
                                    " in the weights but ", ShapeText(declared), " in the graph"));
    }
    auto dtype = StorageTypeOf(meta->second.dtype);
    if (dtype.ok() && *dtype != t->dtype) {
      return r.Refused(absl::StrCat("'", s.target, "' is ", pickle::StorageTypeName(t->dtype),
                                    " in the weights but ", pickle::StorageTypeName(*dtype),
                                    " in the graph"));
    }
  }
  return absl::OkStatus();
}

// The PT2 archive's root folder ("" for none) when `zip` is one: its
// archive_format record says "pt2".
std::optional<std::string> Pt2Root(const ZipReader& zip) {
  for (const ZipReader::Entry& e : zip.entries()) {
    const size_t slash = e.name.find('/');
    const std::string root = slash == std::string::npos ? "" : e.name.substr(0, slash + 1);
    if (e.name != root + "archive_format") continue;
    auto text = zip.ReadToString(e, 16);
    if (text.ok() && absl::StripAsciiWhitespace(*text) == "pt2") return root;
  }
  return std::nullopt;
}

// The PT2 archive's models/<name>.json records.
std::vector<const ZipReader::Entry*> Pt2Models(const ZipReader& zip, const std::string& root) {
  std::vector<const ZipReader::Entry*> out;
  const std::string dir = root + "models/";
  for (const ZipReader::Entry& e : zip.entries()) {
    if (absl::StartsWith(e.name, dir) && absl::EndsWith(e.name, ".json") &&
        e.name.find('/', dir.size()) == std::string::npos && e.name.size() > dir.size() + 5) {
      out.push_back(&e);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<pickle::StorageType> StorageTypeOf(int64_t scalar_type) {
  switch (static_cast<ScalarType>(scalar_type)) {
    case ScalarType::kByte:
      return pickle::StorageType::kByte;
    case ScalarType::kChar:
      return pickle::StorageType::kChar;
    case ScalarType::kShort:
      return pickle::StorageType::kShort;
    case ScalarType::kInt:
      return pickle::StorageType::kInt;
    case ScalarType::kLong:
      return pickle::StorageType::kLong;
    case ScalarType::kHalf:
      return pickle::StorageType::kHalf;
    case ScalarType::kFloat:
      return pickle::StorageType::kFloat;
    case ScalarType::kDouble:
      return pickle::StorageType::kDouble;
    case ScalarType::kComplexFloat:
      return pickle::StorageType::kComplexFloat;
    case ScalarType::kComplexDouble:
      return pickle::StorageType::kComplexDouble;
    case ScalarType::kBool:
      return pickle::StorageType::kBool;
    case ScalarType::kBFloat16:
      return pickle::StorageType::kBFloat16;
    default:
      break;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("dtype number ", scalar_type, " of torch.export's schema is not served"));
}

Pt2Kind ClassifyPt2(const ZipReader& zip) {
  if (std::optional<std::string> root = Pt2Root(zip)) {
    if (!Pt2Models(zip, *root).empty()) return Pt2Kind::kExportedProgram;
    for (const ZipReader::Entry& e : zip.entries()) {
      if (absl::StartsWith(e.name, *root + "data/aotinductor/")) return Pt2Kind::kAotiPackage;
    }
    return Pt2Kind::kNotPt2;
  }
  if (zip.Find("serialized_exported_program.json").ok()) return Pt2Kind::kExportedProgram;
  return Pt2Kind::kNotPt2;
}

absl::Status ParseProgramJson(const std::string& text, const std::string& what,
                              const ReadLimits& limits, ExportedProgram* p) {
  JsonReader r(what, limits);
  ASSIGN_OR_RETURN(Json j, ParseJson(text, r));

  ASSIGN_OR_RETURN(const Json* version, r.Field(j, "schema_version", "the top level"));
  ASSIGN_OR_RETURN(const Json* major, r.Field(*version, "major", "schema_version"));
  ASSIGN_OR_RETURN(p->schema_major, r.Int(*major, "schema_version.major"));
  if (const Json* minor = r.Optional(*version, "minor")) {
    ASSIGN_OR_RETURN(p->schema_minor, r.Int(*minor, "schema_version.minor"));
  }
  if (const Json* tv = r.Optional(j, "torch_version")) {
    ASSIGN_OR_RETURN(p->torch_version, r.String(*tv, "torch_version"));
  }
  if (p->schema_major != kSchemaMajor) {
    return r.Refused(absl::StrCat(
        "the program is in torch.export's schema version ", p->schema_major, ".", p->schema_minor,
        p->torch_version.empty() ? "" : absl::StrCat(" (written by torch ", p->torch_version, ")"),
        "; this server reads major version ", kSchemaMajor, " (torch 2.6 to 2.9)"));
  }
  ASSIGN_OR_RETURN(const Json* gm, r.Field(j, "graph_module", "the top level"));
  ASSIGN_OR_RETURN(const Json* graph, r.Field(*gm, "graph", "graph_module"));
  ASSIGN_OR_RETURN(p->graph, r.ParseGraph(*graph));
  ASSIGN_OR_RETURN(const Json* signature, r.Field(*gm, "signature", "graph_module"));
  RETURN_IF_ERROR(r.ParseSignature(*signature, p));
  if (const Json* rc = r.Optional(j, "range_constraints")) {
    if (!rc->is_object()) return r.Malformed("range_constraints", "not an object");
    for (auto it = rc->begin(); it != rc->end(); ++it) {
      const std::string at = absl::StrCat("range_constraints.", it.key().substr(0, 64));
      RangeConstraint c;
      if (const Json* lo = r.Optional(it.value(), "min_val")) {
        ASSIGN_OR_RETURN(int64_t v, r.Int(*lo, at + ".min_val"));
        c.min = v;
      }
      if (const Json* hi = r.Optional(it.value(), "max_val")) {
        // Unbounded is null, or a huge number past int64 from some writers.
        if (hi->is_number_integer() || hi->is_number_unsigned()) {
          auto v = r.Int(*hi, at + ".max_val");
          if (v.ok()) c.max = *v;
        } else if (!hi->is_number()) {
          return r.Malformed(at + ".max_val", "not a number");
        }
      }
      p->range_constraints.emplace(SymbolOf(it.key()).empty() ? it.key() : SymbolOf(it.key()), c);
    }
  }
  if (const Json* ops = r.Optional(j, "opset_version")) {
    if (!ops->is_object()) return r.Malformed("opset_version", "not an object");
    for (auto it = ops->begin(); it != ops->end(); ++it) {
      ASSIGN_OR_RETURN(int64_t v, r.Int(it.value(), "opset_version"));
      p->opset_version.emplace(it.key(), v);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ExportedProgram> ReadExportedProgram(std::unique_ptr<ZipReader> zip,
                                                    const std::string& what,
                                                    const ReadLimits& limits) {
  JsonReader r(what, limits);
  ExportedProgram p;
  const ZipReader& z = *zip;
  p.zips.push_back(std::move(zip));
  const ZipReader::Entry* program = nullptr;
  std::string root;
  if (std::optional<std::string> pt2 = Pt2Root(z)) {
    p.layout = ExportedProgram::Layout::kPt2Archive;
    root = *pt2;
    std::vector<const ZipReader::Entry*> models = Pt2Models(z, root);
    if (models.empty()) {
      for (const ZipReader::Entry& e : z.entries()) {
        if (absl::StartsWith(e.name, root + "data/aotinductor/")) {
          return r.Refused(
              "the archive is an AOTInductor package (compiled native code), not an exported "
              "program; serve it as format AOTI_PACKAGE");
        }
      }
      return r.Refused("the PT2 archive holds no program (no models/<name>.json record)");
    }
    // One program per archive: "model" (what torch.export.save names it), or the only one.
    for (const ZipReader::Entry* m : models) {
      if (m->name == root + "models/model.json") program = m;
    }
    if (program == nullptr && models.size() == 1) program = models[0];
    if (program == nullptr) {
      std::vector<std::string> names;
      for (const ZipReader::Entry* m : models) names.push_back(m->name);
      return r.Refused(
          absl::StrCat("the PT2 archive holds ", models.size(),
                       " programs and none named 'model': ", absl::StrJoin(names, ", ")));
    }
    const size_t dir = (root + "models/").size();
    p.model_name = program->name.substr(dir, program->name.size() - dir - 5);
  } else {
    auto e = z.Find("serialized_exported_program.json");
    if (!e.ok()) {
      return r.Refused(
          "the file is not a torch.export archive (no serialized_exported_program.json, no "
          "archive_format 'pt2'); save it with torch.export.save(ep, path)");
    }
    program = *e;
  }
  if (program->size > limits.max_json_bytes) {
    return r.TooBig(absl::StrCat("the program's JSON is ", program->size, " bytes (at most ",
                                 limits.max_json_bytes, ")"));
  }
  {
    ASSIGN_OR_RETURN(std::string text, z.ReadToString(*program, limits.max_json_bytes));
    RETURN_IF_ERROR(ParseProgramJson(text, what, limits, &p));
  }

  if (p.layout == ExportedProgram::Layout::kTorch26) {
    for (auto [name, dst] : {std::pair<const char*, std::map<std::string, TensorData>*>{
                                 "serialized_state_dict.pt", &p.state_dict},
                             {"serialized_constants.pt", &p.constants}}) {
      auto e = z.Find(name);
      if (!e.ok()) continue;  // written only when there is something in it
      RETURN_IF_ERROR(ReadPickledTensors(z, **e, /*single=*/false, r, &p, dst));
    }
  } else {
    const std::string& m = p.model_name;
    for (auto [dir, dst] : {std::pair<const char*, std::map<std::string, TensorData>*>{
                                "data/weights/", &p.state_dict},
                            {"data/constants/", &p.constants}}) {
      // The older layout of torch 2.7: one torch.save state dict, <model>.pt.
      if (auto legacy = z.Find(absl::StrCat(root, dir, m, ".pt")); legacy.ok()) {
        RETURN_IF_ERROR(ReadPickledTensors(z, **legacy, /*single=*/false, r, &p, dst));
      }
      const std::string config =
          absl::StrCat(m, dst == &p.state_dict ? "_weights_config.json" : "_constants_config.json");
      RETURN_IF_ERROR(ReadPayloadConfig(z, root, dir, config, r, &p, dst));
    }
  }
  RETURN_IF_ERROR(CheckProgramWith(p, r));
  return p;
}

absl::Status CheckProgram(const ExportedProgram& program, const std::string& what,
                          const ReadLimits& limits) {
  return CheckProgramWith(program, JsonReader(what, limits));
}

absl::Status CheckStateDictFitsProgram(const ExportedProgram& program,
                                       const std::map<std::string, std::vector<int64_t>>& given,
                                       const std::string& what) {
  std::map<std::string, std::vector<int64_t>> expected;
  for (const InputSpec& s : program.input_specs) {
    const bool in_state_dict = s.kind == InputSpec::Kind::kParameter ||
                               (s.kind == InputSpec::Kind::kBuffer && s.persistent);
    if (!in_state_dict) continue;
    for (const auto* map : {&program.state_dict, &program.constants}) {
      auto t = map->find(s.target);
      if (t != map->end() && expected.count(s.target) == 0) expected[s.target] = t->second.sizes;
    }
  }
  const std::string mismatch = StateDictMismatch(expected, given, "the program");
  if (mismatch.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what,
      " does not fit the exported program (load_state_dict(strict=True) would fail): ", mismatch));
}

absl::StatusOr<std::vector<InputDim>> UserInputDims(const ExportedProgram& program, size_t index,
                                                    std::vector<int64_t>* warmup_shape) {
  size_t user = 0;
  for (const InputSpec& s : program.input_specs) {
    if (s.kind != InputSpec::Kind::kUserInput || user++ != index) continue;
    if (s.arg.kind != ArgKind::kTensor || s.arg.names.empty()) {
      return absl::FailedPreconditionError("a user input that is not a tensor is not served");
    }
    auto meta = program.graph.tensor_values.find(s.arg.names[0]);
    if (meta == program.graph.tensor_values.end()) {
      return absl::FailedPreconditionError("the input has no shape in the graph");
    }
    std::vector<InputDim> dims;
    std::vector<int64_t> warmup;
    for (size_t d = 0; d < meta->second.sizes.size(); ++d) {
      const SymInt& size = meta->second.sizes[d];
      InputDim dim;
      dim.constant = size.is_constant;
      dim.value = size.value;
      if (!size.is_constant) {
        if (size.symbol.empty()) {
          return absl::FailedPreconditionError(
              absl::StrCat("dimension ", d, " is the expression '", size.expr,
                           "'; dimensions that are one symbol or a number are served"));
        }
        dim.symbol = size.symbol;
        auto range = program.range_constraints.find(size.symbol);
        if (range != program.range_constraints.end()) {
          if (range->second.min) dim.min = *range->second.min;
          if (range->second.max) dim.max = *range->second.max;
        }
        dim.min = std::max<int64_t>(dim.min, 0);
      }
      warmup.push_back(size.is_constant ? size.value
                                        : size.hint.value_or(dim.min > 0 ? dim.min : 1));
      dims.push_back(dim);
    }
    if (dims.empty()) {
      return absl::FailedPreconditionError("a scalar input is not served");
    }
    if (warmup_shape != nullptr) *warmup_shape = std::move(warmup);
    return dims;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("the program has no user input ", index, " (it takes ", user, ")"));
}

namespace {
std::string RangeText(const InputDim& d) {
  return absl::StrCat(
      d.symbol, " in [", std::max<int64_t>(d.min, 1), ", ",
      d.max == std::numeric_limits<int64_t>::max() ? std::string("inf") : absl::StrCat(d.max), "]");
}
}  // namespace

absl::Status CheckInputShape(const std::vector<InputDim>& dims, const std::vector<int64_t>& shape,
                             const std::string& what) {
  auto expected = [&] {
    std::vector<std::string> parts;
    for (const InputDim& d : dims) {
      parts.push_back(d.constant ? absl::StrCat(d.value)
                                 : absl::StrCat(d.symbol, " in [", d.min, ", ",
                                                d.max == std::numeric_limits<int64_t>::max()
                                                    ? std::string("inf")
                                                    : absl::StrCat(d.max),
                                                "]"));
    }
    return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
  };
  if (shape.size() != dims.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the input has ", shape.size(), " dimensions; ", what, " for ", expected()));
  }
  // Dimensions of one symbol (a square image's height and width) must agree.
  for (size_t d = 1; d < dims.size(); ++d) {
    for (size_t e = 0; e < d; ++e) {
      if (!dims[d].constant && !dims[e].constant && dims[d].symbol == dims[e].symbol &&
          shape[d] != shape[e]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "dimensions ", e, " and ", d, " of the input are ", shape[e], " and ", shape[d], "; ",
            what, " with both ", dims[d].symbol, " (input shape ", expected(), ")"));
      }
    }
  }
  for (size_t d = 0; d < dims.size(); ++d) {
    const InputDim& want = dims[d];
    bool ok = want.constant ? shape[d] == want.value
                            : shape[d] >= std::max<int64_t>(want.min, 1) && shape[d] <= want.max;
    // The batch: past the range's maximum (or a multiple of a fixed batch), it runs
    // in pieces inside the range.
    if (d == 0 && !ok && shape[0] > 0) {
      ok = want.constant ? want.value > 0 && shape[0] % want.value == 0 : shape[0] > want.max;
    }
    if (!ok) {
      const std::string range = want.constant ? absl::StrCat("exactly ", want.value,
                                                             d == 0 ? " (or a multiple of it)" : "")
                                              : RangeText(want);
      return absl::InvalidArgumentError(absl::StrCat("dimension ", d, " of the input is ", shape[d],
                                                     "; ", what, " for ", range, " (input shape ",
                                                     expected(), ")"));
    }
  }
  return absl::OkStatus();
}

int64_t BatchPiece(const std::vector<InputDim>& dims) {
  if (dims.empty()) return std::numeric_limits<int64_t>::max();
  return dims[0].constant ? dims[0].value : dims[0].max;
}

std::string InputDimSymbol(const ExportedProgram& program, size_t index, size_t dim) {
  size_t user = 0;
  for (size_t i = 0; i < program.input_specs.size(); ++i) {
    const InputSpec& s = program.input_specs[i];
    if (s.kind != InputSpec::Kind::kUserInput) continue;
    if (user++ != index) continue;
    if (s.arg.kind != ArgKind::kTensor) return "";
    auto meta = program.graph.tensor_values.find(s.arg.names[0]);
    if (meta == program.graph.tensor_values.end() || dim >= meta->second.sizes.size()) return "";
    return meta->second.sizes[dim].symbol;
  }
  return "";
}

}  // namespace exported
}  // namespace modelserver
