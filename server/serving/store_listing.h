#ifndef MODELSERVER_SERVER_SERVING_STORE_LISTING_H_
#define MODELSERVER_SERVER_SERVING_STORE_LISTING_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/store/checkpoint_store.h"

namespace modelserver {

// A cached listing of the store -- each model's versions and pin -- for status
// and metrics, so that answering them never touches the filesystem (a network
// filesystem that takes seconds to list stalls only the refresh). Refreshed by
// its own thread every `interval` and by Refresh(name) after this server writes.
//
// Thread-safe. The I/O of a refresh runs without the lock; readers get a copy.
class StoreListing {
 public:
  struct Entry {
    std::vector<int64_t> versions;  // ascending
    int64_t pinned_version = 0;     // 0: follows the newest
  };

  // `store` is not owned and outlives this. Lists the store once (blocking), then
  // refreshes every `interval` (none when it is not positive) until destroyed.
  StoreListing(const CheckpointStore* store, absl::Duration interval);
  ~StoreListing();
  StoreListing(const StoreListing&) = delete;
  StoreListing& operator=(const StoreListing&) = delete;

  // Re-reads the whole store (blocking; no lock held during the I/O). A model
  // whose listing fails keeps its previous entry.
  void RefreshAll() ABSL_LOCKS_EXCLUDED(mu_);
  // Re-reads one model (blocking), after this server wrote to it.
  void Refresh(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);

  // The cached entry of `name`; nullopt when the store had no such model.
  std::optional<Entry> Find(const std::string& name) const ABSL_LOCKS_EXCLUDED(mu_);
  // Every cached model, by name.
  std::map<std::string, Entry> All() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // The listing of one model; nullopt when it has no versions (or cannot be read).
  std::optional<Entry> Read(const std::string& name) const;

  const CheckpointStore* const store_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> models_ ABSL_GUARDED_BY(mu_);
  // Refresh() of a model stamps it with the next generation, so that a RefreshAll
  // that started earlier does not overwrite it with what it read before.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> touched_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread refresher_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVING_STORE_LISTING_H_
