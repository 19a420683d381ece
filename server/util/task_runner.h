#ifndef MODELSERVER_SERVER_UTIL_TASK_RUNNER_H_
#define MODELSERVER_SERVER_UTIL_TASK_RUNNER_H_

#include <cstddef>
#include <limits>

#include "server/util/worker_pool.h"

namespace modelserver {

// One background thread running posted tasks in order (slow admin work that must
// not block gRPC's callback threads); the queue is unbounded. Shutdown runs what
// is queued, then joins. Thread-safe.
class TaskRunner : public WorkerPool {
 public:
  TaskRunner() : WorkerPool(1, std::numeric_limits<size_t>::max()) {}
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_UTIL_TASK_RUNNER_H_
