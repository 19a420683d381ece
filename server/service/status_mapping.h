#ifndef MODELSERVER_SERVER_SERVICE_STATUS_MAPPING_H_
#define MODELSERVER_SERVER_SERVICE_STATUS_MAPPING_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace modelserver {

// The one place absl codes become gRPC codes (they share numbering; this keeps
// the message and makes the mapping explicit).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_STATUS_MAPPING_H_
