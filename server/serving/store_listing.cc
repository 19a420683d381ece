#include "server/serving/store_listing.h"

#include <utility>

namespace modelserver {

StoreListing::StoreListing(const CheckpointStore* store, absl::Duration interval) : store_(store) {
  if (store_ == nullptr) return;
  RefreshAll();
  if (interval <= absl::ZeroDuration()) return;
  refresher_ = std::thread([this, interval] {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&stop_), interval);
        if (stop_) return;
      }
      RefreshAll();
    }
  });
}

StoreListing::~StoreListing() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (refresher_.joinable()) refresher_.join();
}

std::optional<StoreListing::Entry> StoreListing::Read(const std::string& name) const {
  absl::StatusOr<std::vector<int64_t>> versions = store_->ListVersions(name);
  if (!versions.ok() || versions->empty()) return std::nullopt;
  Entry e;
  e.versions = *std::move(versions);
  if (absl::StatusOr<int64_t> pin = store_->Pin(name); pin.ok()) e.pinned_version = *pin;
  return e;
}

void StoreListing::RefreshAll() {
  if (store_ == nullptr) return;
  uint64_t start = 0;
  {
    absl::MutexLock lock(&mu_);
    start = generation_;
  }
  absl::StatusOr<std::vector<std::string>> names = store_->ListModels();
  if (!names.ok()) return;  // keep the last good listing
  std::map<std::string, Entry> fresh;
  for (const std::string& name : *names) {
    if (std::optional<Entry> e = Read(name)) fresh.emplace(name, *std::move(e));
  }
  absl::MutexLock lock(&mu_);
  // A model re-read by Refresh() while this listing ran is newer than what this
  // listing saw: keep it.
  for (auto it = touched_.begin(); it != touched_.end();) {
    if (it->second <= start) {
      it = touched_.erase(it);
      continue;
    }
    if (auto m = models_.find(it->first); m != models_.end()) {
      fresh[it->first] = m->second;
    } else {
      fresh.erase(it->first);
    }
    ++it;
  }
  models_.swap(fresh);
}

void StoreListing::Refresh(const std::string& name) {
  if (store_ == nullptr) return;
  std::optional<Entry> e = Read(name);
  absl::MutexLock lock(&mu_);
  touched_[name] = ++generation_;
  if (e.has_value()) {
    models_[name] = *std::move(e);
  } else {
    models_.erase(name);
  }
}

std::optional<StoreListing::Entry> StoreListing::Find(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return std::nullopt;
  return it->second;
}

std::map<std::string, StoreListing::Entry> StoreListing::All() const {
  absl::ReaderMutexLock lock(&mu_);
  return models_;
}

}  // namespace modelserver
