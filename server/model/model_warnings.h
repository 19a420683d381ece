#ifndef MODELSERVER_SERVER_MODEL_MODEL_WARNINGS_H_
#define MODELSERVER_SERVER_MODEL_MODEL_WARNINGS_H_

#include <cstdint>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/model/torch_compat.h"

namespace modelserver {

// Where the warnings one model raises while it runs go (TorchScript's
// `warnings.warn`, aten::warn; LibTorch's TORCH_WARN): the server's log, each
// distinct message once (the first 16 kinds, each cut at 300 bytes and escaped:
// the text is the model's), the rest counted and summed up at most once a minute.
// A model that warns on every request (torchvision's scripted GoogLeNet does)
// thus costs one line, not one per request.
//
//   ModelWarningLog log("model 'googlenet' version 1");
//   { torch_compat::WarningHandlerGuard guard(&log); module.forward(...); }
//
// Thread-safe.
class ModelWarningLog : public torch_compat::WarningSink {
 public:
  explicit ModelWarningLog(std::string label) : label_(std::move(label)) {}

  void Warn(const std::string& message) override;

  const std::string& label() const { return label_; }

  // How many warnings, logged or not.
  int64_t count() const;

  // What the models of this process are called in the log when their loader
  // names no one (a sandboxed worker: the server passes its model's name).
  static void SetProcessLabel(const std::string& label);
  static std::string ProcessLabel();

 private:
  const std::string label_;
  mutable absl::Mutex mu_;
  std::set<std::string> logged_ ABSL_GUARDED_BY(mu_);
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t unlogged_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_summary_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_MODEL_WARNINGS_H_
