#ifndef MODELSERVER_SERVER_SERVICE_OIP_CONVERT_H_
#define MODELSERVER_SERVER_SERVICE_OIP_CONVERT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/host_tensor.h"
#include "common/oip_datatype.h"
#include "inference/v2/grpc_predict_v2.pb.h"
#include "modelserving/v1/model_service.pb.h"
#include "server/service/shared_memory_regions.h"

namespace modelserver {

// The Open Inference Protocol's side of a Predict: its tensors and datatype
// strings to and from ours. Torch-free; pure functions.

// The version string of the protocol: "" -> 0 (the serving version), "3" -> 3;
// INVALID_ARGUMENT for anything else.
absl::StatusOr<int64_t> ParseModelVersion(absl::string_view version);

// A ModelInfer request as our Predict request: exactly one input (the models
// here take one tensor), given as raw_input_contents or as typed contents of
// its datatype (FP16/BF16 only raw); byte counts and shapes checked as Predict
// checks them. The requested outputs become output_names, in order; a request
// naming none asks for all_outputs. `top_k` from the first requested output's
// "classification" parameter (on another one: INVALID_ARGUMENT).
// A BYTES input [N] (or [N, 1]) is N encoded images (PredictRequest.images).
// INVALID_ARGUMENT naming the problem.
absl::Status ToPredictRequest(const inference::ModelInferRequest& request,
                              modelserving::v1::PredictRequest* predict);

// Fills the ModelInfer response from Predict's: each output by its name, in
// Predict's order (raw_output_contents when the request was raw or asks for an
// output in shared memory, else typed contents), or, for the first with
// "classification" k, the top k classes per sample as BYTES
// "<score>:<index>" (score: the output value), shape [N, k]; model name,
// version and the request's id.
absl::Status FromPredictResponse(const inference::ModelInferRequest& request,
                                 const modelserving::v1::PredictResponse& predict,
                                 inference::ModelInferResponse* response);

// Triton's system shared memory parameters on an input or a requested output:
// "shared_memory_region" (string), "shared_memory_byte_size" (int64 or uint64),
// "shared_memory_offset" (optional, int64 or uint64; 0 when absent).
struct SharedMemoryRef {
  std::string region;
  uint64_t byte_size = 0;
  uint64_t offset = 0;
};
// Null when `parameters` name no region; INVALID_ARGUMENT naming `what` for a
// region without a byte size, a negative size or offset, or a wrong type.
absl::StatusOr<std::unique_ptr<SharedMemoryRef>> SharedMemoryParameters(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters,
    absl::string_view what);

// Whether any input or requested output of `request` names a shared memory region.
bool UsesSharedMemory(const inference::ModelInferRequest& request);

// Replaces each input that names a region by its bytes there, as
// raw_input_contents (such an input carries no contents and the request no raw
// contents of its own: INVALID_ARGUMENT otherwise). At most `max_bytes` are read
// (RESOURCE_EXHAUSTED); the regions' errors otherwise.
absl::Status ReadSharedMemoryInputs(const SharedMemoryRegions& regions, uint64_t max_bytes,
                                    inference::ModelInferRequest* request);

// After FromPredictResponse: each output the request asked for in a region is
// written there and answered with the region's parameters (its byte size set to
// the bytes written) instead of raw contents. INVALID_ARGUMENT for an output
// larger than its window; the regions' errors otherwise.
absl::Status WriteSharedMemoryOutputs(const inference::ModelInferRequest& request,
                                      const SharedMemoryRegions& regions,
                                      inference::ModelInferResponse* response);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_OIP_CONVERT_H_
