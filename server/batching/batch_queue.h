#ifndef MODELSERVER_SERVER_BATCHING_BATCH_QUEUE_H_
#define MODELSERVER_SERVER_BATCHING_BATCH_QUEUE_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/host_tensor.h"
#include "server/batching/clock.h"
#include "server/model/model.h"

namespace modelserver {

struct ImagePreprocess;

// One request waiting to be batched. `input` is [n, ...] with n >= 1 samples.
// `done` is called exactly once, from a worker thread (or from Enqueue/Shutdown),
// never with the queue's lock held.
struct BatchTask {
  HostTensor input;
  absl::Time deadline = absl::InfiniteFuture();
  // Polled before the task is computed; true drops it with CANCELLED.
  std::function<bool()> is_cancelled;
  // The model version the request asked for (0 = whatever serves).
  int64_t version = 0;
  // Estimated peak memory of computing this request alone (0: not counted).
  int64_t forward_bytes = 0;
  struct Result {
    // Every output of the model (Model::ForwardAll), in its order, each [n, ...].
    std::vector<NamedTensor> outputs;
    int64_t version = 0;
  };
  std::function<void(absl::StatusOr<Result>)> done;
};

// The model a batch runs on, resolved when the batch is formed and held (by
// shared_ptr) for its whole forward pass: a hot swap between batches is safe.
struct ModelHandle {
  std::shared_ptr<const Model> model;
  int64_t version = 0;
  // The version's class labels (labels.txt, line i = class i); null without.
  std::shared_ptr<const std::vector<std::string>> labels;
  // How images become this version's input (server/image/preprocess.h); never
  // null for a model from the registry.
  std::shared_ptr<const ImagePreprocess> preprocess;
};
using ModelSource = std::function<absl::StatusOr<ModelHandle>()>;

// Dynamic batching for one model (Triton's dynamic batcher, TF Serving's
// BasicBatchScheduler): requests wait until `max_batch_size` samples of the same
// per-sample shape and dtype are queued, or until the oldest of them has waited
// `batch_timeout` (without `wait_when_idle`: or at once when no other batch is
// running); then one forward pass runs on the concatenated batch and the rows of
// each output go back to their requests in order.
//
// - A full queue (more than `max_queue_size` samples waiting) refuses at once with
//   UNAVAILABLE; nothing blocks.
// - A request larger than `max_batch_size` runs alone, unsplit.
// - A request whose deadline passed or whose client cancelled is answered
//   DEADLINE_EXCEEDED / CANCELLED when the batch is formed and is never computed.
// - Shutdown answers every queued request UNAVAILABLE (batches already running
//   finish) and joins the workers.
//
// Thread-safe. With `num_workers == 0` no thread is started and the owner drives
// the queue with RunReadyBatches() (tests, with a FakeClock: no sleeps).
//
//   BatchQueue::Options o;
//   o.max_batch_size = 8;
//   o.batch_timeout = absl::Microseconds(2000);
//   auto q = std::make_unique<BatchQueue>(o, [&] { return registry.Get("vgg16"); });
//   absl::Status s = q->Enqueue(std::move(task));  // UNAVAILABLE when full
class BatchQueue {
 public:
  // One batch's figures (per-model statistics: Triton's ModelStatistics).
  struct BatchStats {
    int64_t version = 0;
    int64_t samples = 0;
    bool ok = false;        // the forward pass gave outputs (its requests got them)
    absl::Duration input;   // concatenating the requests' inputs
    absl::Duration infer;   // the forward pass
    absl::Duration output;  // splitting the output and answering the requests
    std::vector<absl::Duration> queue_waits;  // per request, until the batch started
    std::vector<absl::Time> arrivals;         // per request
    absl::Time answered;                      // when the last request was answered
  };

