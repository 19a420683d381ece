#include "server/serving/model_registry.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/npy.h"
#include "common/status_macros.h"
#include "server/image/image_decode.h"
#include "server/image/preprocess.h"
#include "server/model/device.h"
#include "server/model/model_loader.h"
#include "server/model/replicated_model.h"
#include "server/serving/upload_check.h"
#include "server/util/logging.h"

namespace modelserver {

const char* ModelStateName(ModelState state) {
  switch (state) {
    case ModelState::kUnloaded:
      return "UNLOADED";
    case ModelState::kLoading:
      return "LOADING";
    case ModelState::kReady:
      return "READY";
    case ModelState::kFailed:
      return "FAILED";
  }
  return "?";
}

absl::Status ModelRegistry::CheckUpload(const std::string& name, const std::string& path,
                                        ModelFormat format, const std::string& architecture,
                                        const std::string& architecture_file, size_t label_count,
                                        const std::vector<int64_t>& image_shape,
                                        const std::string& quantized_engine) const {
  UploadCandidate upload;
  upload.name = name;
  upload.path = path;
  upload.format = format;
  upload.architecture = architecture;
  if (upload.architecture.empty() && architecture_file.empty()) {
    absl::ReaderMutexLock lock(&mu_);
    if (auto it = models_.find(name); it != models_.end())
      upload.architecture = it->second.arch_hint;
  }
  upload.architecture_file = architecture_file;
  upload.quantized_engine = quantized_engine;
  upload.label_count = label_count;
  upload.image_shape = image_shape;
  UploadCheckOptions options;
  options.trust_torchscript = options_.trust_torchscript;
  options.sandbox_code = options_.sandbox_code;
  options.loader = options_.loader;
  return modelserver::CheckUpload(upload, options);
}

absl::Status ModelRegistry::CheckArchitecture(const std::string& architecture) {
  return modelserver::CheckArchitecture(architecture);
}

absl::Status ModelRegistry::Load(const std::string& name, const std::string& architecture,
                                 int64_t version) {
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(name));
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("server is shutting down");
    Entry& e = models_[name];
    if (e.loading) {
      return absl::AbortedError(absl::StrCat("another load of model '", name, "' is in progress"));
    }
    e.loading = true;
  }
  return DoLoad(name, architecture, version);
}

std::string ModelRegistry::BeginLoad(const std::string& name, const std::string& architecture) {
  absl::MutexLock lock(&mu_);
  Entry& e = models_[name];
  e.status.model_name = name;
  if (!architecture.empty()) e.arch_hint = architecture;
  if (e.model == nullptr) e.status.state = ModelState::kLoading;
  return e.arch_hint;
}

