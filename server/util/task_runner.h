#ifndef MODELSERVER_SERVER_UTIL_TASK_RUNNER_H_
#define MODELSERVER_SERVER_UTIL_TASK_RUNNER_H_

#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace modelserver {

// One background thread running posted tasks in order (slow admin work that must
// not block gRPC's callback threads). Shutdown runs what is queued, then joins.
// Thread-safe.
class TaskRunner {
 public:
  TaskRunner() : thread_([this] { Loop(); }) {}
  ~TaskRunner() { Shutdown(); }
  TaskRunner(const TaskRunner&) = delete;
  TaskRunner& operator=(const TaskRunner&) = delete;

  // False (and `task` dropped) after Shutdown.
  bool Post(std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    tasks_.push_back(std::move(task));
    return true;
  }

  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](TaskRunner* r)
                 ABSL_NO_THREAD_SAFETY_ANALYSIS { return r->stopping_ || !r->tasks_.empty(); },
            this));
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_UTIL_TASK_RUNNER_H_
