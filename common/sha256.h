#ifndef MODELSERVER_COMMON_SHA256_H_
#define MODELSERVER_COMMON_SHA256_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Incremental SHA-256 (OpenSSL). Thread-compatible.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Lower-case hex digest; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// Hex SHA-256 of a whole file, read sequentially. NOT_FOUND when it does not exist.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace modelserver

#endif  // MODELSERVER_COMMON_SHA256_H_
