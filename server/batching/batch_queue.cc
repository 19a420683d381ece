#include "server/batching/batch_queue.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/util/logging.h"

namespace modelserver {

BatchQueue::BatchQueue(Options options, ModelSource source)
    : options_(std::move(options)), source_(std::move(source)) {
  {
    absl::MutexLock lock(&mu_);
    jobs_.resize(static_cast<size_t>(std::max(0, options_.num_workers)));
  }
  for (int i = 0; i < options_.num_workers; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(static_cast<size_t>(i)); });
  }
}

void BatchQueue::RunJob(Job* job) {
  absl::Status s;
  try {
    s = job->fn();
  } catch (const std::exception& e) {
    s = absl::InternalError(absl::StrCat("a per-worker task threw: ", e.what()));
  }
  absl::MutexLock lock(&job->mu);
  if (job->status.ok()) job->status = s;
  --job->left;
}

absl::Status BatchQueue::RunOnEveryWorker(std::function<absl::Status()> fn) {
  auto job = std::make_shared<Job>();
  job->fn = std::move(fn);
  const int workers = static_cast<int>(workers_.size());
  {
    absl::MutexLock job_lock(&job->mu);
    job->left = std::max(1, workers);
  }
  if (workers == 0) {
    RunJob(job.get());
  } else {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("server is shutting down");
    for (auto& q : jobs_) q.push_back(job);
    cv_.SignalAll();
  }
  absl::MutexLock job_lock(&job->mu);
  job->mu.Await(absl::Condition(
      +[](Job* j) ABSL_NO_THREAD_SAFETY_ANALYSIS { return j->left <= 0; }, job.get()));
  return job->status;
}

BatchQueue::~BatchQueue() { Shutdown(); }

absl::Status BatchQueue::Enqueue(BatchTask task) {
  const std::vector<int64_t>& shape = task.input.shape;
  if (shape.empty() || shape[0] < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batched input ", ShapeString(shape), " has no samples"));
  }
  if (options_.max_batch_forward_bytes > 0 &&
      task.forward_bytes > options_.max_batch_forward_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input ", ShapeString(shape), " needs an estimated ", task.forward_bytes >> 20,
        " MiB to compute, over the ", options_.max_batch_forward_bytes >> 20,
        " MiB one forward pass may use (--memory_limit_bytes / (2 x --batch_workers)); send "
        "fewer or smaller samples"));
  }
  if (shape[0] > options_.max_queue_size) {
    // Would never fit, however long the client retries.
    return absl::InvalidArgumentError(
        absl::StrCat("request of ", shape[0], " samples is larger than model '", options_.name,
                     "' queue of ", options_.max_queue_size,
                     " samples (--max_queue_size); send at most that many per request"));
  }
  Pending p;
  p.samples = shape[0];
  p.signature = absl::StrCat(static_cast<int>(task.input.dtype), ":",
                             absl::StrJoin(shape.begin() + 1, shape.end(), ","));
  p.arrival = options_.clock->Now();
  p.task = std::move(task);
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::UnavailableError("server is shutting down");
  if (queued_samples_ + p.samples > options_.max_queue_size) {
    return absl::UnavailableError(absl::StrCat("model '", options_.name, "' queue is full (",
                                               queued_samples_, " samples waiting, limit ",
                                               options_.max_queue_size, "); retry later"));
  }
  queued_samples_ += p.samples;
  queue_.push_back(std::move(p));
  cv_.Signal();
  return absl::OkStatus();
}

int64_t BatchQueue::queued_samples() const {
  absl::MutexLock lock(&mu_);
  return queued_samples_;
}

std::optional<BatchQueue::Batch> BatchQueue::TakeReadyLocked(absl::Time now,
                                                             std::vector<Pending>* dropped,
                                                             absl::Time* next_due) {
  *next_due = absl::InfiniteFuture();
  // Expired and cancelled requests leave first; they are never computed.
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->task.deadline <= now || (it->task.is_cancelled && it->task.is_cancelled())) {
      queued_samples_ -= it->samples;
      dropped->push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  if (queue_.empty()) return std::nullopt;
  // The oldest request heads the batch; later ones of the same shape join in order.
  const std::string& signature = queue_.front().signature;
  std::vector<size_t> chosen = {0};
  int64_t samples = queue_.front().samples;
  int64_t forward_bytes = queue_.front().task.forward_bytes;
  const int64_t byte_limit = options_.max_batch_forward_bytes;
  bool full = samples >= options_.max_batch_size;
  for (size_t i = 1; i < queue_.size() && !full; ++i) {
    if (queue_[i].signature != signature) continue;
    if (samples + queue_[i].samples > options_.max_batch_size ||
        (byte_limit > 0 && forward_bytes + queue_[i].task.forward_bytes > byte_limit)) {
      full = true;  // the next one does not fit: this batch is as full as it gets
      break;
    }
    chosen.push_back(i);
    samples += queue_[i].samples;
    forward_bytes += queue_[i].task.forward_bytes;
    full = samples >= options_.max_batch_size;
  }
  const absl::Time due = queue_.front().arrival + options_.batch_timeout;
  if (!full && now < due && (options_.wait_when_idle || busy_ > 0)) {
    *next_due = due;
    return std::nullopt;
  }
  Batch batch;
  batch.oldest_arrival = queue_.front().arrival;
  for (auto i = chosen.rbegin(); i != chosen.rend(); ++i) {
    queued_samples_ -= queue_[*i].samples;
    batch.items.push_back(std::move(queue_[*i]));
    queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(*i));
  }
  std::reverse(batch.items.begin(), batch.items.end());
  return batch;
}