namespace {

// At most this many calibration images are read (a few dozen are enough).
constexpr size_t kMaxCalibrationImages = 1024;

// The version's calibration/ images (sorted by name), each decoded and run through
// the version's preprocess, as one float32 batch; nullptr without the folder. Every
// file must resolve inside the store; what is not an image fails the load naming it.
absl::StatusOr<std::shared_ptr<const HostTensor>> CalibrationImages(const StoreVersion& v,
                                                                    const std::string& root) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(v.dir) / "calibration";
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dir, ec))) return nullptr;
  const std::string where =
      absl::StrCat("calibration/ of model '", v.model_name, "' version ", v.version);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (files.size() == kMaxCalibrationImages) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, " holds more than ", kMaxCalibrationImages, " files"));
    }
    files.push_back(e.path());
  }
  if (ec)
    return absl::FailedPreconditionError(absl::StrCat("cannot list ", where, ": ", ec.message()));
  if (files.empty()) return absl::FailedPreconditionError(absl::StrCat(where, " is empty"));
  std::sort(files.begin(), files.end());
  ImagePreprocess preprocess;
  if (!v.manifest.preprocess.empty()) {
    ASSIGN_OR_RETURN(preprocess, ParsePreprocess(v.manifest.preprocess));
  }
  auto t = std::make_shared<HostTensor>();
  t->dtype = DType::kFloat32;
  t->shape = preprocess.OutputShape();
  t->shape.insert(t->shape.begin(), static_cast<int64_t>(files.size()));
  const size_t per = static_cast<size_t>(t->shape[1] * t->shape[2] * t->shape[3]);
  // The same bound as a calibration.npy's bytes, checked without overflow.
  constexpr size_t kMaxBytes = static_cast<size_t>(kMaxCalibrationBytes);
  if (per == 0 || files.size() > kMaxBytes / sizeof(float) / per) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, ": ", files.size(), " images of ", ShapeString(preprocess.OutputShape()),
        " would take more than ", kMaxBytes >> 20, " MiB; use fewer (a few dozen are enough)"));
  }
  t->data.resize(files.size() * per * sizeof(float));
  const fs::path real_root = fs::canonical(root, ec);
  for (size_t i = 0; i < files.size(); ++i) {
    const fs::path real = fs::canonical(files[i], ec);
    if (ec || !absl::StartsWith(real.string(), real_root.string() + "/") ||
        !fs::is_regular_file(real, ec)) {
      return absl::PermissionDeniedError(absl::StrCat(
          where, ": ", files[i].filename().string(),
          " is not a regular file inside the store (symlinks out of the store are refused)"));
    }
    if (fs::file_size(real, ec) > (uint64_t{64} << 20)) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, ": ", files[i].filename().string(), " is over 64 MiB"));
    }
    std::ifstream in(real, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<RgbImage> image = DecodeImage(bytes, DecodeLimits{});
    absl::Status s = image.status();
    if (s.ok()) {
      s = TransformImage(*image, preprocess, reinterpret_cast<float*>(t->data.data()) + i * per);
    }
    if (!s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, ": ", files[i].filename().string(), ": ", s.message()));
    }
  }
  return std::shared_ptr<const HostTensor>(std::move(t));
}

}  // namespace

absl::StatusOr<ModelRegistry::LoadedVersion> ModelRegistry::LoadVersion(const std::string& name,
                                                                        int64_t version,
                                                                        const std::string& arch,
                                                                        int64_t* resolved) const {
  std::string note;
  ASSIGN_OR_RETURN(StoreVersion v, ResolveSkipping(name, version, &note));
  *resolved = v.version;
  journal_.BeginLoad(name, v.version);
  // A file whose manifest gives a sha256 is verified before any of it is parsed:
  // bytes that differ from what was published never reach the parsers. (Its zip
  // CRCs are then redundant and skipped.) Hand-copied versions have no sha256:
  // the CRC of every record is checked instead.
  RETURN_IF_ERROR(options_.store->Verify(v).status());
  ModelLoadOptions lo;
  lo.path = v.path;
  lo.format = v.manifest.format;
  lo.architecture = v.manifest.architecture;
  lo.architecture_path = v.architecture_path;
  // A template in the version directory wins over the --model NAME=ARCH hint.
  if (lo.architecture.empty() && lo.architecture_path.empty()) lo.architecture = arch;
  lo.device = options_.device;
  lo.name = name;
  lo.version = v.version;
  // The model outlives this call (LoadVersion only builds it) and reports to the
  // registry that owns it.
  lo.on_failed = [self = const_cast<ModelRegistry*>(this), name, version = v.version](
                     const std::string& reason) { self->VersionFailed(name, version, reason); };
  lo.verify_crc = v.manifest.sha256.empty();
  lo.trust_torchscript = options_.trust_torchscript;
  ASSIGN_OR_RETURN(lo.precision, PrecisionFor(name, v.manifest));
  lo.memory_layout = options_.memory_layout;
  lo.quantized_engine = v.manifest.quantized_engine;
  lo.calibration_path = v.calibration_path;
  if (lo.precision == Precision::kInt8 && lo.calibration_path.empty()) {
    ASSIGN_OR_RETURN(lo.calibration_samples, CalibrationImages(v, options_.store->root()));
  }
  lo.min_int8_agreement = options_.min_int8_agreement;
  lo.concurrency = std::max(1, options_.batching.num_workers);
  lo.forward_memory_bytes =
      static_cast<uint64_t>(std::max<int64_t>(0, options_.batching.max_batch_forward_bytes));
  std::vector<std::string> devices = {options_.device};
  if (options_.place) {
    ASSIGN_OR_RETURN(devices, options_.place(name));
  }
  absl::StatusOr<std::shared_ptr<const Model>> model;
  std::vector<std::shared_ptr<const Model>> copies;
  for (const std::string& device : devices) {  // one copy per device
    lo.device = device;
    model = options_.loader ? options_.loader(lo) : LoadModelFromFile(lo);
    RETURN_IF_ERROR(model.status());
    copies.push_back(*model);
  }
  // Every copy but the first warms up here; the first (or the only one) below.
  for (size_t i = 1; i < copies.size(); ++i) {
    RETURN_IF_ERROR(WarmUp(*copies[i], /*every_batch_size=*/false).status());
  }
  if (copies.size() > 1) model = std::make_shared<ReplicatedModel>(std::move(copies));
  ASSIGN_OR_RETURN(const std::vector<int64_t> output, WarmUp(**model, /*every_batch_size=*/false));
  auto preprocess = std::make_shared<ImagePreprocess>();
  if (!v.manifest.preprocess.empty()) {
    absl::StatusOr<ImagePreprocess> p = ParsePreprocess(v.manifest.preprocess);
    if (!p.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "manifest.json of version ", v.version, " has a bad preprocess: ", p.status().message()));
    }
    *preprocess = *std::move(p);
  }
  ASSIGN_OR_RETURN(auto labels, ReadLabels(v));
  if (labels != nullptr) {
    std::vector<int64_t> classes = output;
    if (classes.empty()) {  // no own input shape (TorchScript): what its images become
      std::vector<int64_t> shape = preprocess->OutputShape();
      shape.insert(shape.begin(), 1);
      if ((*model)->ValidateInput(DType::kFloat32, shape).ok()) {
        if (absl::StatusOr<HostTensor> out = (*model)->Forward(ZerosProbe(shape)); out.ok()) {
          classes = out->shape;
        }
      }
    }
    RETURN_IF_ERROR(CheckLabelCount(labels->size(), classes));
  }
  return LoadedVersion{std::move(v), *std::move(model), std::move(labels), std::move(preprocess),
                       std::move(note)};
}

