#include "server/model/model_warnings.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/util/logging.h"

namespace modelserver {
namespace {

constexpr size_t kMaxKinds = 16;
constexpr size_t kMaxMessageBytes = 300;
constexpr absl::Duration kSummaryInterval = absl::Minutes(1);

absl::Mutex& LabelMu() {
  static auto* mu = new absl::Mutex;
  return *mu;
}
std::string& Label() {
  static auto* label = new std::string;
  return *label;
}

}  // namespace

void ModelWarningLog::Warn(const std::string& message) {
  const std::string text = absl::CHexEscape(message.substr(0, kMaxMessageBytes));
  const char* cut = message.size() > kMaxMessageBytes ? "..." : "";
  absl::MutexLock lock(&mu_);
  ++count_;
  const absl::Time now = absl::Now();
  if (logged_.size() < kMaxKinds && logged_.insert(text).second) {
    last_summary_ = now;
    LOG_WARNING(label_, " warned: \"", text, cut,
                "\" (each distinct warning is logged once; repeats are counted)");
    return;
  }
  ++unlogged_;
  if (now - last_summary_ >= kSummaryInterval) {
    LOG_WARNING(label_, " warned ", unlogged_, " more times (", count_, " in all; the last: \"",
                text, cut, "\")");
    unlogged_ = 0;
    last_summary_ = now;
  }
}

int64_t ModelWarningLog::count() const {
  absl::MutexLock lock(&mu_);
  return count_;
}

void ModelWarningLog::SetProcessLabel(const std::string& label) {
  absl::MutexLock lock(&LabelMu());
  Label() = label;
}

std::string ModelWarningLog::ProcessLabel() {
  absl::MutexLock lock(&LabelMu());
  return Label();
}

}  // namespace modelserver
