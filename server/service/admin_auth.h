#ifndef MODELSERVER_SERVER_SERVICE_ADMIN_AUTH_H_
#define MODELSERVER_SERVER_SERVICE_ADMIN_AUTH_H_

#include <grpcpp/server_context.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modelserver {

// Guards the admin RPCs (SaveModel, LoadModel, UnloadModel, UploadCheckpoint,
// DownloadCheckpoint). With a token, a call needs `authorization: Bearer <token>`
// metadata: none (or not a Bearer) is UNAUTHENTICATED, a wrong token
// PERMISSION_DENIED; tokens are compared in constant time (their SHA-256s). In
// read-only mode every admin call is PERMISSION_DENIED. Without either, admin
// RPCs are open. Thread-safe; constant after construction.
class AdminAuth {
 public:
  AdminAuth() = default;
  AdminAuth(const std::string& token, bool read_only);

  // Reads the token from a file (surrounding white space trimmed). NOT_FOUND /
  // INVALID_ARGUMENT for a missing or empty file.
  static absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

  absl::Status Check(const grpc::CallbackServerContext& context) const;
  absl::Status CheckHeader(const std::string* authorization) const;

 private:
  bool read_only_ = false;
  std::string token_sha256_;  // empty: no token required
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_ADMIN_AUTH_H_
