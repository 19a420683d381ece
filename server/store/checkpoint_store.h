#ifndef MODELSERVER_SERVER_STORE_CHECKPOINT_STORE_H_
#define MODELSERVER_SERVER_STORE_CHECKPOINT_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/model.h"

namespace modelserver {

// manifest.json of one version (docs/api.md). `present` is false for a
// hand-copied version directory without one.
struct Manifest {
  bool present = false;
  ModelFormat format = ModelFormat::kUnspecified;
  std::string architecture;
  std::string file;
  std::string sha256;
  int64_t size_bytes = -1;
  std::string created_at;
  std::string source;
};

// One resolved store version.
struct StoreVersion {
  std::string model_name;
  int64_t version = 0;
  std::string dir;   // <store>/<model>/<version>
  std::string path;  // the checkpoint file inside it
  Manifest manifest;
};

// The checkpoint store on disk:
//   <root>/<model_name>/<version>/{manifest.json, model_weights.pth | model.pth | model.pt}
// Versions are positive integer directory names; anything else in a model
// directory (staging directories, dot files) is ignored.
//
// Thread-safe: holds no mutable state; every call reads the file system.
class CheckpointStore {
 public:
  struct Options {
    std::string root;
    // Create the root directory if it does not exist.
    bool create_root = true;
  };
  static absl::StatusOr<std::unique_ptr<CheckpointStore>> Create(const Options& options);

  // `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`; INVALID_ARGUMENT naming the rule otherwise.
  static absl::Status ValidateModelName(absl::string_view name);
  // File name a format is stored under ("model_weights.pth", ...).
  static const char* FileNameFor(ModelFormat format);

  const std::string& root() const { return root_; }

  // Names of the models that have a directory in the store, sorted.
  absl::StatusOr<std::vector<std::string>> ListModels() const;
  // Versions of `name`, ascending; empty when the model has none.
  absl::StatusOr<std::vector<int64_t>> ListVersions(absl::string_view name) const;
  // Version `version` of `name` (0 = newest). NOT_FOUND for an unknown model or
  // version; DATA_LOSS for an unreadable manifest; FAILED_PRECONDITION for a version
  // directory without a recognisable checkpoint file; PERMISSION_DENIED when the
  // file resolves outside the store (a symlink).
  absl::StatusOr<StoreVersion> Resolve(absl::string_view name, int64_t version) const;
  // Checks the file against the manifest's size and sha256 (DATA_LOSS on a
  // mismatch). Returns true when a sha256 was checked, false when there was none.
  // Blocks reading the whole file.
  absl::StatusOr<bool> Verify(const StoreVersion& v) const;

  // Parses manifest.json text.
  static absl::StatusOr<Manifest> ParseManifest(absl::string_view json);

 private:
  explicit CheckpointStore(std::string root) : root_(std::move(root)) {}

  std::string root_;  // canonical absolute path; constant after construction
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_STORE_CHECKPOINT_STORE_H_
