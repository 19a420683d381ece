#ifndef MODELSERVER_SERVER_STORE_CHECKPOINT_STORE_H_
#define MODELSERVER_SERVER_STORE_CHECKPOINT_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/sha256.h"
#include "server/checkpoint/format.h"

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
  std::string precision;  // optional: what the version serves in; empty = the server's
  // optional: the int8 kernels the version was quantized for ("qnnpack"); empty =
  // the server's --quantized_engine
  std::string quantized_engine;
  // An architecture template beside a state dict: its file name in the version
  // directory ("architecture.pt", TorchScript; "architecture.pt2", an exported
  // program) and sha256; empty when none.
  std::string architecture_file;
  std::string architecture_sha256;
  // Image preprocessing (a JSON object, see server/image/preprocess.h); empty =
  // the default. The store keeps it as text; the registry parses it.
  std::string preprocess;
};

// One resolved store version.
struct StoreVersion {
  std::string model_name;
  int64_t version = 0;
  std::string dir;   // <store>/<model>/<version>
  std::string path;  // the checkpoint file inside it
  // The architecture template beside a state dict (architecture.pt, with or
  // without a manifest); empty when the version has none.
  std::string architecture_path;
  // labels.txt beside the checkpoint (line i = class i); empty when none.
  std::string labels_path;
  // calibration.npy beside the checkpoint (the samples --precision int8 is
  // calibrated on); empty when none.
  std::string calibration_path;
  Manifest manifest;
};

class CheckpointStore;

// A version being written: a staging directory inside the model's directory
// (same file system, invisible to readers). Commit() checks it, writes
// manifest.json, fsyncs file and directories and renames it to the next free
// version number. Destroyed without a successful Commit, it removes the staging
// directory: nothing half-written is ever published.
// Thread-compatible (one writer).
class PendingVersion {
 public:
  ~PendingVersion();
  PendingVersion(const PendingVersion&) = delete;
  PendingVersion& operator=(const PendingVersion&) = delete;

  // Where the checkpoint file goes, for writers that write it themselves.
  const std::string& file_path() const { return file_path_; }
  // Streams bytes into the file (hashing as it goes). RESOURCE_EXHAUSTED past the
  // size limit (the version is then dead: destroy it).
  absl::Status Append(absl::string_view chunk);
  // Streams bytes of an architecture template (TorchScript) into
  // architecture.pt beside the checkpoint; same limits as Append (counted
  // together).
  absl::Status AppendArchitecture(absl::string_view chunk);
  // Puts the template at `path` (another version's architecture.pt) beside the
  // checkpoint: a hard link where the filesystem allows, else a copy.
  absl::Status AddArchitectureFrom(const std::string& path);
  // Streams bytes of calibration samples (a float32 .npy) into calibration.npy
  // beside the checkpoint; counted in the same size limit as Append.
  absl::Status AppendCalibration(absl::string_view chunk);
  // Puts another version's calibration.npy beside the checkpoint (linked or copied).
  absl::Status AddCalibrationFrom(const std::string& path);
  // Writes `text` as labels.txt beside the checkpoint (class labels, one per line).
  absl::Status SetLabels(absl::string_view text);
  // Puts another version's labels.txt beside the checkpoint (linked or copied).
  absl::Status AddLabelsFrom(const std::string& path);
  // Publishes. DATA_LOSS when the sha256 or size differs from what the uploader
  // announced; the structural check's error when the file is no valid checkpoint.
  absl::StatusOr<StoreVersion> Commit();

  uint64_t bytes() const { return bytes_; }

 private:
  friend class CheckpointStore;
  PendingVersion() = default;

