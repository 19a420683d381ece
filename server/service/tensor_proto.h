#ifndef MODELSERVER_SERVER_SERVICE_TENSOR_PROTO_H_
#define MODELSERVER_SERVER_SERVICE_TENSOR_PROTO_H_

#include <vector>

#include "absl/status/statusor.h"
#include "common/host_tensor.h"
#include "modelserving/v1/model_service.pb.h"

namespace modelserver {

// Checks a request tensor (known dtype, shape with no negative dimension, byte
// length equal to shape x element size) and copies it into a HostTensor.
// INVALID_ARGUMENT naming the problem.
absl::StatusOr<HostTensor> FromProto(const modelserving::v1::Tensor& proto);

// Moves `t` into `proto` (its data is moved, not copied).
void ToProto(HostTensor t, modelserving::v1::Tensor* proto);

// Softmax over each row of a [N, C] (or [C]) float32 output, top `k` classes by
// probability, highest first. `k` is capped at C.
absl::StatusOr<std::vector<std::vector<std::pair<int64_t, float>>>> TopK(const HostTensor& output,
                                                                         int k);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_TENSOR_PROTO_H_