void ModelRegistry::VersionFailed(const std::string& name, int64_t version,
                                  const std::string& reason) {
  // Called on a batch thread: only bookkeeping here, the reload on the loader thread.
  LOG_ERROR("model ", name, " version ", version, ": ", reason);
  journal_.Skip(name, version);  // skipped after a restart too, until LoadModel of it succeeds
  {
    absl::MutexLock lock(&mu_);
    auto it = models_.find(name);
    if (it == models_.end() || it->second.status.serving_version != version) return;
    it->second.last_failed_version = version;
    it->second.status.last_error = reason;
    it->second.failure_note = absl::StrCat("version ", version, " failed: ", reason);
  }
  // The newest other version, if the store has one; until it serves, this
  // version's batches answer FAILED_PRECONDITION. None: the model is FAILED.
  int64_t other = 0;
  if (absl::StatusOr<std::vector<int64_t>> versions = options_.store->ListVersions(name);
      versions.ok()) {
    for (int64_t v : *versions) {
      if (v != version) other = v;  // ascending
    }
  }
  std::shared_ptr<const Model> dropped;  // freed outside the lock
  if (other == 0) {
    absl::MutexLock lock(&mu_);
    auto it = models_.find(name);
    if (it == models_.end() || it->second.status.serving_version != version) return;
    dropped = std::move(it->second.model);
    it->second.status.state = ModelState::kFailed;
  }
  if (other == 0) {
    if (listener_) listener_(name, false);
    return;
  }
  LoadAsync(name, other, [name, version](absl::Status s) {
    if (!s.ok()) {
      LOG_ERROR("model ", name, ": no other version serves after version ", version,
                " failed: ", s.message());
    }
  });
}

absl::StatusOr<std::shared_ptr<const std::vector<std::string>>> ModelRegistry::ReadLabels(
    const StoreVersion& v) {
  if (v.labels_path.empty()) return nullptr;
  constexpr uintmax_t kMaxBytes = 4 << 20;
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(v.labels_path, ec);
  if (ec || size > kMaxBytes) {
    return absl::FailedPreconditionError(absl::StrCat("labels.txt of version ", v.version,
                                                      ec ? " cannot be read" : " is over 4 MiB"));
  }
  std::ifstream in(v.labels_path);
  auto labels = std::make_shared<std::vector<std::string>>();
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels->push_back(std::move(line));
  }
  return std::shared_ptr<const std::vector<std::string>>(std::move(labels));
}

