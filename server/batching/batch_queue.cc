#include "server/batching/batch_queue.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/util/logging.h"

namespace modelserver {

BatchQueue::BatchQueue(Options options, ModelSource source)
    : options_(std::move(options)), source_(std::move(source)) {
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

BatchQueue::~BatchQueue() { Shutdown(); }

absl::Status BatchQueue::Enqueue(BatchTask task) {
  const std::vector<int64_t>& shape = task.input.shape;
  if (shape.empty() || shape[0] < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batched input ", ShapeString(shape), " has no samples"));
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
  bool full = samples >= options_.max_batch_size;
  for (size_t i = 1; i < queue_.size() && !full; ++i) {
    if (queue_[i].signature != signature) continue;
    if (samples + queue_[i].samples > options_.max_batch_size) {
      full = true;  // the next one does not fit: this batch is as full as it gets
      break;
    }
    chosen.push_back(i);
    samples += queue_[i].samples;
    full = samples >= options_.max_batch_size;
  }
  const absl::Time due = queue_.front().arrival + options_.batch_timeout;
  if (!full && now < due) {
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
void AnswerDropped(std::vector<BatchTask*> tasks, absl::Time now) {
  for (BatchTask* t : tasks) {
    if (t->deadline <= now) {
      t->done(absl::DeadlineExceededError(
          "deadline exceeded while queued; the request was not computed"));
    } else {
      t->done(absl::CancelledError("client cancelled while queued; the request was not computed"));
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

void BatchQueue::WorkerLoop() {
  while (true) {
    std::vector<Pending> dropped;
    std::optional<Batch> batch;
    absl::Time now;
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        if (shutdown_) return;
        now = options_.clock->Now();
        absl::Time next_due;
        batch = TakeReadyLocked(now, &dropped, &next_due);
        if (batch || !dropped.empty()) break;
        if (next_due == absl::InfiniteFuture()) {
          cv_.Wait(&mu_);
        } else {
          cv_.WaitWithTimeout(&mu_, next_due - now);
        }
      }
    }
    std::vector<BatchTask*> d;
    for (Pending& p : dropped) d.push_back(&p.task);
    AnswerDropped(d, now);
    if (batch) RunBatch(*std::move(batch));
  }
}

std::vector<BatchQueue::Pending> BatchQueue::TakeServable(Batch* batch, int64_t serving_version) {
  // Requests pinned to a version other than the one serving now are NOT_FOUND.
  std::vector<Pending> items;
  for (Pending& p : batch->items) {
    if (p.task.version != 0 && p.task.version != serving_version) {
      p.task.done(absl::NotFoundError(
          absl::StrCat("model '", options_.name, "' version ", p.task.version,
                       " is not loaded; the serving version is ", serving_version)));
    } else {
      items.push_back(std::move(p));
    }
  }
  return items;
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

void BatchQueue::Answer(std::vector<Pending>* items, int64_t version, int64_t total,
                        absl::StatusOr<HostTensor> output) {
  if (output.ok() && (output->shape.empty() || output->shape[0] != total ||
                      output->data.size() % static_cast<size_t>(total) != 0)) {
    output = absl::InternalError(absl::StrCat("model output ", ShapeString(output->shape),
                                              " does not have the batch's ", total, " rows"));
  }
  if (!output.ok()) {
    for (Pending& p : *items) p.task.done(output.status());
    return;
  }
  const size_t row_bytes = output->data.size() / static_cast<size_t>(total);
  size_t offset = 0;
  for (Pending& p : *items) {
    BatchTask::Result r;
    r.version = version;
    r.output.dtype = output->dtype;
    r.output.shape = output->shape;
    r.output.shape[0] = p.samples;
    if (items->size() == 1) {
      r.output.data = std::move(output->data);
    } else {
      r.output.data = output->data.substr(offset, row_bytes * static_cast<size_t>(p.samples));
    }
    offset += row_bytes * static_cast<size_t>(p.samples);
    p.task.done(std::move(r));
  }
}

void BatchQueue::RunBatch(Batch batch) {
  const absl::Time start = options_.clock->Now();
  absl::StatusOr<ModelHandle> handle = source_();
  if (!handle.ok()) {
    for (Pending& p : batch.items) p.task.done(handle.status());
    return;
  }
  std::vector<Pending> items = TakeServable(&batch, handle->version);
  if (items.empty()) return;
  int64_t total = 0;
  for (const Pending& p : items) {
    total += p.samples;
    if (options_.on_request_wait) options_.on_request_wait(start - p.arrival);
  }
  HostTensor input = Concatenate(&items, total);
  const int running = ++running_;
  if (options_.before_batch) options_.before_batch(running);
  absl::StatusOr<HostTensor> output = handle->model->Forward(input);
  --running_;
  const absl::Time end = options_.clock->Now();
  LOG_DEBUG("model ", options_.name, " version ", handle->version, ": batch of ", total,
            " samples from ", items.size(), " requests, waited ",
            absl::FormatDuration(start - batch.oldest_arrival), ", ran ",
            absl::FormatDuration(end - start));
  if (options_.on_batch) options_.on_batch(total, start - batch.oldest_arrival, end - start);
  Answer(&items, handle->version, total, std::move(output));
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
    p.task.done(absl::UnavailableError("server is shutting down; the request was not computed"));
  }
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
}

}  // namespace modelserver
