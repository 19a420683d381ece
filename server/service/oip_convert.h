#ifndef MODELSERVER_SERVER_SERVICE_OIP_CONVERT_H_
#define MODELSERVER_SERVER_SERVICE_OIP_CONVERT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/host_tensor.h"
#include "common/oip_datatype.h"
#include "inference/v2/grpc_predict_v2.pb.h"
#include "modelserving/v1/model_service.pb.h"

namespace modelserver {

// The Open Inference Protocol's side of a Predict: its tensors and datatype
// strings to and from ours. Torch-free; pure functions.

// The version string of the protocol: "" -> 0 (the serving version), "3" -> 3;
// INVALID_ARGUMENT for anything else.
absl::StatusOr<int64_t> ParseModelVersion(absl::string_view version);

// A ModelInfer request as our Predict request: exactly one input (the models
// here take one tensor), given as raw_input_contents or as typed contents of
// its datatype (FP16/BF16 only raw); byte counts and shapes checked as Predict
// checks them. `top_k` from a requested output's "classification" parameter.
// A BYTES input [N] (or [N, 1]) is N encoded images (PredictRequest.images).
// INVALID_ARGUMENT naming the problem.
absl::Status ToPredictRequest(const inference::ModelInferRequest& request,
                              modelserving::v1::PredictRequest* predict);

// Fills the ModelInfer response from Predict's: the output tensor "output"
// (raw_output_contents when the request was raw, else typed contents), or, with
// "classification" k, the top k classes per sample as BYTES
// "<score>:<index>" (score: the output value), shape [N, k]; model name,
// version and the request's id.
absl::Status FromPredictResponse(const inference::ModelInferRequest& request,
                                 const modelserving::v1::PredictResponse& predict,
                                 inference::ModelInferResponse* response);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_OIP_CONVERT_H_
