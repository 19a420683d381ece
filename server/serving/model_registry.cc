#include "server/serving/model_registry.h"

#include <chrono>
#include <future>

#include "absl/strings/str_cat.h"
#include "server/model/model_loader.h"
#include "server/util/logging.h"
#include "server/util/status_macros.h"

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

absl::Status ModelRegistry::Load(const std::string& name, const std::string& architecture,
                                 int64_t version) {
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(name));
  const auto start = std::chrono::steady_clock::now();
  {
    absl::MutexLock lock(&mu_);
    Entry& e = models_[name];
    e.status.model_name = name;
    if (e.model == nullptr) e.status.state = ModelState::kLoading;
  }
  auto load = [&]() -> absl::StatusOr<std::pair<StoreVersion, std::shared_ptr<const Model>>> {
    ASSIGN_OR_RETURN(StoreVersion v, options_.store->Resolve(name, version));
    // The sha256 check runs beside the load (both read the file; parsing an
    // unverified file is safe, serving it is not): with a manifest sha256 the
    // zip CRCs are redundant and skipped. A verification failure outranks
    // whatever the parse of a corrupt file said.
    std::future<absl::StatusOr<bool>> verified =
        std::async(std::launch::async, [&] { return options_.store->Verify(v); });
    ModelLoadOptions lo;
    lo.path = v.path;
    lo.format = v.manifest.format;
    lo.architecture = v.manifest.architecture.empty() ? architecture : v.manifest.architecture;
    lo.device = options_.device;
    lo.verify_crc = v.manifest.sha256.empty();
    absl::StatusOr<std::shared_ptr<const Model>> model = LoadModelFromFile(lo);
    RETURN_IF_ERROR(verified.get().status());
    RETURN_IF_ERROR(model.status());
    return std::make_pair(std::move(v), *std::move(model));
  };
  auto result = load();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::shared_ptr<const Model> old;
  bool ready = false;
  {
    absl::MutexLock lock(&mu_);
    Entry& e = models_[name];
    if (result.ok()) {
      old = std::move(e.model);
      e.model = result->second;
      const ModelInfo& info = e.model->info();
      e.status.state = ModelState::kReady;
      e.status.serving_version = result->first.version;
      e.status.format = info.format;
      e.status.architecture = info.architecture;
      e.status.device = info.device;
      e.status.last_error.clear();
    } else {
      e.status.last_error = result.status().ToString();  // "DATA_LOSS: ..."
      if (e.model == nullptr) e.status.state = ModelState::kFailed;
    }
    ready = e.status.state == ModelState::kReady;
  }
  old.reset();  // the previous version goes when its last request finishes
  if (listener_) listener_(name, ready);
  if (!result.ok()) {
    LOG_WARNING("model ", name, ": load of version ",
                version == 0 ? "newest" : std::to_string(version), " failed after ",
                static_cast<int64_t>(ms), " ms: ", result.status().ToString());
    return result.status();
  }
  LOG_INFO("model ", name, ": version ", result->first.version, " (",
           result->second->info().architecture, ", ",
           ModelFormatName(result->second->info().format), ") ready on ",
           result->second->info().device, " in ", static_cast<int64_t>(ms), " ms");
  return absl::OkStatus();
}

absl::StatusOr<ModelRegistry::Handle> ModelRegistry::Get(const std::string& name,
                                                         int64_t version) const {
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
  return Handle{e.model, e.status.serving_version};
}

ModelStatusInfo ModelRegistry::Snapshot(const std::string& name, const Entry* entry) const {
  ModelStatusInfo s;
  if (entry != nullptr) {
    s = entry->status;
  } else {
    s.model_name = name;
    s.state = ModelState::kUnloaded;
  }
  auto versions = options_.store->ListVersions(name);
  if (versions.ok()) s.store_versions = *std::move(versions);
  return s;
}

absl::StatusOr<ModelStatusInfo> ModelRegistry::Status(const std::string& name) const {
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(name));
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  ModelStatusInfo s = Snapshot(name, it == models_.end() ? nullptr : &it->second);
  if (it == models_.end() && s.store_versions.empty()) {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' is neither loaded nor in the store"));
  }
  return s;
}

absl::StatusOr<std::vector<ModelStatusInfo>> ModelRegistry::List() const {
  ASSIGN_OR_RETURN(std::vector<std::string> stored, options_.store->ListModels());
  absl::ReaderMutexLock lock(&mu_);
  std::map<std::string, const Entry*> all;
  for (const std::string& n : stored) all[n] = nullptr;
  for (const auto& [n, e] : models_) all[n] = &e;
  std::vector<ModelStatusInfo> out;
  for (const auto& [n, e] : all) out.push_back(Snapshot(n, e));
  return out;
}

}  // namespace modelserver
