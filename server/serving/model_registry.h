#ifndef MODELSERVER_SERVER_SERVING_MODEL_REGISTRY_H_
#define MODELSERVER_SERVER_SERVING_MODEL_REGISTRY_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/batching/batch_queue.h"
#include "server/model/model.h"
#include "server/model/model_loader.h"
#include "server/model/precision.h"
#include "server/serving/load_journal.h"
#include "server/serving/model_statistics.h"
#include "server/serving/store_listing.h"
#include "server/store/checkpoint_store.h"

namespace modelserver {

enum class ModelState { kUnloaded = 1, kLoading = 2, kReady = 3, kFailed = 4 };

// A model's status as the API reports it.
struct ModelStatusInfo {
  std::string model_name;
  ModelState state = ModelState::kUnloaded;
  int64_t serving_version = 0;
  std::vector<int64_t> store_versions;
  ModelFormat format = ModelFormat::kUnspecified;
  std::string architecture;
  std::string device;
  std::string last_error;
  int64_t pinned_version = 0;   // the store's pin; 0 = follows the newest
  std::string precision;        // of the serving version: "fp32", "bf16", "fp16", "int8"
  std::string memory_format;    // of the serving version: "contiguous", "channels_last"
  int64_t parameter_bytes = 0;  // of the serving version, on its device
  // Of a serving version in int8: its calibration samples, top-1 agreement and
  // worst cosine against its float model on them (ModelInfo's; 0 samples: not int8).
  int64_t int8_samples = 0;
  double int8_top1_agreement = 0;
  double int8_worst_cosine = 0;
};

// The models in memory: loads versions from the store, hands out the serving
// version, reports status. Owns no threads; loads run on the caller's thread.
//
// Thread-safe. Models are handed out as shared_ptr<const Model>, so a swap or an
// unload frees a version only once the last request using it is done.
//
//   ModelRegistry registry({.store = store.get(), .device = "cpu"});
//   RETURN_IF_ERROR(registry.Load("vgg16", "vgg16", /*version=*/0));
//   ASSIGN_OR_RETURN(ModelHandle h, registry.Get("vgg16", 0));
class ModelRegistry {
 public:
  struct Options {
    const CheckpointStore* store = nullptr;  // not owned; outlives the registry
    std::string device = "cpu";              // a ResolveDevice() result
    // The devices a model is loaded on (one copy each, ReplicatedModel); empty
    // or null: `device` alone. Called on the loading thread.
    std::function<absl::StatusOr<std::vector<std::string>>(const std::string& model)> place;
    // Template for each model's batching queue (name is filled in per model).
    BatchQueue::Options batching;
    // Skip the TorchScript safety checks (--trust_torchscript).
    bool trust_torchscript = false;
    // `loader` runs TorchScript and architecture templates in a sandbox: upload
    // checks load them through it instead of opening them in process.
    bool sandbox_code = false;
    // Directory of the load journal (crash-loop protection, see LoadJournal);
    // empty: off. Must exist and be writable.
    std::string state_dir;
    // CPU threads the forward passes share (0: leave LibTorch's setting alone).
    int intra_op_threads = 0;
    // Observers (may be null), called without the registry's lock.
    std::function<void(const std::string& model, bool ok, double seconds)> on_load;
    std::function<void(const std::string& model, int64_t samples, double seconds)> on_batch;
    std::function<void(const std::string& model, double seconds)> on_queue_wait;
    // Builds a model from a store file; LoadModelFromFile when empty (tests inject
    // fakes). Called on the loading thread, without the registry's lock.
    std::function<absl::StatusOr<std::shared_ptr<const Model>>(const ModelLoadOptions&)> loader;
    // What models compute in, unless the version's manifest or
    // `model_precision` (by model name; from --model_precision) says otherwise.
    Precision precision = Precision::kFp32;
    std::map<std::string, Precision> model_precision;
    // Precision int8: a version whose top-1 agreement with its float model on
    // its calibration samples is below this is refused (--min_int8_agreement).
    double min_int8_agreement = 0.99;
    MemoryLayout memory_layout = MemoryLayout::kAuto;
    // How often the cached store listing (what Status and List report) is
    // re-read; not positive: only at construction and after this server's writes.
    absl::Duration listing_interval = absl::Seconds(10);
  };
  // Called after every state change with the model name and whether it is READY.
  using ReadyListener = std::function<void(const std::string& model_name, bool ready)>;

  // Lists the store once (blocking).
  explicit ModelRegistry(Options options)
      : options_(std::move(options)),
        journal_(options_.state_dir),
        listing_(options_.store, options_.listing_interval) {}
  ~ModelRegistry() { Shutdown(); }