  const CheckpointStore* store_ = nullptr;
  std::string model_name_;
  std::string staging_dir_;
  std::string file_path_;
  Manifest manifest_;
  uint64_t max_bytes_ = 0;
  std::string expected_sha256_;
  int64_t expected_size_ = -1;
  int fd_ = -1;       // open while streaming
  int arch_fd_ = -1;  // architecture.pt, same
  // The template's name in the staging directory: architecture.pt while it streams,
  // architecture.pt2 once it is known to be an exported program.
  std::string arch_name_ = "architecture.pt";
  std::unique_ptr<Sha256> arch_sha_;
  uint64_t arch_bytes_ = 0;
  std::string expected_arch_sha256_;
  // RESOURCE_EXHAUSTED when `more` bytes of `what` (a file beside the checkpoint)
  // would take the upload past max_bytes_.
  absl::Status CheckBesideLimit(size_t more, const char* what) const;
  int calib_fd_ = -1;  // calibration.npy, open while it streams
  uint64_t calib_bytes_ = 0;
  // Publishes architecture.pt (verified, fsynced, deduplicated by sha256 against
  // the model's other versions) into the manifest; no-op without one.
  absl::Status CommitArchitecture();
  std::function<absl::Status(const std::string&, const std::string&)> validate_;
  // The staging directory, open and flock()ed for the writer's whole life: a
  // cleanup in any process skips locked staging directories.
  int lock_fd_ = -1;
  std::unique_ptr<Sha256> sha_;
  uint64_t bytes_ = 0;
  bool committed_ = false;
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
  static constexpr char kArchitectureFile[] = "architecture.pt";
  // The template as a torch.export program (torch.export.save of the same class).
  static constexpr char kArchitectureProgramFile[] = "architecture.pt2";
  // The template's file name for a file at `path`: architecture.pt2 for a .pt2.
  static const char* ArchitectureFileFor(const std::string& path);
  static constexpr char kLabelsFile[] = "labels.txt";
  static constexpr char kCalibrationFile[] = "calibration.npy";

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
  static std::string ManifestJson(const Manifest& m);
  // The manifest of version directory `dir`, or for a hand-copied version
  // without one, the format and file from its checkpoint file's name.
  // DATA_LOSS for a bad manifest; FAILED_PRECONDITION for no or several files.
  static absl::StatusOr<Manifest> ReadManifest(const std::string& dir);
  // The one containment check for a file of a version directory (manifest,
  // checkpoint, labels, architecture): its path with every symlink resolved,
  // which must lie under the store root (PERMISSION_DENIED naming where it
  // points otherwise) and be a regular file; "" when it is absent and not
  // `required` (DATA_LOSS when required).
  absl::StatusOr<std::string> ContainedFile(const StoreVersion& v, const std::string& file,
                                            bool required) const;

  struct NewVersion {
    std::string model_name;
    ModelFormat format = ModelFormat::kStateDict;
    std::string architecture;
    std::string source;            // manifest "source": who wrote it
    std::string precision;         // manifest "precision" (optional)
    std::string quantized_engine;  // manifest "quantized_engine" (optional)
    std::string preprocess;        // manifest "preprocess", a JSON object (optional)
    uint64_t max_bytes = 0;        // Append limit; 0 = none
    std::string expected_sha256;   // optional, checked at Commit
    int64_t expected_size = -1;    // optional, checked at Commit
    // Optional: run by Commit on the complete, verified file (its path) after the
    // structural check and before anything is published; an error refuses the
    // version (the store does not know models: the caller checks loadability).
    // `architecture_file` is the template's path (empty when there is none).
    std::function<absl::Status(const std::string& file, const std::string& architecture_file)>
        validate;
    std::string expected_architecture_sha256;  // optional, checked at Commit
  };
  // Starts a new version of `model_name`. INVALID_ARGUMENT for a bad name or an
  // unspecified format; INTERNAL when the staging directory cannot be made.
  absl::StatusOr<std::unique_ptr<PendingVersion>> BeginVersion(const NewVersion& v) const;

  // Removes staging directories older than `age` (left by a crash). Returns how
  // many were removed.
  // The version policy of `name`, kept in the store for every replica: the
  // version it is pinned to, 0 = follows the newest. SetPin writes
  // "<store>/<name>/.pin" atomically (a temporary file renamed into place);
  // version 0 removes it. INTERNAL on I/O errors.
  absl::StatusOr<int64_t> Pin(absl::string_view name) const;
  absl::Status SetPin(absl::string_view name, int64_t version) const;

  // `message` with every path inside the store described as the store knows it
  // ("<root>/m/3/model.pt" -> "model 'm' version 3 file 'model.pt'", a staging
  // path -> "an upload of model 'm'"), so errors never show server paths.
  std::string Describe(absl::string_view message) const;

  // A staging directory counts as stale when nothing inside it changed for `age`
  // (the newest mtime of the directory and its files) and no writer holds its
  // lock (flock, also honoured over NFSv4); stale claims (.claim-N) likewise.
  int RemoveStaleStaging(absl::Duration age) const;

 private:
  friend class PendingVersion;
  explicit CheckpointStore(std::string root) : root_(std::move(root)) {}
  // Moves `staging` to the next free version of `model` (never replacing one):
  // claims the number with an exclusive create of .claim-<N>, then a plain
  // rename (no rename flags, which NFS refuses), then removes the claim.
  absl::StatusOr<int64_t> PublishStaging(const std::string& model,
                                         const std::string& staging) const;

  std::string root_;                // canonical absolute path; constant after construction
  mutable absl::Mutex publish_mu_;  // serialises version numbering in this process
  // "<model>/.claim-<N>": version N is being published (O_EXCL create).
  static constexpr char kClaimPrefix[] = ".claim-";
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_STORE_CHECKPOINT_STORE_H_
