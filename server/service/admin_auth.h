#ifndef MODELSERVER_SERVER_SERVICE_ADMIN_AUTH_H_
#define MODELSERVER_SERVER_SERVICE_ADMIN_AUTH_H_

#include <grpcpp/server_context.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Guards the admin RPCs (SaveModel, LoadModel, UnloadModel, UploadCheckpoint,
// DownloadCheckpoint). With a token, a call needs `authorization: Bearer <token>`
// metadata: none (or not a Bearer) is UNAUTHENTICATED, a wrong token
// PERMISSION_DENIED; tokens are compared in constant time (their SHA-256s). In
// read-only mode every admin call is PERMISSION_DENIED. Without a token, admin
// calls are accepted from loopback peers only (127.0.0.0/8, ::1, unix sockets)
// unless `insecure_remote` (--insecure_admin) opens them to every peer.
// Thread-safe; constant after construction.
class AdminAuth {
 public:
  AdminAuth() = default;
  AdminAuth(const std::string& token, bool read_only, bool insecure_remote = false);

  // True for a gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000",
  // "ipv6:[::ffff:127.0.0.1]:5000", "unix:...") on this machine's loopback.
  static bool IsLoopbackPeer(absl::string_view peer);

  // Whether admin calls from other machines are possible at all (a token is set,
  // or --insecure_admin without one); for the startup log.
  bool remote_admin_allowed() const { return !token_sha256_.empty() || insecure_remote_; }
  bool insecure() const { return token_sha256_.empty() && insecure_remote_ && !read_only_; }

  // Reads the token from a file (surrounding white space trimmed). NOT_FOUND /
  // INVALID_ARGUMENT for a missing or empty file.
  static absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

  absl::Status Check(const grpc::CallbackServerContext& context) const;
  // In-process calls of the REST gateway carry this secret (random per process,
  // shared by copies of this object) in kGatewayHeader; Check then treats them
  // as loopback calls -- the gateway checked its HTTP peer with CheckHeader.
  static constexpr char kGatewayHeader[] = "x-modelserver-gateway";
  const std::string& gateway_secret() const { return gateway_secret_; }
  // `peer` as grpc::ServerContext::peer() gives it; empty is a loopback caller
  // (in-process tests of the token logic).
  absl::Status CheckHeader(const std::string* authorization, absl::string_view peer = "") const;

 private:
  bool read_only_ = false;
  bool insecure_remote_ = false;
  std::string token_sha256_;  // empty: no token required
  std::string gateway_secret_ = NewGatewaySecret();
  static std::string NewGatewaySecret();
  static bool ConstantTimeEquals(absl::string_view a, absl::string_view b);
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_ADMIN_AUTH_H_