  // Called without the registry's lock held; set before the first Load.
  void set_ready_listener(ReadyListener listener) { listener_ = std::move(listener); }

  // Loads `version` of `name` (0 = newest) from the store, verifying it, and makes
  // it the serving version (the file's sha256 is checked while it loads). `architecture` overrides
  // an empty manifest architecture (--model NAME=ARCH). Blocks for the whole load. On failure the
  // previously serving version (if any) keeps serving, and the error is recorded
  // in last_error. Errors: those of CheckpointStore::Resolve/Verify and
  // LoadModelFromFile.
  // ABORTED when a load of the same model is already in progress.
  absl::Status Load(const std::string& name, const std::string& architecture, int64_t version);

  // Load() on the registry's loader thread (the LoadModel RPC and store polling):
  // returns at once; `done` (may be null) gets the result once the version serves
  // or failed. ABORTED at once while a load of the model is in progress.
  void LoadAsync(const std::string& name, int64_t version, std::function<void(absl::Status)> done);

  // Stops serving `name` and drops the registry's reference to it (freed when its
  // last batch finishes); Predict then answers FAILED_PRECONDITION. NOT_FOUND when
  // it is not loaded; ABORTED during a load.
  absl::Status Unload(const std::string& name);

  // Writes the serving version of `name` into the store as a new version of
  // `target_name` (default: `name`) in `format`, atomically. Errors: those of Get,
  // INVALID_ARGUMENT for a bad name or format, UNIMPLEMENTED for a format the
  // model cannot write, INTERNAL for I/O. Blocks while writing.
  absl::StatusOr<StoreVersion> Save(const std::string& name, ModelFormat format,
                                    const std::string& target_name);

  // Every `interval`, makes each loaded model follow the store's policy: the
  // version it is pinned to (CheckpointStore::Pin), else the newest version
  // (not one that failed, or whose load killed a process). Idempotent; stopped
  // by Shutdown.
  void StartPolling(absl::Duration interval);

  // The serving model of `name`; `version` 0 or equal to the serving version.
  // NOT_FOUND for an unknown model or a version that is not the serving one;
  // FAILED_PRECONDITION when the model is known but not READY.
  absl::StatusOr<ModelHandle> Get(const std::string& name, int64_t version) const;

  // Queues `task` on the model's batching queue (created with its first
  // successful load). NOT_FOUND when the model never loaded; else as
  // BatchQueue::Enqueue (UNAVAILABLE when full). Never blocks.
  absl::Status Enqueue(const std::string& name, BatchTask task);

  // Shuts every batching queue down: queued requests are answered UNAVAILABLE,
  // running batches finish. Later Enqueues are UNAVAILABLE.
  void Shutdown();

  // One model's status, also for models only in the store. NOT_FOUND when neither
  // memory nor store knows it.
  absl::StatusOr<ModelStatusInfo> Status(const std::string& name) const;
  // Every model in memory or in the store, sorted by name. Status and List read
  // the store through a cached listing (StoreListing): no filesystem I/O.
  absl::StatusOr<std::vector<ModelStatusInfo>> List() const;
  // Re-reads `name`'s store listing after a write this server made outside the
  // registry (an upload, a pin). Blocking.
  void StoreChanged(const std::string& name) const { listing_.Refresh(name); }
  // Whether an uploaded file would load as `name` in `format`: the checks of
  // upload_check.h (CheckUpload) with the registry's loader; a state dict
  // without an architecture uses the one `name` was started with (--model
  // NAME=ARCH), if any. Blocks while reading the file's pickle.
  // `architecture_file`: the template uploaded beside a state dict (or empty).
  // `label_count` > 0 (labels uploaded with it): also loaded and run once, and
  // a labels count other than its classes refused.
  absl::Status CheckUpload(const std::string& name, const std::string& path, ModelFormat format,
                           const std::string& architecture,
                           const std::string& architecture_file = "", size_t label_count = 0,
                           const std::vector<int64_t>& image_shape = {},
                           const std::string& quantized_engine = "") const;

  // OK when a state dict can be served as `architecture`; else INVALID_ARGUMENT.
  static absl::Status CheckArchitecture(const std::string& architecture);

  // What each model's batches did, per version (Triton's ModelStatistics).
  const ModelStatistics& statistics() const { return statistics_; }
  // The batching settings every model's queue is made with.
  const BatchQueue::Options& batching() const { return options_.batching; }

  // Samples waiting in each model's batching queue.
  std::vector<std::pair<std::string, int64_t>> QueueDepths() const;