absl::StatusOr<StoreVersion> ModelRegistry::ResolveSkipping(const std::string& name,
                                                            int64_t version,
                                                            std::string* note) const {
  if (version == 0) {
    ASSIGN_OR_RETURN(const int64_t pin, options_.store->Pin(name));
    if (pin > 0) return options_.store->Resolve(name, pin);  // the store's policy
  }
  const int64_t skipped = version == 0 ? journal_.SkippedVersion(name) : 0;
  if (skipped == 0) return options_.store->Resolve(name, version);
  ASSIGN_OR_RETURN(std::vector<int64_t> versions, options_.store->ListVersions(name));
  int64_t pick = 0;
  for (int64_t v : versions) {
    if (v != skipped) pick = v;  // ascending: the newest other than the skipped one
  }
  *note = absl::StrCat("version ", skipped,
                       " was being loaded when the server stopped unexpectedly (killed, out of "
                       "memory or crashed), or its sandboxed worker kept being stopped; it is "
                       "skipped until LoadModel of version ",
                       skipped, " succeeds");
  if (pick == 0) return absl::FailedPreconditionError(*note);
  LOG_WARNING("model ", name, ": ", *note, "; loading version ", pick, " instead");
  return options_.store->Resolve(name, pick);
}

absl::StatusOr<Precision> ModelRegistry::PrecisionFor(const std::string& name,
                                                      const Manifest& manifest) const {
  if (auto it = options_.model_precision.find(name); it != options_.model_precision.end()) {
    return it->second;  // the operator's --model_precision wins
  }
  if (manifest.precision.empty()) return options_.precision;
  absl::StatusOr<Precision> p = ParsePrecision(manifest.precision);
  if (!p.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("manifest.json: ", p.status().message()));
  }
  return p;
}

absl::StatusOr<std::vector<int64_t>> ModelRegistry::WarmUp(const Model& model,
                                                           bool every_batch_size) const {
  std::vector<int64_t> shape = model.WarmupShape();
  std::vector<int64_t> output;
  if (shape.empty()) return output;  // input shape unknown
  const int64_t sizes =
      every_batch_size ? std::max<int64_t>(1, options_.batching.max_batch_size) : 1;
  for (int64_t n = 1; n <= sizes; ++n) {
    shape[0] = n;
    absl::StatusOr<HostTensor> out = model.Forward(ZerosProbe(shape));
    if (!out.ok()) {
      return absl::Status(out.status().code(), absl::StrCat("warm-up forward pass (batch ", n,
                                                            ") failed: ", out.status().message()));
    }
    if (n == 1) output = out->shape;
  }
  return output;
}

void ModelRegistry::EnsureQueue(const std::string& name) {
  if (queues_.count(name) != 0 || shutdown_) return;
  BatchQueue::Options q = options_.batching;
  q.name = name;
  if (!q.before_batch && options_.intra_op_threads > 0) {
    // One batch alone uses every intra-op thread; concurrent ones split them.
    q.before_batch = [threads = options_.intra_op_threads](int running) {
      SetThisThreadIntraOpThreads(std::max(1, threads / std::max(1, running)));
    };
  }
  if (options_.on_batch) {
    q.on_batch = [f = options_.on_batch, name](int64_t samples, absl::Duration,
                                               absl::Duration compute) {
      f(name, samples, absl::ToDoubleSeconds(compute));
    };
  }
  q.on_batch_stats = [this, name](const BatchQueue::BatchStats& b) { statistics_.Record(name, b); };
  if (options_.on_queue_wait) {
    q.on_request_wait = [f = options_.on_queue_wait, name](absl::Duration wait) {
      f(name, absl::ToDoubleSeconds(wait));
    };
  }
  queues_[name] = std::make_shared<BatchQueue>(
      q, [this, name]() -> absl::StatusOr<ModelHandle> { return Get(name, 0); });
}