  struct Options {
    std::string name;                                      // for logs
    int64_t max_batch_size = 8;                            // samples per forward pass (>= 1)
    absl::Duration batch_timeout = absl::Milliseconds(2);  // oldest request's wait
    // false: while no other batch of this queue runs, a free worker starts a
    // batch at once with what is queued (a lone request never waits for
    // company); batch_timeout applies only while other batches run, when more
    // requests are likely to arrive. true: every batch waits up to
    // batch_timeout to fill.
    bool wait_when_idle = true;
    int64_t max_queue_size = 256;  // samples waiting
    int num_workers = 1;           // forward passes run at once; 0 = caller drives
    // Memory one batch may take to compute (the sum of its requests'
    // forward_bytes); a request over it alone is INVALID_ARGUMENT. 0: no limit.
    int64_t max_batch_forward_bytes = 0;
    Clock* clock = Clock::Real();  // not owned
    // Called on the worker thread before each forward pass with the number of
    // batches running at that moment, this one included (to split CPU threads
    // between concurrent passes).
    std::function<void(int running)> before_batch;
    // Called once per request, when its batch starts, with how long it waited.
    std::function<void(absl::Duration wait)> on_request_wait;
    // Called with the batch size (samples), its queue wait of the oldest request
    // and its forward time, after each batch.
    std::function<void(int64_t samples, absl::Duration queue_wait, absl::Duration compute)>
        on_batch;
    // Called after each batch that ran (on the worker thread, no lock held).
    std::function<void(const BatchStats&)> on_batch_stats;
  };

  BatchQueue(Options options, ModelSource source);
  ~BatchQueue();  // Shutdown()
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Queues `task`. UNAVAILABLE (task.done is not called) when the queue is full or
  // shut down; INVALID_ARGUMENT for an input without samples, with more samples
  // than the whole queue holds, or needing more than max_batch_forward_bytes.
  // Never blocks.
  absl::Status Enqueue(BatchTask task);

  // Runs, on the calling thread, every batch that is ready at clock->Now(); returns
  // how many batches ran. For num_workers == 0.
  int RunReadyBatches();

  // Answers every queued request UNAVAILABLE, refuses new ones, waits for running
  // batches and joins the workers. Idempotent.
  void Shutdown();

  // Samples waiting.
  int64_t queued_samples() const;

  // Runs `fn` once on every worker thread, between batches (a worker finishes
  // the batch it is running first), and returns when each has: the first error,
  // or OK. With num_workers == 0 it runs on the calling thread. For state that
  // LibTorch keeps per thread: cuDNN's algorithm choices (its benchmark cache is
  // thread-local), so a GPU warm-up must run where the batches will. Blocks;
  // UNAVAILABLE after Shutdown.
  absl::Status RunOnEveryWorker(std::function<absl::Status()> fn);

 private:
  struct Pending {
    BatchTask task;
    absl::Time arrival;
    int64_t samples;
    std::string signature;  // dtype + per-sample shape
  };
  struct Batch {
    std::vector<Pending> items;
    absl::Time oldest_arrival;
  };

  // Removes expired/cancelled tasks into `dropped`, then, when a batch is due at
  // `now`, moves it out of the queue. Otherwise sets *next_due to when the oldest
  // request times out (InfiniteFuture when empty).
  std::optional<Batch> TakeReadyLocked(absl::Time now, std::vector<Pending>* dropped,
                                       absl::Time* next_due) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs one batch on the serving model and answers every request in it; an
  // exception (bad_alloc: RESOURCE_EXHAUSTED, others: INTERNAL) answers the
  // requests not answered yet. Never throws.
  void RunBatch(Batch batch);
  void RunBatchOrThrow(Batch* batch);
  // Keeps in the batch the requests the serving version may answer; the others
  // are answered NOT_FOUND here.
  void TakeServable(Batch* batch, int64_t serving_version);

  // The requests' inputs as one [total, ...] tensor (moved out of the requests).
  static HostTensor Concatenate(std::vector<Pending>* items, int64_t total);
  // Every output split by rows among the requests, or each request's error
  // (INTERNAL when an output's row count is not the batch's).
  static std::vector<absl::StatusOr<BatchTask::Result>> Split(
      const std::vector<Pending>& items, int64_t version, int64_t total,
      absl::StatusOr<std::vector<NamedTensor>> outputs);
  void WorkerLoop(size_t index);
  // A RunOnEveryWorker call: `left` workers still to run `fn`.
  struct Job {
    std::function<absl::Status()> fn;
    absl::Mutex mu;
    int left ABSL_GUARDED_BY(mu) = 0;
    absl::Status status ABSL_GUARDED_BY(mu);
  };
  static void RunJob(Job* job);

  const Options options_;
  const ModelSource source_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // signalled on Enqueue and Shutdown
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::deque<std::shared_ptr<Job>>> jobs_ ABSL_GUARDED_BY(mu_);  // per worker
  int64_t queued_samples_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> running_{0};        // batches in their forward pass
  int busy_ ABSL_GUARDED_BY(mu_) = 0;  // workers holding a batch (taken, not yet answered)
  std::vector<std::thread> workers_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_BATCHING_BATCH_QUEUE_H_
