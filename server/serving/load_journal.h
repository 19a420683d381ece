#ifndef MODELSERVER_SERVER_SERVING_LOAD_JOURNAL_H_
#define MODELSERVER_SERVER_SERVING_LOAD_JOURNAL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace modelserver {

// Remembers, across process deaths, which model version was being loaded, so
// that a checkpoint that kills the process while it loads (out of memory, a
// crash) is skipped after the restart instead of crash-looping every replica.
//
// In `dir` (one per replica: an emptyDir survives container restarts):
//   <model>.loading  the version whose load is in progress (removed when it ends)
//   <model>.skip     a version found in <model>.loading at startup (Init): the
//                    process died loading it; skipped until a load of it succeeds
// Every write is a small file written and renamed into place.
//
// Thread-safe for different models (the registry never loads one model twice at
// once). A journal with an empty dir does nothing.
class LoadJournal {
 public:
  explicit LoadJournal(std::string dir) : dir_(std::move(dir)) {}

  // Creates the directory, and turns each <model>.loading found there (a load
  // that killed the previous process) into <model>.skip. Call once, at startup.
  // INTERNAL when the directory cannot be made (then the journal is off).
  absl::Status Init();
  bool enabled() const { return !dir_.empty(); }

  // Records that `version` of `model` starts loading / finished (either way).
  void BeginLoad(const std::string& model, int64_t version) const;
  void EndLoad(const std::string& model) const;

  // The version this model must skip (0: none): what Init found loading.
  int64_t SkippedVersion(const std::string& model) const;
  // Marks `version` skipped as Init does (its sandboxed worker kept dying).
  void Skip(const std::string& model, int64_t version) const;
  // A load of `version` succeeded: clears a skip of it (or of an older version).
  void ClearSkip(const std::string& model, int64_t version) const;

 private:
  std::string Path(const std::string& model, const char* suffix) const;
  void Write(const std::string& path, int64_t version) const;
  static int64_t Read(const std::string& path);

  const std::string dir_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVING_LOAD_JOURNAL_H_