bool ModelRegistry::FinishLoad(const std::string& name, const absl::StatusOr<LoadedVersion>& result,
                               int64_t resolved, std::shared_ptr<const Model>* old) {
  absl::MutexLock lock(&mu_);
  Entry& e = models_[name];
  e.loading = false;
  if (result.ok()) {
    *old = std::move(e.model);
    e.model = result->model;
    e.labels = result->labels;
    e.preprocess = result->preprocess;
    const ModelInfo& info = e.model->info();
    e.status.state = ModelState::kReady;
    e.status.serving_version = result->version.version;
    e.status.format = info.format;
    e.status.architecture = info.architecture;
    e.status.device = info.device;
    e.status.precision = info.precision;
    e.status.int8_samples = info.int8_samples;
    e.status.int8_top1_agreement = info.int8_top1_agreement;
    e.status.int8_worst_cosine = info.int8_worst_cosine;
    e.status.memory_format = info.memory_format;
    e.status.parameter_bytes = info.parameter_bytes;
    e.status.last_error = result->note;
    if (!e.failure_note.empty()) {  // why the version before this one stopped serving
      e.status.last_error = e.failure_note + (result->note.empty() ? "" : "; " + result->note);
      e.failure_note.clear();
    }
    e.last_failed_version = 0;
    EnsureQueue(name);
    return true;
  }
  e.status.last_error = result.status().ToString();  // "DATA_LOSS: ..."
  e.last_failed_version = resolved;
  if (e.model == nullptr) e.status.state = ModelState::kFailed;
  const bool ready = e.status.state == ModelState::kReady;
  if (result.status().code() == absl::StatusCode::kNotFound && e.model == nullptr &&
      queues_.count(name) == 0) {
    models_.erase(name);  // a model the store does not have leaves no trace
  }
  return ready;
}

