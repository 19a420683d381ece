#ifndef MODELSERVER_SERVER_SERVICE_REST_INFER_H_
#define MODELSERVER_SERVER_SERVICE_REST_INFER_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/v2/grpc_predict_v2.pb.h"

namespace modelserver {

// The Open Inference Protocol's REST inference body, both ways, torch- and
// gRPC-free (fuzzed by fuzz/wire_fuzzer.cc). The body is JSON, or with the
// binary-data extension JSON of `json_bytes` bytes followed by the tensors'
// bytes: inputs with "parameters": {"binary_data_size": n} take the next n
// bytes, in order. Triton's shared memory parameters ("shared_memory_region",
// "shared_memory_byte_size", "shared_memory_offset") of inputs and outputs pass
// through to the request (such an input has no data), and outputs placed in
// shared memory are answered with those parameters instead of data.
//
// Every size the body states goes through common/wire_size.h: a negative,
// fractional, overflowing or past-the-body size is INVALID_ARGUMENT, the bytes
// of all inputs together never exceed the body, and the request built is at most
// `max_message_bytes` (RESOURCE_EXHAUSTED otherwise, as for the JSON part over
// kMaxJsonBytes), so no internal message can outgrow gRPC's limits. Integer
// values must fit their datatype (INT8 300 is refused, as over gRPC).
struct RestInferLimits {
  static constexpr size_t kMaxJsonBytes = 8 << 20;
  static constexpr int kMaxJsonDepth = 32;
  size_t max_message_bytes = 64 << 20;
};

// `header_length` is the Inference-Header-Content-Length header's value (null
// when absent: the whole body is JSON). Fills `request` (inputs, requested
// outputs, id; not the model name or version) and *binary_output (the caller
// asked for binary outputs).
absl::Status ParseRestInfer(absl::string_view body, const std::string* header_length,
                            const RestInferLimits& limits, inference::ModelInferRequest* request,
                            bool* binary_output);

// The response body for `response`; with `binary`, the JSON is followed by the
// outputs' bytes and *json_bytes says where the JSON ends (for the
// Inference-Header-Content-Length header). INTERNAL for an output whose bytes do
// not fit its datatype.
absl::StatusOr<std::string> FormatRestInfer(const inference::ModelInferResponse& response,
                                            bool binary, size_t* json_bytes);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_REST_INFER_H_
