#ifndef MODELSERVER_SERVER_MODEL_TORCHSCRIPT_OPS_H_
#define MODELSERVER_SERVER_MODEL_TORCHSCRIPT_OPS_H_

#include <torch/script.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Whether a TorchScript operator ("aten::conv2d", "prim::If") is on the
// allowlist: tensor math, shape and control flow, attention, initialised tensor
// factories (new_zeros, ...), queries of the context (autocast, grad mode),
// warnings (logged by the server), and the list/tuple/dict and scalar
// operations scripted code needs. Not allowed: anything that reaches files,
// processes, the network or other threads (aten::from_file, aten::save,
// prim::fork, ...), prints (prim::Print), draws random numbers
// (aten::bernoulli), mutates module state between requests (prim::SetAttr),
// returns uninitialised memory (aten::empty: it would hand one caller what the
// allocator kept of another's batch), or calls out of TorchScript
// (prim::PythonOp). In-place variants ("relu_") and overloads follow their base
// operator.
bool IsAllowedTorchScriptOperator(absl::string_view qualified_name);

// Inlines every method of `module` and of each of its submodules, and every
// class method of its compilation unit (TorchScript classes held as
// attributes; not __init__, which loading does not run; free functions are
// checked where a method calls them, inlined), and checks every node, nested blocks included,
// against IsAllowedTorchScriptOperator -- except the branches of an `if` that cannot run in eval
// mode (a module's `training`, constants, not/and/or of them); then refuses a write to the module's
// state: an in-place operator, out= argument or list/dict mutation (append, insert,
// __setitem__) whose target is an attribute (parameter, buffer, list, dict), a
// view or element of one, or a tensor constant -- such a module would change
// later callers' answers. FAILED_PRECONDITION naming the operator and the
// method. Setting an attribute (prim::SetAttr) is refused in a module's forward
// and what it calls; other methods run only when the file is loaded or saved
// (__setstate__ / __getstate__ and what they call: torch's quantized modules
// repack their weights there), so they may set the module's own attributes.
// Method calls on LibTorch's packed int8 weights (torch.classes.quantized.*)
// are allowed. The quantized::
// operators of int8 models (conv2d, linear, add_relu, ..., *_prepack /
// *_unpack) and aten's quantize / dequantize are allowed. A friendly early
// error, not the boundary (the sandboxed worker is).
// Compiles the methods (no module code runs). Thread-compatible.
absl::Status CheckTorchScriptOperators(const torch::jit::Module& module);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TORCHSCRIPT_OPS_H_