absl::Status ModelRegistry::DoLoad(const std::string& name, const std::string& architecture,
                                   int64_t version) {
  const auto start = std::chrono::steady_clock::now();
  const std::string arch = BeginLoad(name, architecture);
  int64_t resolved = 0;
  absl::StatusOr<LoadedVersion> result;
  try {
    result = LoadVersion(name, version, arch, &resolved);
  } catch (const std::bad_alloc&) {
    // No exception leaves the loading thread; the old version keeps serving.
    result = absl::ResourceExhaustedError("out of memory while loading the checkpoint");
  } catch (const std::exception& e) {
    result = absl::InternalError(absl::StrCat("loading the checkpoint failed: ", e.what()));
  }
  if (!result.ok()) {  // named as the store knows it, never by a server path
    std::string msg = options_.store->Describe(result.status().message());
    const std::string what = absl::StrCat("model '", name, "' version ", resolved);
    if (resolved > 0 && !absl::StrContains(msg, what)) msg = absl::StrCat(what, ": ", msg);
    result = absl::Status(result.status().code(), msg);
  }
  if (result.ok() && absl::StrContains(result->model->info().device, "cuda")) {
    // On a GPU, every batch size the queue can form, on every batch worker's own
    // thread: cuDNN picks its kernels per shape on first use and keeps them per
    // thread, so a warm-up on this thread alone leaves each worker to search
    // again, batch size by batch size, while it serves.
    std::shared_ptr<BatchQueue> queue;
    {
      absl::MutexLock lock(&mu_);
      EnsureQueue(name);
      if (auto it = queues_.find(name); it != queues_.end()) queue = it->second;
    }
    if (queue != nullptr) {
      absl::Status warm = queue->RunOnEveryWorker([this, model = result->model]() {
        const auto* copies = dynamic_cast<const ReplicatedModel*>(model.get());
        if (copies == nullptr) return WarmUp(*model, /*every_batch_size=*/true).status();
        for (const auto& copy : copies->replicas()) {
          RETURN_IF_ERROR(WarmUp(*copy, /*every_batch_size=*/true).status());
        }
        return absl::OkStatus();
      });
      if (!warm.ok()) result = warm;
    }
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  journal_.EndLoad(name);
  if (result.ok()) journal_.ClearSkip(name, result->version.version);
  std::shared_ptr<const Model> old;
  const bool ready = FinishLoad(name, result, resolved, &old);
  old.reset();  // the previous version goes when its last batch finishes
  if (listener_) listener_(name, ready);
  // A name the store does not have is no model: it leaves no trace, not even a
  // metric label (unknown names would grow the series without bound).
  const bool unknown = !result.ok() && result.status().code() == absl::StatusCode::kNotFound &&
                       !ready && !listing_.Find(name).has_value();
  if (options_.on_load && !unknown) options_.on_load(name, result.ok(), ms / 1000.0);
  if (!result.ok()) {
    LOG_WARNING("model ", name, ": load of version ",
                version == 0 ? "newest" : std::to_string(version), " failed after ",
                static_cast<int64_t>(ms), " ms: ", result.status().ToString());
    return result.status();
  }
  const ModelInfo& info = result->model->info();
  LOG_INFO("model ", name, ": version ", result->version.version, " (", info.architecture, ", ",
           ModelFormatName(info.format), ") ready on ", info.device, " in ",
           static_cast<int64_t>(ms), " ms");
  return absl::OkStatus();
}

void ModelRegistry::LoadAsync(const std::string& name, int64_t version,
                              std::function<void(absl::Status)> done) {
  absl::Status refused = CheckpointStore::ValidateModelName(name);
  if (refused.ok()) {
    absl::MutexLock lock(&mu_);
    if (shutdown_) {
      refused = absl::UnavailableError("server is shutting down");
    } else if (Entry& e = models_[name]; e.loading) {
      refused =
          absl::AbortedError(absl::StrCat("another load of model '", name, "' is in progress"));
    } else {
      e.loading = true;
      loads_.push_back({name, version, std::move(done)});
      loader_cv_.Signal();
      if (!loader_started_) {
        loader_started_ = true;
        loader_ = std::thread([this] { LoaderLoop(); });
      }
      return;
    }
  }
  // Never call back with the lock held (the callback reads the registry).
  if (done) done(refused);
}

void ModelRegistry::LoaderLoop() {
  while (true) {
    PendingLoad job;
    {
      absl::MutexLock lock(&mu_);
      while (loads_.empty() && !shutdown_) loader_cv_.Wait(&mu_);
      if (loads_.empty()) return;
      job = std::move(loads_.front());
      loads_.pop_front();
    }
    absl::Status s = DoLoad(job.name, "", job.version);
    if (job.done) job.done(s);
  }
}

absl::Status ModelRegistry::Unload(const std::string& name) {
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(name));
  std::shared_ptr<const Model> old;
  {
    absl::MutexLock lock(&mu_);
    auto it = models_.find(name);
    if (it == models_.end() || it->second.model == nullptr) {
      return absl::NotFoundError(absl::StrCat("model '", name, "' is not loaded"));
    }
    if (it->second.loading) {
      return absl::AbortedError(absl::StrCat("a load of model '", name, "' is in progress"));
    }
    Entry& e = it->second;
    old = std::move(e.model);
    e.status.state = ModelState::kUnloaded;
    e.status.serving_version = 0;
    e.status.device.clear();
    e.status.parameter_bytes = 0;
    e.status.int8_samples = 0;
    e.status.int8_top1_agreement = e.status.int8_worst_cosine = 0;
  }
  old.reset();  // freed when its last batch finishes
  if (listener_) listener_(name, false);
  LOG_INFO("model ", name, ": unloaded");
  return absl::OkStatus();
}

