#ifndef MODELSERVER_SERVER_UTIL_WORKER_POOL_H_
#define MODELSERVER_SERVER_UTIL_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace modelserver {

// `threads` threads running posted tasks (CPU work that must not run on gRPC's
// callback threads: image decoding). The queue is bounded: Post refuses at once
// when `max_queued` tasks wait, so a burst is answered instead of piling up.
// Tasks must not throw. Shutdown runs what is queued, then joins.
// Thread-safe.
class WorkerPool {
 public:
  WorkerPool(int threads, size_t max_queued) : max_queued_(max_queued) {
    for (int i = 0; i < (threads > 0 ? threads : 1); ++i) {
      threads_.emplace_back([this] { Loop(); });
    }
  }
  ~WorkerPool() { Shutdown(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // False (and `task` dropped) when the queue is full or after Shutdown.
  bool Post(std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    if (stopping_ || tasks_.size() >= max_queued_) return false;
    tasks_.push_back(std::move(task));
    return true;
  }
  // Posts all or none (false: none was queued).
  bool PostAll(std::vector<std::function<void()>> tasks) {
    absl::MutexLock lock(&mu_);
    if (stopping_ || tasks_.size() + tasks.size() > max_queued_) return false;
    for (auto& t : tasks) tasks_.push_back(std::move(t));
    return true;
  }
  size_t max_queued() const { return max_queued_; }
  int threads() const { return static_cast<int>(threads_.size()); }

  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](WorkerPool* p)
                 ABSL_NO_THREAD_SAFETY_ANALYSIS { return p->stopping_ || !p->tasks_.empty(); },
            this));
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  const size_t max_queued_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_UTIL_WORKER_POOL_H_