namespace {
// Calls task->done once (then clears it); if done throws, calls it again with the
// error. Never throws.
void SafeDone(BatchTask* task, absl::StatusOr<BatchTask::Result> result) {
  if (!task->done) return;
  try {
    task->done(std::move(result));
  } catch (const std::bad_alloc&) {
    // done threw before answering (building the response ran out of memory).
    try {
      task->done(absl::ResourceExhaustedError("out of memory while building the response"));
    } catch (...) {
    }
  } catch (const std::exception& e) {
    try {
      task->done(absl::InternalError(absl::StrCat("answering the request failed: ", e.what())));
    } catch (...) {
    }
  }
  task->done = nullptr;  // exactly once
}

void AnswerDropped(std::vector<BatchTask*> tasks, absl::Time now) {
  for (BatchTask* t : tasks) {
    if (t->deadline <= now) {
      SafeDone(t, absl::DeadlineExceededError(
                      "deadline exceeded while queued; the request was not computed"));
    } else {
      SafeDone(t,
               absl::CancelledError("client cancelled while queued; the request was not computed"));
    }
  }
}
}  // namespace

int BatchQueue::RunReadyBatches() {
  int ran = 0;
  while (true) {
    std::vector<Pending> dropped;
    std::optional<Batch> batch;
    const absl::Time now = options_.clock->Now();
    {
      absl::MutexLock lock(&mu_);
      absl::Time next_due;
      batch = TakeReadyLocked(now, &dropped, &next_due);
    }
    std::vector<BatchTask*> d;
    for (Pending& p : dropped) d.push_back(&p.task);
    AnswerDropped(d, now);
    if (!batch) return ran;
    RunBatch(*std::move(batch));
    ++ran;
  }
}

void BatchQueue::WorkerLoop(size_t index) {
  while (true) {
    std::vector<Pending> dropped;
    std::optional<Batch> batch;
    std::shared_ptr<Job> job;
    absl::Time now;
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        if (shutdown_) {
          // Jobs still queued for this worker are answered, not left waiting.
          for (auto& j : jobs_[index]) {
            absl::MutexLock job_lock(&j->mu);
            if (j->status.ok()) j->status = absl::UnavailableError("server is shutting down");
            --j->left;
          }
          jobs_[index].clear();
          return;
        }
        if (!jobs_[index].empty()) {
          job = std::move(jobs_[index].front());
          jobs_[index].pop_front();
          break;
        }
        now = options_.clock->Now();
        absl::Time next_due;
        batch = TakeReadyLocked(now, &dropped, &next_due);
        if (batch) ++busy_;
        if (batch || !dropped.empty()) break;
        if (next_due == absl::InfiniteFuture()) {
          cv_.Wait(&mu_);
        } else {
          cv_.WaitWithTimeout(&mu_, next_due - now);
        }
      }
    }
    if (job != nullptr) {
      RunJob(job.get());
      continue;
    }
    std::vector<BatchTask*> d;
    for (Pending& p : dropped) d.push_back(&p.task);
    AnswerDropped(d, now);
    if (batch) {
      RunBatch(*std::move(batch));
      absl::MutexLock lock(&mu_);
      --busy_;
      cv_.SignalAll();  // a worker waiting for company may now start at once
    }
  }
}

void BatchQueue::TakeServable(Batch* batch, int64_t serving_version) {
  // Requests pinned to a version other than the one serving now are NOT_FOUND.
  std::vector<Pending> items;
  for (Pending& p : batch->items) {
    if (p.task.version != 0 && p.task.version != serving_version) {
      SafeDone(&p.task, absl::NotFoundError(absl::StrCat(
                            "model '", options_.name, "' version ", p.task.version,
                            " is not loaded; the serving version is ", serving_version)));
    } else {
      items.push_back(std::move(p));
    }
  }
  batch->items = std::move(items);
}

HostTensor BatchQueue::Concatenate(std::vector<Pending>* items, int64_t total) {
  if (items->size() == 1) return std::move((*items)[0].task.input);
  HostTensor input;
  input.dtype = (*items)[0].task.input.dtype;
  input.shape = (*items)[0].task.input.shape;
  input.shape[0] = total;
  size_t bytes = 0;
  for (const Pending& p : *items) bytes += p.task.input.data.size();
  input.data.reserve(bytes);
  for (Pending& p : *items) {
    input.data.append(p.task.input.data);
    std::string().swap(p.task.input.data);
  }
  return input;
}

