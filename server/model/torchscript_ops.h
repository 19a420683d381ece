#ifndef MODELSERVER_SERVER_MODEL_TORCHSCRIPT_OPS_H_
#define MODELSERVER_SERVER_MODEL_TORCHSCRIPT_OPS_H_

#include <torch/script.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Whether a TorchScript operator ("aten::conv2d", "prim::If") is on the
// allowlist: tensor math, shape and control flow, and the list/tuple/dict and
// scalar operations scripted code needs. Not allowed: anything that reaches
// files, processes, the network or other threads (aten::from_file, aten::save,
// prim::fork, ...), prints (prim::Print, aten::warn), mutates module state
// between requests (prim::SetAttr), returns uninitialised memory (aten::empty),
// or calls out of TorchScript (prim::PythonOp). In-place variants ("relu_") and
// overloads follow their base operator.
bool IsAllowedTorchScriptOperator(absl::string_view qualified_name);

// Inlines every method of `module` and of each of its submodules and checks
// every node, nested blocks included, against IsAllowedTorchScriptOperator.
// FAILED_PRECONDITION naming the first refused operator and the method that
// uses it. Compiles the methods (no module code runs). Thread-compatible.
absl::Status CheckTorchScriptOperators(const torch::jit::Module& module);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TORCHSCRIPT_OPS_H_
