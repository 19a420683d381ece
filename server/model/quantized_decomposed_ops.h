#ifndef MODELSERVER_SERVER_MODEL_QUANTIZED_DECOMPOSED_OPS_H_
#define MODELSERVER_SERVER_MODEL_QUANTIZED_DECOMPOSED_OPS_H_

#include "absl/strings/string_view.h"

namespace modelserver {

// The operators of PT2E quantization (torch.ao.quantization.quantize_pt2e):
// torch defines the `quantized_decomposed` namespace in Python
// (torch/ao/quantization/fx/_decomposed.py), so LibTorch alone has none of them,
// and a program exported after convert_pt2e -- int8 weights as buffers, each
// activation quantized and dequantized around float ATen operators -- calls
// them. These are the same operators, computed with the same ATen operations in
// the same order as torch 2.6's Python (so the outputs match Python's
// ep.module()(x) exactly): quantize_per_tensor and dequantize_per_tensor
// (default, .tensor, .tensor2), quantize_per_channel, dequantize_per_channel.
// Registered with the c10 dispatcher once, on first use, unless the process
// already has them; dynamic quantization (choose_qparams) is not among them.
void RegisterQuantizedDecomposedOps();

// Whether `name` (without namespace or overload: "quantize_per_tensor") is one of
// the operators above.
bool IsQuantizedDecomposedOp(absl::string_view name);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_QUANTIZED_DECOMPOSED_OPS_H_
