#include "server/batching/batch_queue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "absl/synchronization/notification.h"
#include "tests/testing/fake_model.h"

namespace modelserver {
namespace {

using ::testing::ElementsAre;
using testing::FakeModel;
using ::testing::HasSubstr;

// Outcome of one task.
struct Outcome {
  bool done = false;
  absl::Status status;
  std::vector<float> values;  // output column
  int64_t version = 0;
};

class BatchQueueTest : public ::testing::Test {
 protected:
  std::unique_ptr<BatchQueue> MakeQueue(int64_t max_batch, absl::Duration timeout,
                                        int64_t max_queue = 100) {
    BatchQueue::Options o;
    o.name = "fake";
    o.max_batch_size = max_batch;
    o.batch_timeout = timeout;
    o.max_queue_size = max_queue;
    o.num_workers = 0;
    o.clock = &clock_;
    o.on_batch = [this](int64_t samples, absl::Duration wait, absl::Duration) {
      waits_.push_back(wait);
      (void)samples;
    };
    return std::make_unique<BatchQueue>(o, [this]() -> absl::StatusOr<ModelHandle> {
      if (model_ == nullptr) return absl::FailedPreconditionError("no model");
      return ModelHandle{model_, version_, nullptr, nullptr};
    });
  }

  // A task of `values.size()` samples of per-sample shape `sample`, whose first
  // element is values[i].
  BatchTask Task(std::vector<float> values, Outcome* out, std::vector<int64_t> sample = {2}) {
    BatchTask t;
    t.input.dtype = DType::kFloat32;
    // (a fresh vector, not assign(): GCC 12 at -O3 false-positives -Wnonnull on it)
    t.input.shape = std::vector<int64_t>(1, static_cast<int64_t>(values.size()));
    t.input.shape.insert(t.input.shape.end(), sample.begin(), sample.end());
    int64_t per = 1;
    for (int64_t d : sample) per *= d;
    std::vector<float> data(values.size() * static_cast<size_t>(per), 0.f);
    for (size_t i = 0; i < values.size(); ++i) data[i * static_cast<size_t>(per)] = values[i];
    t.input.data.assign(reinterpret_cast<const char*>(data.data()), data.size() * 4);
    t.done = [out](absl::StatusOr<BatchTask::Result> r) {
      EXPECT_FALSE(out->done) << "done called twice";
      out->done = true;
      out->status = r.status();
      if (r.ok()) {
        out->version = r->version;
        const auto* f = reinterpret_cast<const float*>(r->outputs.at(0).tensor.data.data());
        out->values.assign(f, f + r->outputs.at(0).tensor.data.size() / 4);
      }
    };
    return t;
  }

  testing::FakeModel* model() { return static_cast<FakeModel*>(const_cast<Model*>(model_.get())); }

