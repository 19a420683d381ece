#ifndef MODELSERVER_SERVER_CHECKPOINT_EXPORTED_PROGRAM_H_
#define MODELSERVER_SERVER_CHECKPOINT_EXPORTED_PROGRAM_H_

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/checkpoint/unpickler.h"
#include "server/checkpoint/zip_reader.h"

namespace modelserver {
namespace exported {

// The torch-free half of serving `torch.export` programs: what a `.pt2` file says,
// read into plain data and checked, before any operator is looked up. Both layouts:
//
//   torch 2.6 (`torch.export.save`): records serialized_exported_program.json,
//     serialized_state_dict.pt, serialized_constants.pt (torch.save files, read with
//     the restricted unpickler), serialized_example_inputs.pt (not read), version.
//   torch >= 2.7, the "PT2 archive" (`archive_format` = "pt2"): under one root folder,
//     models/<name>.json, data/weights/<name>_weights_config.json with raw storage
//     records data/weights/weight_N (or torch.save files with use_pickle), the same
//     for data/constants/, and the older data/weights/<name>.pt state dict.
//
// The program's JSON is torch's serialization schema, major version 8 (what torch
// 2.6 to 2.9 write); other major versions are refused naming theirs.

// The schema's ScalarType numbers (torch/_export/serde/schema.py).
enum class ScalarType : int {
  kByte = 1,
  kChar = 2,
  kShort = 3,
  kInt = 4,
  kLong = 5,
  kHalf = 6,
  kFloat = 7,
  kDouble = 8,
  kComplexHalf = 9,
  kComplexFloat = 10,
  kComplexDouble = 11,
  kBool = 12,
  kBFloat16 = 13,
};
// The storage type of a schema dtype that the server reads; FAILED_PRECONDITION otherwise.
absl::StatusOr<pickle::StorageType> StorageTypeOf(int64_t scalar_type);

// A symbolic or concrete integer (the schema's SymInt / SymIntArgument).
struct SymInt {
  bool is_constant = true;
  int64_t value = 0;   // the constant
  std::string symbol;  // else: a symbol's name ("s0", from "Symbol('s0', ...)") when the
                       // expression is one symbol, or
  std::string expr;    // the expression text as written (an as_name value: its name)
  std::optional<int64_t> hint;
};

enum class ArgKind {
  kNone,
  kTensor,
  kTensors,
  kOptionalTensors,
  kInt,
  kInts,
  kFloat,
  kFloats,
  kBool,
  kBools,
  kString,
  kStrings,
  kSymInt,
  kSymInts,
  kSymBool,
  kSymFloat,
  kScalarType,
  kMemoryFormat,
  kLayout,
  kDevice,
  kOther,  // a kind the interpreter does not run (graphs, custom objects, ...): `other` names it
};

// One argument (the schema's Argument union).
struct Argument {
  ArgKind kind = ArgKind::kNone;
  // kTensor: one name; kTensors: one each; kOptionalTensors: one each, "" for None.
  std::vector<std::string> names;
  int64_t i = 0;               // kInt; kScalarType / kMemoryFormat / kLayout: the enum number
  double f = 0;                // kFloat
  bool b = false;              // kBool
  std::string s;               // kString; kDevice: the type ("cpu"); kSymBool / kSymFloat: name
  std::vector<int64_t> ints;   // kInts
  std::vector<double> floats;  // kFloats
  std::vector<bool> bools;     // kBools
  std::vector<std::string> strings;     // kStrings
  std::vector<SymInt> sym_ints;         // kSymInt (one), kSymInts
  std::optional<int64_t> device_index;  // kDevice
  std::string other;                    // kOther: the union field's name ("as_graph")
};

struct NamedArgument {
  std::string name;
  Argument arg;
  bool keyword = false;  // kind KEYWORD (schema >= 8.?); positional or unknown otherwise
};

struct Node {
  std::string target;  // "torch.ops.aten.conv2d.default"
  std::vector<NamedArgument> inputs;
  std::vector<Argument> outputs;
};

struct TensorMeta {
  int64_t dtype = 0;  // ScalarType number
  std::vector<SymInt> sizes;
  std::vector<SymInt> strides;
  SymInt storage_offset;
  bool requires_grad = false;
  std::string device_type;  // "cpu", "cuda", ...
  int64_t layout = 7;       // Strided
};

struct Graph {
  std::vector<Argument> inputs;
  std::vector<Argument> outputs;
  std::vector<Node> nodes;
  std::map<std::string, TensorMeta> tensor_values;
  std::map<std::string, SymInt> sym_int_values;
  bool is_single_tensor_return = false;
};

struct InputSpec {
  enum class Kind {
    kUserInput,
    kParameter,
    kBuffer,
    kTensorConstant,
    kCustomObj,
    kToken,
    kConstantInput
  };
  Kind kind = Kind::kUserInput;
  Argument arg;            // kUserInput: any argument; others: the graph input (a tensor)
  std::string target;      // the parameter's / buffer's / constant's name in the state dict
  bool persistent = true;  // kBuffer
};

struct OutputSpec {
  enum class Kind {
    kUserOutput,
    kLossOutput,
    kBufferMutation,
    kGradientToParameter,
    kGradientToUserInput,
    kUserInputMutation,
    kToken,
    kParameterMutation
  };
  Kind kind = Kind::kUserOutput;
  Argument arg;
  std::string target;
};

// A dynamic dimension's allowed range; absent bounds are unbounded.
struct RangeConstraint {
  std::optional<int64_t> min;
  std::optional<int64_t> max;
};

// A weight or constant: a view onto a storage that lives in a zip record (the
// record's bytes are the whole storage, little-endian). Checked: the view lies
// inside the storage, with checked arithmetic.
struct TensorData {
  pickle::StorageType dtype = pickle::StorageType::kFloat;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  int64_t storage_offset = 0;
  const ZipReader* zip = nullptr;            // owned by the ExportedProgram
  const ZipReader::Entry* record = nullptr;  // the storage's bytes
  uint64_t storage_numel = 0;
};

struct ExportedProgram {
  enum class Layout { kTorch26, kPt2Archive };
  Layout layout = Layout::kTorch26;
  int64_t schema_major = 0, schema_minor = 0;
  std::string torch_version;  // "2.6.0+debian"; "" when absent
  std::string model_name;     // the PT2 archive's model ("model"); "" for the 2.6 layout
  Graph graph;
  std::vector<InputSpec> input_specs;
  std::vector<OutputSpec> output_specs;
  std::map<std::string, RangeConstraint> range_constraints;  // by symbol
  std::map<std::string, int64_t> opset_version;              // {"aten": 10}
  std::map<std::string, TensorData> state_dict;              // parameters and buffers
  std::map<std::string, TensorData> constants;               // tensor constants
  // The archives the tensors' records are in (the file's, nested torch.save files).
  std::vector<std::unique_ptr<ZipReader>> zips;
};

// Budgets against hostile files. The defaults take torchvision's models with room.
struct ReadLimits {
  uint64_t max_json_bytes = 64ull << 20;  // the program's JSON record
  uint64_t max_json_values = 4'000'000;   // values in it (each is a heap object)
  size_t max_nodes = 50'000;
  size_t max_node_arguments = 256;
  size_t max_list = 65'536;  // entries of one list argument
  size_t max_rank = 32;
  size_t max_name_bytes = 1024;
  uint64_t max_pickle_bytes = 64ull << 20;  // each embedded torch.save file's data.pkl
  size_t max_tensors = 100'000;             // weights + constants
};

// What kind of `.pt2` a zip archive is.
enum class Pt2Kind {
  kNotPt2,           // neither layout
  kExportedProgram,  // an ExportedProgram (either layout)
  kAotiPackage,      // an AOTInductor package (native code, data/aotinductor/), no program
};
Pt2Kind ClassifyPt2(const ZipReader& zip);

// Reads and checks an exported program: the schema version (FAILED_PRECONDITION
// naming an unknown major), the JSON's shape (DATA_LOSS), the budgets
// (RESOURCE_EXHAUSTED), that every value a node or output uses is defined before
// by a graph input or an earlier node and defined once, that the signature
// matches the graph's inputs and outputs, and that every parameter, buffer and
// tensor constant is present with a view inside its storage and the sizes the
// graph declares (FAILED_PRECONDITION). Tensor bytes are not read. Messages
// start with `what`. Thread-compatible; the result is immutable and thread-safe.
absl::StatusOr<ExportedProgram> ReadExportedProgram(std::unique_ptr<ZipReader> zip,
                                                    const std::string& what,
                                                    const ReadLimits& limits = {});

// The JSON half of ReadExportedProgram: the program's record (`text`) parsed into
// *out's version, graph, signature, range constraints and opset versions, with
// the same version check and budgets; nothing about weights, and no CheckProgram.
absl::Status ParseProgramJson(const std::string& text, const std::string& what,
                              const ReadLimits& limits, ExportedProgram* out);

// The same checks as ReadExportedProgram's of a program's graph against its
// signature and weights (for a program whose weights come from elsewhere: an
// architecture template filled from a state dict).
absl::Status CheckProgram(const ExportedProgram& program, const std::string& what,
                          const ReadLimits& limits = {});

// Whether a state dict whose tensors have these shapes (by key) fits the program
// as its architecture template (`architecture.pt2`): exactly its parameters and
// persistent buffers, each of the program's shape, as load_state_dict(strict=True)
// checks. FAILED_PRECONDITION listing the missing and unexpected keys and the size
// mismatches; `what` names the state dict. Torch-free: the upload check uses it.
absl::Status CheckStateDictFitsProgram(const ExportedProgram& program,
                                       const std::map<std::string, std::vector<int64_t>>& given,
                                       const std::string& what);

// One dimension of a program's user input: a number, or a symbol with its range
// (from range_constraints; [0, inf] without one).
struct InputDim {
  bool constant = true;
  int64_t value = 0;
  std::string symbol;
  int64_t min = 0, max = std::numeric_limits<int64_t>::max();
};

// The dimensions of user input `index` (a tensor), and a shape for a warm-up pass
// (the exported example's: the size hints). FAILED_PRECONDITION (saying which) for
// an input that is not a tensor, a dimension that is an expression of symbols,
// a scalar input, or no such input.
absl::StatusOr<std::vector<InputDim>> UserInputDims(const ExportedProgram& program, size_t index,
                                                    std::vector<int64_t>* warmup_shape);

// Checks an input's `shape` against `dims`: its rank, each number, each symbol's
// range, and dimensions of one symbol equal to each other. Dimension 0 may also
// be past its range's maximum or a multiple of a fixed batch: such batches run in
// pieces (BatchPiece). INVALID_ARGUMENT otherwise, naming the dimension, the
// range and the whole shape: "dimension 2 of the input is 3; the program was
// exported for s1 in [4, 16] (input shape [s0 in [1, 64], 3, s1 in [4, 16], ...])";
// `what` is "the program was exported" or the like.
absl::Status CheckInputShape(const std::vector<InputDim>& dims, const std::vector<int64_t>& shape,
                             const std::string& what);

// The largest batch one pass may take: a fixed batch's size, or a dynamic batch
// range's maximum.
int64_t BatchPiece(const std::vector<InputDim>& dims);

// "dynamic batch" facts of a program's first user input, for batching decisions.
// The symbol of dimension 0 of user input `index` when it is one symbol ("" when
// that dimension is a constant or an expression).
std::string InputDimSymbol(const ExportedProgram& program, size_t index, size_t dim);

}  // namespace exported
}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_EXPORTED_PROGRAM_H_