std::vector<absl::StatusOr<BatchTask::Result>> BatchQueue::Split(
    const std::vector<Pending>& items, int64_t version, int64_t total,
    absl::StatusOr<std::vector<NamedTensor>> outputs) {
  const size_t requests = items.size();
  if (outputs.ok() && outputs->empty()) outputs = absl::InternalError("the model gave no output");
  if (outputs.ok()) {
    for (const NamedTensor& o : *outputs) {
      const HostTensor& t = o.tensor;
      if (t.shape.empty() || t.shape[0] != total ||
          t.data.size() % static_cast<size_t>(total) != 0) {
        outputs = absl::InternalError(absl::StrCat(
            "model output", outputs->size() > 1 ? absl::StrCat(" '", o.name, "' ") : " ",
            ShapeString(t.shape), " does not have the batch's ", total, " rows"));
        break;
      }
    }
  }
  std::vector<absl::StatusOr<BatchTask::Result>> out;
  if (!outputs.ok()) {
    for (size_t i = 0; i < requests; ++i) out.push_back(outputs.status());
    return out;
  }
  std::vector<BatchTask::Result> results(requests);
  for (BatchTask::Result& r : results) r.version = version;
  for (NamedTensor& o : *outputs) {
    const size_t row_bytes = o.tensor.data.size() / static_cast<size_t>(total);
    size_t offset = 0;
    for (size_t i = 0; i < requests; ++i) {
      NamedTensor part;
      part.name = o.name;
      part.tensor.dtype = o.tensor.dtype;
      part.tensor.shape = o.tensor.shape;
      part.tensor.shape[0] = items[i].samples;
      const size_t n = row_bytes * static_cast<size_t>(items[i].samples);
      if (requests == 1) {
        part.tensor.data = std::move(o.tensor.data);
      } else {
        part.tensor.data = o.tensor.data.substr(offset, n);
      }
      offset += n;
      results[i].outputs.push_back(std::move(part));
    }
  }
  for (BatchTask::Result& r : results) out.push_back(std::move(r));
  return out;
}

void BatchQueue::RunBatch(Batch batch) {
  // No exception leaves a worker: one thrown by the model (or by memory
  // allocation) answers every request of the batch that is still unanswered.
  try {
    RunBatchOrThrow(&batch);
  } catch (const std::bad_alloc&) {
    for (Pending& p : batch.items) {
      SafeDone(&p.task, absl::ResourceExhaustedError(
                            "out of memory while running the batch; retry with a smaller input"));
    }
  } catch (const std::exception& e) {
    for (Pending& p : batch.items) {
      SafeDone(&p.task, absl::InternalError(absl::StrCat("the batch failed: ", e.what())));
    }
  }
}

void BatchQueue::RunBatchOrThrow(Batch* batch_ptr) {
  Batch& batch = *batch_ptr;
  const absl::Time start = options_.clock->Now();
  absl::StatusOr<ModelHandle> handle = source_();
  if (!handle.ok()) {
    for (Pending& p : batch.items) SafeDone(&p.task, handle.status());
    return;
  }
  TakeServable(&batch, handle->version);
  std::vector<Pending>& items = batch.items;
  if (items.empty()) return;
  int64_t total = 0;
  for (const Pending& p : items) {
    total += p.samples;
    if (options_.on_request_wait) options_.on_request_wait(start - p.arrival);
  }
  BatchStats stats;
  if (options_.on_batch_stats) {
    stats.version = handle->version;
    stats.samples = total;
    for (const Pending& p : items) {
      stats.queue_waits.push_back(start - p.arrival);
      stats.arrivals.push_back(p.arrival);
    }
  }
  HostTensor input = Concatenate(&items, total);
  const absl::Time concatenated = options_.clock->Now();
  const int running = ++running_;
  if (options_.before_batch) options_.before_batch(running);
  absl::StatusOr<std::vector<NamedTensor>> output = handle->model->ForwardAll(input);
  --running_;
  const absl::Time end = options_.clock->Now();
  LOG_DEBUG("model ", options_.name, " version ", handle->version, ": batch of ", total,
            " samples from ", items.size(), " requests, waited ",
            absl::FormatDuration(start - batch.oldest_arrival), ", ran ",
            absl::FormatDuration(end - start));
  if (options_.on_batch) options_.on_batch(total, start - batch.oldest_arrival, end - start);
  stats.ok = output.ok();
  std::vector<absl::StatusOr<BatchTask::Result>> results =
      Split(items, handle->version, total, std::move(output));
  // Recorded before the requests are answered: a client that reads the
  // statistics after its answer finds its batch in them.
  if (options_.on_batch_stats) {
    stats.answered = options_.clock->Now();
    stats.input = concatenated - start;
    stats.infer = end - concatenated;
    stats.output = stats.answered - end;
    options_.on_batch_stats(stats);
  }
  for (size_t i = 0; i < items.size(); ++i) SafeDone(&items[i].task, std::move(results[i]));
}

void BatchQueue::Shutdown() {
  std::deque<Pending> pending;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    pending.swap(queue_);
    queued_samples_ = 0;
    cv_.SignalAll();
  }
  for (Pending& p : pending) {
    SafeDone(&p.task,
             absl::UnavailableError("server is shutting down; the request was not computed"));
  }
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
}

}  // namespace modelserver