absl::StatusOr<StoreVersion> ModelRegistry::Save(const std::string& name, ModelFormat format,
                                                 const std::string& target_name) {
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(name));
  const std::string target = target_name.empty() ? name : target_name;
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(target));
  if (format != ModelFormat::kStateDict && format != ModelFormat::kTorchScript &&
      format != ModelFormat::kPickledModule && format != ModelFormat::kExportedProgram &&
      format != ModelFormat::kAotiPackage) {
    return absl::InvalidArgumentError(
        absl::StrCat("format ", static_cast<int>(format), " (", ModelFormatName(format),
                     ") is not a checkpoint format, expected STATE_DICT, TORCHSCRIPT, "
                     "PICKLED_MODULE, EXPORTED_PROGRAM or AOTI_PACKAGE"));
  }
  ASSIGN_OR_RETURN(ModelHandle handle, Get(name, 0));
  const ModelInfo& info = handle.model->info();
  CheckpointStore::NewVersion nv;
  nv.model_name = target;
  nv.format = format;
  // A TorchScript module's, exported program's or template's name is no VGG
  // architecture: its state dict is served through the template linked below instead.
  if (info.format != ModelFormat::kTorchScript && info.format != ModelFormat::kExportedProgram &&
      info.format != ModelFormat::kAotiPackage && !info.from_template) {
    nv.architecture = info.architecture;
  }
  nv.source = absl::StrCat("SaveModel of ", name, " version ", handle.version);
  if (handle.preprocess != nullptr) nv.preprocess = PreprocessJson(*handle.preprocess);
  // An int8 version's engine goes with it: its outputs depend on it.
  std::string calibration;  // the samples go with the weights too
  if (absl::StatusOr<StoreVersion> from = options_.store->Resolve(name, handle.version);
      from.ok()) {
    nv.quantized_engine = from->manifest.quantized_engine;
    calibration = from->calibration_path;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<PendingVersion> pending, options_.store->BeginVersion(nv));
  RETURN_IF_ERROR(handle.model->Save(format, pending->file_path()));
  if (!calibration.empty()) RETURN_IF_ERROR(pending->AddCalibrationFrom(calibration));
  if (handle.labels != nullptr) {  // the labels go with the weights
    ASSIGN_OR_RETURN(StoreVersion source, options_.store->Resolve(name, handle.version));
    if (!source.labels_path.empty()) RETURN_IF_ERROR(pending->AddLabelsFrom(source.labels_path));
  }
  if (format == ModelFormat::kStateDict &&
      (info.from_template || info.format == ModelFormat::kTorchScript ||
       info.format == ModelFormat::kExportedProgram)) {
    // The state dict of a template model, a TorchScript module or an exported program
    // serves with that module (program) as its architecture template (the same file,
    // linked where possible: architecture.pt or architecture.pt2).
    ASSIGN_OR_RETURN(StoreVersion source, options_.store->Resolve(name, handle.version));
    RETURN_IF_ERROR(
        pending->AddArchitectureFrom(info.from_template ? source.architecture_path : source.path));
  }
  if (format == ModelFormat::kAotiPackage && info.format == ModelFormat::kAotiPackage) {
    // The program that gives the package's input shapes goes with it.
    ASSIGN_OR_RETURN(StoreVersion source, options_.store->Resolve(name, handle.version));
    if (!source.architecture_path.empty()) {
      RETURN_IF_ERROR(pending->AddArchitectureFrom(source.architecture_path));
    }
  }
  ASSIGN_OR_RETURN(StoreVersion v, pending->Commit());
  listing_.Refresh(target);
  LOG_INFO("model ", name, ": version ", handle.version, " saved as ", target, " version ",
           v.version, " (", ModelFormatName(format), ", ", v.manifest.size_bytes, " bytes)");
  return v;
}

void ModelRegistry::StartPolling(absl::Duration interval) {
  absl::MutexLock lock(&mu_);
  if (poller_started_ || interval <= absl::ZeroDuration()) return;
  poller_started_ = true;
  poller_ = std::thread([this, interval] {
    while (true) {
      struct Known {
        std::string name;
        int64_t serving, failed;
      };
      std::vector<Known> todo;
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&shutdown_), interval);
        if (shutdown_) return;
        for (const auto& [name, e] : models_) {
          // Models that serve (or failed to) follow the store; unloaded ones stay
          // unloaded. No store I/O under the lock.
          if (e.loading || e.status.state == ModelState::kUnloaded ||
              e.status.state == ModelState::kLoading) {
            continue;
          }
          todo.push_back({name, e.status.serving_version, e.last_failed_version});
        }
      }
      listing_.RefreshAll();  // one listing per tick serves the poll and status
      for (const Known& k : todo) PollOne(k.name, k.serving, k.failed);
    }
  });
}

