#ifndef MODELSERVER_TESTS_TESTING_FAKE_MODEL_H_
#define MODELSERVER_TESTS_TESTING_FAKE_MODEL_H_

#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/batching/clock.h"
#include "server/model/model.h"

namespace modelserver::testing {

// A Model for batching tests: float32 [N, ...] in, [N, 1] out where each output
// row is 2 x the first element of its input sample. Records every batch's size,
// can fail, and "takes" `latency` by advancing a FakeClock. Thread-safe.
class FakeModel : public Model {
 public:
  explicit FakeModel(FakeClock* clock = nullptr, absl::Duration latency = absl::ZeroDuration())
      : clock_(clock), latency_(latency) {
    info_.architecture = "fake";
    info_.device = "cpu";
  }

  const ModelInfo& info() const override { return info_; }
  absl::Status ValidateInput(DType, const std::vector<int64_t>&) const override {
    return absl::OkStatus();
  }
  bool IsUnbatched(const std::vector<int64_t>&) const override { return false; }
  std::vector<int64_t> WarmupShape() const override { return {1, 1}; }
  absl::Status Save(ModelFormat, const std::string&) const override {
    return absl::UnimplementedError("fake");
  }

  absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const override {
    absl::Notification* gate = nullptr;
    {
      absl::MutexLock lock(&mu_);
      ++entered_;
      gate = gate_;
    }
    if (gate != nullptr) gate->WaitForNotification();
    absl::MutexLock lock(&mu_);
    batch_sizes_.push_back(batch.shape[0]);
    threads_.push_back(std::this_thread::get_id());
    shapes_.push_back(batch.shape);
    if (clock_ != nullptr) clock_->Advance(latency_);
    if (throw_ == Throw::kRuntimeError) throw std::runtime_error("fake model exploded");
    if (throw_ == Throw::kBadAlloc) throw std::bad_alloc();
    if (!error_.ok()) return error_;
    const int64_t n = batch.shape[0];
    const size_t per = batch.data.size() / static_cast<size_t>(n);
    HostTensor out;
    out.dtype = DType::kFloat32;
    out.shape = {n, 1};
    out.data.resize(static_cast<size_t>(n) * 4);
    for (int64_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, batch.data.data() + static_cast<size_t>(i) * per, 4);
      seen_.push_back(v);
      v *= 2;
      std::memcpy(out.data.data() + i * 4, &v, 4);
    }
    return out;
  }

  // What Forward throws (as a LibTorch model or an allocation can).
  enum class Throw { kNothing, kRuntimeError, kBadAlloc };
  void set_throw(Throw t) {
    absl::MutexLock lock(&mu_);
    throw_ = t;
  }

  // Forward waits for `gate` (not owned; null: never) before it computes.
  void set_gate(absl::Notification* gate) {
    absl::MutexLock lock(&mu_);
    gate_ = gate;
  }
  // What info().device says ("cpu" unless set; call before sharing the model).
  void set_device(std::string device) { info_.device = std::move(device); }
  // The thread of every computed batch, in order.
  std::vector<std::thread::id> threads() const {
    absl::MutexLock lock(&mu_);
    return threads_;
  }
  // Forward calls begun (waiting at the gate or done).
  int entered() const {
    absl::MutexLock lock(&mu_);
    return entered_;
  }

  void set_error(absl::Status s) {
    absl::MutexLock lock(&mu_);
    error_ = std::move(s);
  }
  std::vector<int64_t> batch_sizes() const {
    absl::MutexLock lock(&mu_);
    return batch_sizes_;
  }
  std::vector<std::vector<int64_t>> shapes() const {
    absl::MutexLock lock(&mu_);
    return shapes_;
  }
  // First element of every sample computed, in order.
  std::vector<float> seen() const {
    absl::MutexLock lock(&mu_);
    return seen_;
  }

 private:
  ModelInfo info_;
  FakeClock* clock_;
  absl::Duration latency_;
  mutable absl::Mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  Throw throw_ ABSL_GUARDED_BY(mu_) = Throw::kNothing;
  absl::Notification* gate_ ABSL_GUARDED_BY(mu_) = nullptr;
  mutable int entered_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::vector<int64_t> batch_sizes_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<std::vector<int64_t>> shapes_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<float> seen_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<std::thread::id> threads_ ABSL_GUARDED_BY(mu_);
};

}  // namespace modelserver::testing

#endif  // MODELSERVER_TESTS_TESTING_FAKE_MODEL_H_