  FakeClock clock_;
  std::shared_ptr<const Model> model_ = std::make_shared<FakeModel>();
  int64_t version_ = 1;
  std::vector<absl::Duration> waits_;
};

TEST_F(BatchQueueTest, MaxBatchSizeIsRespected) {
  auto q = MakeQueue(4, absl::Milliseconds(10));
  Outcome out[10];
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(q->Enqueue(Task({float(i)}, &out[i])).ok());
  EXPECT_EQ(q->RunReadyBatches(), 2);  // two full batches now; 2 samples wait
  EXPECT_THAT(model()->batch_sizes(), ElementsAre(4, 4));
  EXPECT_FALSE(out[8].done);
  EXPECT_EQ(q->queued_samples(), 2);
  clock_.Advance(absl::Milliseconds(10));
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_THAT(model()->batch_sizes(), ElementsAre(4, 4, 2));
  for (const Outcome& o : out) EXPECT_TRUE(o.done && o.status.ok());
}

TEST_F(BatchQueueTest, TimeoutCountsFromTheOldestArrival) {
  auto q = MakeQueue(8, absl::Milliseconds(10));
  Outcome a, b;
  ASSERT_TRUE(q->Enqueue(Task({1}, &a)).ok());
  clock_.Advance(absl::Milliseconds(6));
  ASSERT_TRUE(q->Enqueue(Task({2}, &b)).ok());  // does not restart the wait
  EXPECT_EQ(q->RunReadyBatches(), 0);
  clock_.Advance(absl::Milliseconds(3));
  EXPECT_EQ(q->RunReadyBatches(), 0);  // 9 ms
  EXPECT_FALSE(a.done);
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(q->RunReadyBatches(), 1);  // 10 ms after the oldest
  EXPECT_THAT(model()->batch_sizes(), ElementsAre(2));
  ASSERT_EQ(waits_.size(), 1u);
  EXPECT_EQ(waits_[0], absl::Milliseconds(10));
  EXPECT_TRUE(a.done && b.done);
}

TEST_F(BatchQueueTest, ZeroTimeoutRunsAtOnce) {
  auto q = MakeQueue(8, absl::ZeroDuration());
  Outcome a;
  ASSERT_TRUE(q->Enqueue(Task({1}, &a)).ok());
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_TRUE(a.done);
}

TEST_F(BatchQueueTest, OutputsGoBackToTheirRequestsInOrder) {
  auto q = MakeQueue(16, absl::Milliseconds(1));
  Outcome a, b, c;
  ASSERT_TRUE(q->Enqueue(Task({1}, &a)).ok());
  ASSERT_TRUE(q->Enqueue(Task({2, 3, 4}, &b)).ok());
  ASSERT_TRUE(q->Enqueue(Task({5, 6}, &c)).ok());
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_THAT(model()->batch_sizes(), ElementsAre(6));
  EXPECT_THAT(a.values, ElementsAre(2));
  EXPECT_THAT(b.values, ElementsAre(4, 6, 8));
  EXPECT_THAT(c.values, ElementsAre(10, 12));
  EXPECT_EQ(b.version, 1);
}

// A model with two outputs: FakeModel's ("first", [N, 1], 2 x) and "second"
// ([N, 2]: 10 x and 100 x the sample's first element), or, with `unbatched`, a
// second output without the batch's rows.
class TwoOutputModel : public testing::FakeModel {
 public:
  explicit TwoOutputModel(bool unbatched) : unbatched_(unbatched) {}
  absl::StatusOr<std::vector<NamedTensor>> ForwardAll(const HostTensor& batch) const override {
    absl::StatusOr<HostTensor> first = Forward(batch);
    if (!first.ok()) return first.status();
    const int64_t n = batch.shape[0];
    const size_t per = batch.data.size() / static_cast<size_t>(n);
    HostTensor second;
    second.dtype = DType::kFloat32;
    second.shape = unbatched_ ? std::vector<int64_t>{2} : std::vector<int64_t>{n, 2};
    std::vector<float> v;
    for (int64_t i = 0; i < (unbatched_ ? 1 : n); ++i) {
      float x;
      std::memcpy(&x, batch.data.data() + static_cast<size_t>(i) * per, 4);
      v.push_back(10 * x);
      v.push_back(100 * x);
    }
    second.data.assign(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    return std::vector<NamedTensor>{{"first", *std::move(first)}, {"second", std::move(second)}};
  }

 private:
  bool unbatched_;
};

std::vector<float> Floats(const HostTensor& t) {
  std::vector<float> v(t.data.size() / 4);
  std::memcpy(v.data(), t.data.data(), v.size() * 4);
  return v;
}

TEST_F(BatchQueueTest, EveryOutputIsSplitAmongTheRequestsByName) {
  model_ = std::make_shared<TwoOutputModel>(/*unbatched=*/false);
  auto q = MakeQueue(16, absl::Milliseconds(1));
  std::vector<absl::StatusOr<BatchTask::Result>> got(2, absl::UnknownError("not answered"));
  for (int i = 0; i < 2; ++i) {
    Outcome unused;
    BatchTask t = Task(i == 0 ? std::vector<float>{1} : std::vector<float>{2, 3}, &unused);
    t.done = [&got, i](absl::StatusOr<BatchTask::Result> r) { got[i] = std::move(r); };
    ASSERT_TRUE(q->Enqueue(std::move(t)).ok());
  }
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_THAT(model()->batch_sizes(), ElementsAre(3));  // one forward pass for both
  ASSERT_TRUE(got[0].ok()) << got[0].status();
  ASSERT_TRUE(got[1].ok()) << got[1].status();
  ASSERT_EQ(got[0]->outputs.size(), 2u);
  ASSERT_EQ(got[1]->outputs.size(), 2u);
  EXPECT_EQ(got[0]->outputs[0].name, "first");
  EXPECT_EQ(got[1]->outputs[1].name, "second");
  EXPECT_EQ(got[0]->outputs[1].tensor.shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(got[1]->outputs[1].tensor.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_THAT(Floats(got[0]->outputs[0].tensor), ElementsAre(2));
  EXPECT_THAT(Floats(got[0]->outputs[1].tensor), ElementsAre(10, 100));
  EXPECT_THAT(Floats(got[1]->outputs[0].tensor), ElementsAre(4, 6));
  EXPECT_THAT(Floats(got[1]->outputs[1].tensor), ElementsAre(20, 200, 30, 300));
}

TEST_F(BatchQueueTest, AnOutputWithoutTheBatchRowsIsAnErrorNamingIt) {
  model_ = std::make_shared<TwoOutputModel>(/*unbatched=*/true);
  auto q = MakeQueue(16, absl::Milliseconds(1));
  Outcome a, b;
  ASSERT_TRUE(q->Enqueue(Task({1}, &a)).ok());
  ASSERT_TRUE(q->Enqueue(Task({2, 3}, &b)).ok());
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(q->RunReadyBatches(), 1);
  for (const Outcome* o : {&a, &b}) {
    EXPECT_TRUE(o->done);
    EXPECT_EQ(o->status.code(), absl::StatusCode::kInternal) << o->status;
    EXPECT_NE(o->status.message().find("output 'second' [2] does not have the batch's 3 rows"),
              std::string::npos)
        << o->status;
  }
}

TEST_F(BatchQueueTest, QueueFullIsUnavailableAtOnce) {
  auto q = MakeQueue(8, absl::Milliseconds(5), /*max_queue=*/4);
  Outcome a, b, c;
  ASSERT_TRUE(q->Enqueue(Task({1, 2, 3}, &a)).ok());
  absl::Status s = q->Enqueue(Task({4, 5}, &b));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("queue is full (3 samples waiting, limit 4)"));
  EXPECT_FALSE(b.done);  // refused requests are answered by the caller
  EXPECT_TRUE(q->Enqueue(Task({6}, &c)).ok());
}

TEST_F(BatchQueueTest, ExpiredAndCancelledRequestsAreNeverComputed) {
  auto q = MakeQueue(8, absl::Milliseconds(10));
  Outcome expired, cancelled, kept;
  BatchTask e = Task({1}, &expired);
  e.deadline = clock_.Now() + absl::Milliseconds(5);
  ASSERT_TRUE(q->Enqueue(std::move(e)).ok());
  bool cancel = false;
  BatchTask c = Task({2}, &cancelled);
  c.is_cancelled = [&cancel] { return cancel; };
  ASSERT_TRUE(q->Enqueue(std::move(c)).ok());
  ASSERT_TRUE(q->Enqueue(Task({3}, &kept)).ok());
  clock_.Advance(absl::Milliseconds(6));
  cancel = true;
  EXPECT_EQ(q->RunReadyBatches(), 0);  // kept still waits for its batch
  EXPECT_EQ(expired.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(std::string(expired.status.message()), HasSubstr("not computed"));
  clock_.Advance(absl::Milliseconds(10));
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_TRUE(kept.status.ok());
  EXPECT_THAT(model()->seen(), ElementsAre(3));  // 1 and 2 never reached the model
}

TEST_F(BatchQueueTest, MixedShapesNeverShareABatch) {
  auto q = MakeQueue(8, absl::Milliseconds(1));
  Outcome a, b, c, d;
  ASSERT_TRUE(q->Enqueue(Task({1}, &a, {3, 4, 4})).ok());
  ASSERT_TRUE(q->Enqueue(Task({2}, &b, {3, 8, 8})).ok());
  ASSERT_TRUE(q->Enqueue(Task({3}, &c, {3, 4, 4})).ok());
  BatchTask other_dtype = Task({4}, &d, {3, 4, 4});
  other_dtype.input.dtype = DType::kInt32;
  ASSERT_TRUE(q->Enqueue(std::move(other_dtype)).ok());
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(q->RunReadyBatches(), 3);
  const auto shapes = model()->shapes();
  ASSERT_EQ(shapes.size(), 3u);
  EXPECT_EQ(shapes[0], (std::vector<int64_t>{2, 3, 4, 4}));  // a and c
  EXPECT_EQ(shapes[1], (std::vector<int64_t>{1, 3, 8, 8}));
  EXPECT_EQ(shapes[2], (std::vector<int64_t>{1, 3, 4, 4}));  // the int32 one alone
  EXPECT_THAT(c.values, ElementsAre(6));
}

TEST_F(BatchQueueTest, LargeRequestRunsAloneUnsplit) {
  auto q = MakeQueue(4, absl::Milliseconds(10));
  Outcome small, big;
  ASSERT_TRUE(q->Enqueue(Task({1}, &small)).ok());
  ASSERT_TRUE(q->Enqueue(Task({1, 2, 3, 4, 5, 6}, &big)).ok());
  clock_.Advance(absl::Milliseconds(10));
  EXPECT_EQ(q->RunReadyBatches(), 2);
  EXPECT_THAT(model()->batch_sizes(), ElementsAre(1, 6));
  EXPECT_EQ(big.values.size(), 6u);
}

TEST_F(BatchQueueTest, EachBatchHoldsTheModelItRanOn) {
  auto q = MakeQueue(1, absl::ZeroDuration());
  std::weak_ptr<const Model> first = model_;
  Outcome a, b;
  ASSERT_TRUE(q->Enqueue(Task({1}, &a)).ok());
  ASSERT_TRUE(q->Enqueue(Task({2}, &b)).ok());
  EXPECT_EQ(q->RunReadyBatches(), 2);
  // Swap versions between batches: the next batch uses the new one, the old is freed.
  model_ = std::make_shared<FakeModel>();
  version_ = 2;
  EXPECT_TRUE(first.expired());
  Outcome c;
  ASSERT_TRUE(q->Enqueue(Task({3}, &c)).ok());
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_EQ(a.version, 1);
  EXPECT_EQ(c.version, 2);
  EXPECT_THAT(model()->seen(), ElementsAre(3));
}

TEST_F(BatchQueueTest, PinnedVersionMismatchAndModelErrors) {
  auto q = MakeQueue(8, absl::ZeroDuration());
  Outcome pinned, failing;
  BatchTask t = Task({1}, &pinned);
  t.version = 7;
  ASSERT_TRUE(q->Enqueue(std::move(t)).ok());
  q->RunReadyBatches();
  EXPECT_EQ(pinned.status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(model()->batch_sizes().empty());  // never computed
  model()->set_error(absl::ResourceExhaustedError("out of memory"));
  ASSERT_TRUE(q->Enqueue(Task({1}, &failing)).ok());
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_EQ(failing.status.code(), absl::StatusCode::kResourceExhausted);
  model_ = nullptr;
  Outcome none;
  ASSERT_TRUE(q->Enqueue(Task({1}, &none)).ok());
  q->RunReadyBatches();
  EXPECT_EQ(none.status.code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(BatchQueueTest, ShutdownAnswersEverything) {
  auto q = MakeQueue(8, absl::Seconds(100));
  Outcome out[5];
  for (auto& o : out) ASSERT_TRUE(q->Enqueue(Task({1}, &o)).ok());
  q->Shutdown();
  for (const Outcome& o : out) {
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.status.code(), absl::StatusCode::kUnavailable);
  }
  Outcome late;
  EXPECT_EQ(q->Enqueue(Task({1}, &late)).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(late.done);
  EXPECT_TRUE(model()->batch_sizes().empty());
}

TEST_F(BatchQueueTest, RejectsInputsWithoutSamples) {
  auto q = MakeQueue(8, absl::ZeroDuration());
  Outcome o;
  BatchTask t = Task({}, &o);
  EXPECT_EQ(q->Enqueue(std::move(t)).code(), absl::StatusCode::kInvalidArgument);
}

// The worker threads with the real clock: every request from several threads is
// answered (waits on notifications, not sleeps).
TEST(BatchQueueThreadsTest, WorkersAnswerConcurrentRequests) {
  auto model = std::make_shared<FakeModel>();
  BatchQueue::Options o;
  o.max_batch_size = 4;
  o.batch_timeout = absl::Milliseconds(1);
  o.num_workers = 2;
  BatchQueue q(o, [model]() -> absl::StatusOr<ModelHandle> {
    return ModelHandle{model, 3, nullptr, nullptr};
  });
  constexpr int kThreads = 4, kPer = 25;
  std::vector<absl::Notification> done(kThreads * kPer);
  std::vector<float> got(kThreads * kPer, -1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        const int id = t * kPer + i;
        BatchTask task;
        task.input.dtype = DType::kFloat32;
        task.input.shape = std::vector<int64_t>(2, 1);
        const float v = static_cast<float>(id);
        task.input.data.assign(reinterpret_cast<const char*>(&v), 4);
        task.done = [&, id](absl::StatusOr<BatchTask::Result> r) {
          if (r.ok()) std::memcpy(&got[id], r->outputs.at(0).tensor.data.data(), 4);
          done[id].Notify();
        };
        while (!q.Enqueue(std::move(task)).ok()) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int id = 0; id < kThreads * kPer; ++id) {
    ASSERT_TRUE(done[id].WaitForNotificationWithTimeout(absl::Seconds(30)));
    EXPECT_EQ(got[id], 2.f * id);
  }
  q.Shutdown();
}

// A one-sample float task whose answer notifies `done`.
BatchTask Single(float v, absl::Notification* done, absl::Status* status) {
  BatchTask task;
  task.input.dtype = DType::kFloat32;
  task.input.shape = std::vector<int64_t>(2, 1);
  task.input.data.assign(reinterpret_cast<const char*>(&v), 4);
  task.done = [done, status](absl::StatusOr<BatchTask::Result> r) {
    *status = r.status();
    done->Notify();
  };
  return task;
}

// Without wait_when_idle, a free worker with nothing else running starts a lone
// request at once: it is answered although the (frozen) clock never reaches the
// batch timeout. With it, the same request waits for company.
TEST(BatchQueueThreadsTest, AnIdleWorkerStartsALoneRequestAtOnce) {
  for (bool wait : {false, true}) {
    FakeClock clock;
    auto model = std::make_shared<FakeModel>();
    BatchQueue::Options o;
    o.max_batch_size = 8;
    o.batch_timeout = absl::Hours(1);
    o.num_workers = 2;
    o.wait_when_idle = wait;
    o.clock = &clock;
    BatchQueue q(o, [model]() -> absl::StatusOr<ModelHandle> {
      return ModelHandle{model, 1, nullptr, nullptr};
    });
    absl::Notification done;
    absl::Status status;
    ASSERT_TRUE(q.Enqueue(Single(1, &done, &status)).ok());
    if (!wait) {
      ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
      EXPECT_TRUE(status.ok()) << status;
      EXPECT_THAT(model->batch_sizes(), ElementsAre(1));
    } else {
      EXPECT_FALSE(done.WaitForNotificationWithTimeout(absl::Milliseconds(300)));
      q.Shutdown();
      ASSERT_TRUE(done.HasBeenNotified());
      EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
      EXPECT_TRUE(model->batch_sizes().empty());
    }
  }
}

// While another batch runs, a free worker waits for company: the requests that
// queue meanwhile fill a batch of max_batch_size, which starts as soon as it is
// full (the frozen clock never times it out).
TEST(BatchQueueThreadsTest, WhileABatchRunsTheNextOneFills) {
  FakeClock clock;
  auto model = std::make_shared<FakeModel>();
  absl::Notification gate;
  model->set_gate(&gate);
  BatchQueue::Options o;
  o.max_batch_size = 4;
  o.batch_timeout = absl::Hours(1);
  o.num_workers = 2;
  o.wait_when_idle = false;
  o.clock = &clock;
  BatchQueue q(o, [model]() -> absl::StatusOr<ModelHandle> {
    return ModelHandle{model, 1, nullptr, nullptr};
  });
  std::vector<absl::Notification> done(5);
  std::vector<absl::Status> status(5);
  ASSERT_TRUE(q.Enqueue(Single(0, &done[0], &status[0])).ok());
  for (int i = 0; i < 3000 && model->entered() < 1; ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(model->entered(), 1);  // the first batch runs (held at the gate)
  for (int i = 1; i < 5; ++i) ASSERT_TRUE(q.Enqueue(Single(i, &done[i], &status[i])).ok());
  for (int i = 0; i < 3000 && model->entered() < 2; ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(model->entered(), 2);
  gate.Notify();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(done[i].WaitForNotificationWithTimeout(absl::Seconds(30)));
    EXPECT_TRUE(status[i].ok()) << status[i];
  }
  // (Both passes were held at the gate: they record in either order.)
  EXPECT_THAT(model->batch_sizes(), ::testing::UnorderedElementsAre(1, 4));
}

// A task for every worker runs once on each worker's own thread (never the
// caller's); the first error comes back; after Shutdown it is refused.
TEST(BatchQueueThreadsTest, RunOnEveryWorkerRunsOnEachWorkerThread) {
  auto model = std::make_shared<FakeModel>();
  BatchQueue::Options o;
  o.num_workers = 3;
  BatchQueue q(o, [model]() -> absl::StatusOr<ModelHandle> {
    return ModelHandle{model, 1, nullptr, nullptr};
  });
  absl::Mutex mu;
  std::vector<std::thread::id> ran;
  ASSERT_TRUE(q.RunOnEveryWorker([&] {
                 absl::MutexLock lock(&mu);
                 ran.push_back(std::this_thread::get_id());
                 return absl::OkStatus();
               }).ok());
  std::set<std::thread::id> distinct(ran.begin(), ran.end());
  EXPECT_EQ(ran.size(), 3u);
  EXPECT_EQ(distinct.size(), 3u);
  EXPECT_EQ(distinct.count(std::this_thread::get_id()), 0u);
  std::atomic<int> calls{0};
  absl::Status s = q.RunOnEveryWorker(
      [&] { return ++calls == 2 ? absl::InternalError("second") : absl::OkStatus(); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(calls.load(), 3);
  q.Shutdown();
  EXPECT_EQ(q.RunOnEveryWorker([] { return absl::OkStatus(); }).code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(BatchQueueTest, ExceptionsFromTheModelAnswerTheWholeBatch) {
  auto q = MakeQueue(2, absl::Milliseconds(1));
  for (auto [kind, code] :
       {std::pair{FakeModel::Throw::kRuntimeError, absl::StatusCode::kInternal},
        std::pair{FakeModel::Throw::kBadAlloc, absl::StatusCode::kResourceExhausted}}) {
    model()->set_throw(kind);
    Outcome a, b;
    ASSERT_TRUE(q->Enqueue(Task({1}, &a)).ok());
    ASSERT_TRUE(q->Enqueue(Task({2}, &b)).ok());
    EXPECT_EQ(q->RunReadyBatches(), 1);
    EXPECT_TRUE(a.done && b.done);
    EXPECT_EQ(a.status.code(), code) << a.status;
    EXPECT_EQ(b.status.code(), code) << b.status;
  }
  model()->set_throw(FakeModel::Throw::kNothing);
  Outcome ok;
  ASSERT_TRUE(q->Enqueue(Task({3}, &ok)).ok());
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_TRUE(ok.status.ok()) << ok.status;
  EXPECT_THAT(ok.values, ElementsAre(6.f));  // the queue keeps serving
}

TEST_F(BatchQueueTest, ACallbackThatThrowsIsCalledAgainWithTheError) {
  auto q = MakeQueue(1, absl::ZeroDuration());
  std::vector<absl::StatusCode> calls;
  BatchTask t = Task({1}, nullptr);
  t.done = [&calls](absl::StatusOr<BatchTask::Result> r) {
    calls.push_back(r.status().code());
    if (calls.size() == 1) throw std::bad_alloc();
  };
  ASSERT_TRUE(q->Enqueue(std::move(t)).ok());
  EXPECT_EQ(q->RunReadyBatches(), 1);
  EXPECT_THAT(calls, ElementsAre(absl::StatusCode::kOk, absl::StatusCode::kResourceExhausted));
}

TEST_F(BatchQueueTest, ARequestLargerThanTheQueueIsInvalidNotRetryable) {
  auto q = MakeQueue(2, absl::Milliseconds(1), /*max_queue=*/4);
  Outcome big;
  absl::Status s = q->Enqueue(Task({1, 2, 3, 4, 5}, &big));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--max_queue_size"));
  Outcome fits;
  EXPECT_TRUE(q->Enqueue(Task({1, 2, 3, 4}, &fits)).ok());
  Outcome full;
  EXPECT_EQ(q->Enqueue(Task({1}, &full)).code(), absl::StatusCode::kUnavailable);  // retryable
}

}  // namespace
}  // namespace modelserver