 private:
  struct Entry {
    ModelStatusInfo status;  // store_versions is filled on read
    std::shared_ptr<const Model> model;
    std::shared_ptr<const std::vector<std::string>> labels;  // of the serving version
    std::shared_ptr<const ImagePreprocess> preprocess;       // of the serving version
    std::string arch_hint;  // --model NAME=ARCH, for versions without a manifest
    bool loading = false;
    int64_t last_failed_version = 0;  // polling does not retry it
    // Set when the serving version failed while serving (VersionFailed); shown in
    // last_error once the version replacing it serves.
    std::string failure_note;
  };
  struct PendingLoad {
    std::string name;
    int64_t version = 0;
    std::function<void(absl::Status)> done;
  };
  struct LoadedVersion {
    StoreVersion version;
    std::shared_ptr<const Model> model;
    std::shared_ptr<const std::vector<std::string>> labels;
    std::shared_ptr<const ImagePreprocess> preprocess;
    std::string note;  // kept in last_error although the load succeeded
  };
  // Load() after the `loading` flag was set: BeginLoad, LoadVersion, FinishLoad, logs.
  absl::Status DoLoad(const std::string& name, const std::string& architecture, int64_t version);
  // Marks the entry LOADING (when nothing serves yet); returns the architecture hint.
  std::string BeginLoad(const std::string& name, const std::string& architecture)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Resolves, verifies, loads and warms up a version; sets *resolved to its number
  // once known. Blocks; no lock held.
  absl::StatusOr<LoadedVersion> LoadVersion(const std::string& name, int64_t version,
                                            const std::string& arch, int64_t* resolved) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // One forward pass at the model's WarmupShape() (none when it is unknown), in
  // its serving precision; with `every_batch_size`, one per batch size up to
  // max_batch_size (on a GPU, on each batch worker: see DoLoad). Returns the
  // output shape of the batch-1 pass (empty when none ran).
  absl::StatusOr<std::vector<int64_t>> WarmUp(const Model& model, bool every_batch_size) const;
  // The version's labels.txt, one label per line (null without one);
  // FAILED_PRECONDITION when it is over 4 MiB or unreadable.
  static absl::StatusOr<std::shared_ptr<const std::vector<std::string>>> ReadLabels(
      const StoreVersion& v);
  // The precision a version of `name` loads in: --model_precision, else the
  // manifest's, else the server's. FAILED_PRECONDITION for a bad manifest value.
  absl::StatusOr<Precision> PrecisionFor(const std::string& name, const Manifest& manifest) const;
  // Swaps a loaded version in, or records the failure; the replaced model goes to
  // *old (freed by the caller outside the lock). Returns whether the model is READY.
  bool FinishLoad(const std::string& name, const absl::StatusOr<LoadedVersion>& result,
                  int64_t resolved, std::shared_ptr<const Model>* old) ABSL_LOCKS_EXCLUDED(mu_);
  // Creates the model's batching queue on its first successful load.
  void EnsureQueue(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoaderLoop();
  ModelStatusInfo Snapshot(const std::string& name, const Entry* entry) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // store_versions and pinned_version from the cached listing.
  static void FillFromStore(const StoreListing::Entry& stored, ModelStatusInfo* s);
  // One polling step for one model: load the pinned version, or the newest.
  void PollOne(const std::string& name, int64_t serving, int64_t failed) ABSL_LOCKS_EXCLUDED(mu_);
  // The serving `version` of `name` failed for good (ModelLoadOptions::on_failed):
  // it is journaled as skipped and the newest other version is loaded.
  void VersionFailed(const std::string& name, int64_t version, const std::string& reason)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Resolves `version` (0: newest) to a store version, passing over a version the
  // journal says killed the process (`note` then says so).
  absl::StatusOr<StoreVersion> ResolveSkipping(const std::string& name, int64_t version,
                                               std::string* note) const;

  const Options options_;
  const LoadJournal journal_;
  ModelStatistics statistics_;    // thread-safe on its own
  mutable StoreListing listing_;  // refreshing a cache is not a change of the registry
  ReadyListener listener_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> models_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<BatchQueue>> queues_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<PendingLoad> loads_ ABSL_GUARDED_BY(mu_);
  absl::CondVar loader_cv_;
  bool loader_started_ ABSL_GUARDED_BY(mu_) = false;
  bool poller_started_ ABSL_GUARDED_BY(mu_) = false;
  std::thread loader_;
  std::thread poller_;
};

const char* ModelStateName(ModelState state);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVING_MODEL_REGISTRY_H_
