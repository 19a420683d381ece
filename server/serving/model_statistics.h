#ifndef MODELSERVER_SERVER_SERVING_MODEL_STATISTICS_H_
#define MODELSERVER_SERVER_SERVING_MODEL_STATISTICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/batching/batch_queue.h"

namespace modelserver {

// Per model and version, what each batch did, in the shape of Triton's
// ModelStatistics: samples and batches computed, the last inference's time,
// requests that succeeded or failed (count and total time from arrival to
// answer), their queue time, and the input / forward / output time of the
// batches, overall and per batch size. Fed by the batching queue
// (BatchQueue::Options::on_batch_stats); read by the Open Inference front door.
//
// Thread-safe.
class ModelStatistics {
 public:
  struct Duration {
    uint64_t count = 0;
    uint64_t ns = 0;
    void Add(uint64_t n, absl::Duration d);
  };
  struct BatchSize {
    Duration input, infer, output;
  };
  struct Version {
    int64_t version = 0;
    uint64_t last_inference_ms = 0;  // since the epoch; 0: none yet
    uint64_t inference_count = 0;    // samples
    uint64_t execution_count = 0;    // batches
    Duration success, fail, queue, compute_input, compute_infer, compute_output;
    std::map<int64_t, BatchSize> batch_sizes;
  };

  void Record(const std::string& model, const BatchQueue::BatchStats& batch)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The versions of `model` recorded so far, oldest first (empty when none).
  std::vector<Version> Get(const std::string& model) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, int64_t>, Version> versions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVING_MODEL_STATISTICS_H_