void ModelRegistry::PollOne(const std::string& name, int64_t serving, int64_t failed) {
  // A pin (kept in the store by any replica's LoadModel) wins; else the newest
  // version that neither failed here nor killed a process (the journal).
  const std::optional<StoreListing::Entry> stored = listing_.Find(name);
  if (!stored.has_value() || stored->versions.empty()) return;
  const int64_t pin = stored->pinned_version;
  if (pin > 0) {
    if (pin != serving && pin != failed) {
      LOG_INFO("model ", name, ": pinned to version ", pin, " in the store, loading it");
      LoadAsync(name, pin, nullptr);
    }
    return;
  }
  const int64_t known = std::max({serving, failed, journal_.SkippedVersion(name)});
  if (stored->versions.back() > known) {  // also back to the newest after an unpin
    LOG_INFO("model ", name, ": store has version ", stored->versions.back(), ", reloading");
    LoadAsync(name, stored->versions.back(), nullptr);
  }
}

absl::StatusOr<ModelHandle> ModelRegistry::Get(const std::string& name, int64_t version) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' is not loaded"));
  }
  const Entry& e = it->second;
  if (e.model == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", name, "' is ", ModelStateName(e.status.state), ", not READY",
                     e.status.last_error.empty() ? "" : ": ", e.status.last_error));
  }
  if (version != 0 && version != e.status.serving_version) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' version ", version,
                                            " is not loaded; the serving version is ",
                                            e.status.serving_version));
  }
  return ModelHandle{e.model, e.status.serving_version, e.labels, e.preprocess};
}

absl::Status ModelRegistry::Enqueue(const std::string& name, BatchTask task) {
  std::shared_ptr<BatchQueue> queue;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("server is shutting down");
    auto it = queues_.find(name);
    if (it == queues_.end()) {
      return absl::NotFoundError(absl::StrCat("model '", name, "' is not loaded"));
    }
    queue = it->second;
  }
  return queue->Enqueue(std::move(task));
}

std::vector<std::pair<std::string, int64_t>> ModelRegistry::QueueDepths() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& [name, q] : queues_) out.emplace_back(name, q->queued_samples());
  return out;
}

void ModelRegistry::Shutdown() {
  std::map<std::string, std::shared_ptr<BatchQueue>> queues;
  std::deque<PendingLoad> loads;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    queues = queues_;
    loads.swap(loads_);
    for (const PendingLoad& l : loads) models_[l.name].loading = false;
    loader_cv_.SignalAll();
  }
  for (PendingLoad& l : loads) {
    if (l.done) l.done(absl::UnavailableError("server is shutting down"));
  }
  if (loader_.joinable()) loader_.join();
  if (poller_.joinable()) poller_.join();
  for (auto& [name, q] : queues) q->Shutdown();
}

ModelStatusInfo ModelRegistry::Snapshot(const std::string& name, const Entry* entry) const {
  ModelStatusInfo s;
  if (entry != nullptr) {
    s = entry->status;
  } else {
    s.model_name = name;
    s.state = ModelState::kUnloaded;
  }
  return s;
}

void ModelRegistry::FillFromStore(const StoreListing::Entry& stored, ModelStatusInfo* s) {
  s->store_versions = stored.versions;
  s->pinned_version = stored.pinned_version;
}

absl::StatusOr<ModelStatusInfo> ModelRegistry::Status(const std::string& name) const {
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(name));
  ModelStatusInfo s;
  bool known = false;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = models_.find(name);
    known = it != models_.end();
    s = Snapshot(name, known ? &it->second : nullptr);
  }
  const std::optional<StoreListing::Entry> stored = listing_.Find(name);
  if (stored.has_value()) FillFromStore(*stored, &s);
  if (!known && !stored.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' is neither loaded nor in the store"));
  }
  return s;
}

absl::StatusOr<std::vector<ModelStatusInfo>> ModelRegistry::List() const {
  const std::map<std::string, StoreListing::Entry> stored = listing_.All();
  std::vector<ModelStatusInfo> out;
  {
    absl::ReaderMutexLock lock(&mu_);
    std::map<std::string, const Entry*> all;
    for (const auto& [n, e] : stored) all[n] = nullptr;
    for (const auto& [n, e] : models_) all[n] = &e;
    for (const auto& [n, e] : all) out.push_back(Snapshot(n, e));
  }
  for (ModelStatusInfo& s : out) {
    if (auto it = stored.find(s.model_name); it != stored.end()) FillFromStore(it->second, &s);
  }
  return out;
}

}  // namespace modelserver
