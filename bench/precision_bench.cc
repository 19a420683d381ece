// Precision and memory-format modes of a VGG state dict, measured in C++ on one
// device, for bench/precision_bench.sh (CPU) and bench/gpu_check.sh (GPU):
//
// - load: file to ready in the mode (LoadModelFromFile), weights' bytes on the
//   device, and the device allocator's bytes after the load (GPU);
// - accuracy against Python's float32 outputs of the same inputs: max |dlogit|,
//   mean and minimum cosine similarity of the logit rows, top-1 agreement and
//   top-5 agreement (same five classes, any order);
// - raw: the network's forward on a device tensor already in the mode's dtype and
//   layout (LibTorch alone, no host copies), samples/s at --batch;
// - served: Model::Forward through the server's batching queue (BatchQueue with
//   the server's defaults but --batch samples per pass and --workers workers),
//   --concurrency clients each sending --request_batch samples at a time, inputs
//   and outputs as float32 host tensors -- the server's path without gRPC.
//
//   precision_bench file=W.pth arch=vgg16 device=cpu|cuda:0 modes=fp32:contiguous,bf16:auto
//       inputs=X.npy reference=Y.npy batch=8 seconds=10 concurrency=1,16 request_batch=1
//       workers=2 threads=0 raw=1
// (concurrency= empty: no served measurement; raw=0: no raw one; request_batch
// pairs with concurrency when it lists several.)
//
// Prints one JSON object per mode and measurement on stdout.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/npy.h"
#include "server/batching/batch_queue.h"
#include "server/model/device.h"
#include "server/model/model_loader.h"
#include "server/model/vgg/vgg_model.h"

namespace modelserver {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

std::map<std::string, std::string> ParseArgs(int argc, char** argv) {
  std::map<std::string, std::string> a = {
      {"device", "cpu"}, {"modes", "fp32:auto"}, {"batch", "8"},
      {"seconds", "10"}, {"concurrency", "1"},   {"request_batch", "1"},
      {"workers", "2"},  {"threads", "0"},       {"raw", "1"}};
  for (int i = 1; i < argc; ++i) {
    std::vector<std::string> kv = absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    if (kv.size() == 2) a[kv[0]] = kv[1];
  }
  return a;
}

std::vector<int> Ints(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view p : absl::StrSplit(s, ',')) {
    int v = 0;
    if (absl::SimpleAtoi(p, &v)) out.push_back(v);
  }
  return out;
}

void Sync(const std::string& device) {
  if (device != "cpu") torch::cuda::synchronize();
}

// Rows [begin, begin + n) of a float32 [N, ...] host tensor.
HostTensor Rows(const HostTensor& t, int64_t begin, int64_t n) {
  HostTensor out;
  out.dtype = t.dtype;
  out.shape = t.shape;
  out.shape[0] = n;
  const size_t row = t.data.size() / static_cast<size_t>(t.shape[0]);
  out.data = t.data.substr(static_cast<size_t>(begin) * row, static_cast<size_t>(n) * row);
  return out;
}

std::vector<int64_t> TopK(const float* row, int64_t classes, int k) {
  std::vector<int64_t> idx(static_cast<size_t>(classes));
  for (int64_t i = 0; i < classes; ++i) idx[static_cast<size_t>(i)] = i;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [row](int64_t a, int64_t b) { return row[a] > row[b]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

// The mode's outputs for every input against Python's float32 outputs.
void Accuracy(const Model& model, const HostTensor& inputs, const HostTensor& reference,
              int64_t batch, const std::string& mode) {
  const int64_t n = inputs.shape[0];
  const int64_t classes = reference.shape[1];
  const auto* ref = reinterpret_cast<const float*>(reference.data.data());
  double max_abs = 0, cos_sum = 0, cos_min = 1;
  int top1 = 0, top5 = 0;
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t m = std::min(batch, n - b);
    absl::StatusOr<HostTensor> out = model.Forward(Rows(inputs, b, m));
    if (!out.ok()) {
      std::printf("{\"mode\": \"%s\", \"error\": \"%s\"}\n", mode.c_str(),
                  std::string(out.status().message()).c_str());
      return;
    }
    const auto* y = reinterpret_cast<const float*>(out->data.data());
    for (int64_t i = 0; i < m; ++i) {
      const float* a = y + i * classes;
      const float* r = ref + (b + i) * classes;
      double dot = 0, na = 0, nr = 0;
      for (int64_t c = 0; c < classes; ++c) {
        max_abs = std::max(max_abs, static_cast<double>(std::abs(a[c] - r[c])));
        dot += static_cast<double>(a[c]) * r[c];
        na += static_cast<double>(a[c]) * a[c];
        nr += static_cast<double>(r[c]) * r[c];
      }
      const double cos = dot / std::sqrt(na * nr + 1e-30);
      cos_sum += cos;
      cos_min = std::min(cos_min, cos);
      std::vector<int64_t> ta = TopK(a, classes, 5), tr = TopK(r, classes, 5);
      top1 += ta[0] == tr[0];
      std::sort(ta.begin(), ta.end());
      std::sort(tr.begin(), tr.end());
      top5 += ta == tr;
    }
  }
  std::printf(
      "{\"mode\": \"%s\", \"what\": \"accuracy\", \"inputs\": %lld, \"max_abs_dlogit\": %.6g, "
      "\"cosine_mean\": %.8f, \"cosine_min\": %.8f, \"top1_agree\": %.4f, \"top5_agree\": %.4f}\n",
      mode.c_str(), static_cast<long long>(n), max_abs, cos_sum / static_cast<double>(n), cos_min,
      static_cast<double>(top1) / static_cast<double>(n),
      static_cast<double>(top5) / static_cast<double>(n));
}

// The network alone on a device tensor in the mode's dtype and layout.
void Raw(const VggModel& model, const std::string& device, int64_t batch, double seconds,
         const std::string& mode, const std::string& precision, bool channels_last) {
  c10::InferenceMode guard;
  at::ScalarType dtype = precision == "bf16"   ? at::kBFloat16
                         : precision == "fp16" ? at::kHalf
                                               : at::kFloat;
  at::Tensor x = at::randn({batch, 3, 224, 224}).to(at::Device(device)).to(dtype);
  if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  for (int i = 0; i < 2; ++i) model.vgg().forward(x);
  Sync(device);
  int64_t samples = 0;
  const auto start = Clock::now();
  while (Seconds(start) < seconds) {
    model.vgg().forward(x);
    samples += batch;
    if (device == "cpu" || samples % (batch * 8) == 0) Sync(device);
  }
  Sync(device);
  std::printf("{\"mode\": \"%s\", \"what\": \"raw\", \"batch\": %lld, \"samples_per_s\": %.3f}\n",
              mode.c_str(), static_cast<long long>(batch),
              static_cast<double>(samples) / Seconds(start));
}

// As the server's registry does on a GPU: one pass per batch size the queue can
// form, so that cuDNN's per-shape algorithm search is not timed.
void WarmUpBatchSizes(const Model& model, int64_t batch) {
  for (int64_t n = 1; n <= batch && model.info().device != "cpu"; ++n) {
    HostTensor warm;
    warm.dtype = DType::kFloat32;
    warm.shape = {n, 3, 224, 224};
    warm.data.assign(static_cast<size_t>(warm.NumElements()) * 4, '\0');
    (void)model.Forward(warm);
  }
}

// Clients sending `request_batch` float32 samples through a BatchQueue.
void Served(std::shared_ptr<const Model> model, int64_t batch, int workers, int concurrency,
            int64_t request_batch, double seconds, const std::string& mode) {
  BatchQueue::Options o;
  o.name = "bench";
  o.max_batch_size = batch;
  o.num_workers = workers;
  o.max_queue_size = std::max<int64_t>(256, 4 * concurrency * request_batch);
  std::atomic<int64_t> batches{0}, batched{0};
  o.on_batch = [&](int64_t n, absl::Duration, absl::Duration) {
    ++batches;
    batched += n;
  };
  WarmUpBatchSizes(*model, batch);
  BatchQueue queue(o, [model]() -> absl::StatusOr<ModelHandle> {
    return ModelHandle{model, 1, nullptr, nullptr};
  });
  HostTensor input;
  input.dtype = DType::kFloat32;
  input.shape = {request_batch, 3, 224, 224};
  input.data.assign(static_cast<size_t>(input.NumElements()) * 4, '\0');
  std::atomic<int64_t> samples{0}, errors{0};
  std::atomic<bool> counting{false}, stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        absl::Notification done;
        BatchTask task;
        task.input = input;
        bool ok = false;
        task.done = [&](absl::StatusOr<BatchTask::Result> r) {
          ok = r.ok();
          done.Notify();
        };
        if (!queue.Enqueue(std::move(task)).ok()) {
          ++errors;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        done.WaitForNotification();
        if (!ok) ++errors;
        if (ok && counting.load()) samples += request_batch;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(std::min(2.0, seconds / 4)));
  counting = true;
  batches = 0;
  batched = 0;
  const auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  counting = false;
  const double took = Seconds(start);
  stop = true;
  for (std::thread& t : clients) t.join();
  std::printf(
      "{\"mode\": \"%s\", \"what\": \"served\", \"batch\": %lld, \"concurrency\": %d, "
      "\"request_batch\": %lld, \"samples_per_s\": %.3f, \"mean_batch\": %.2f, \"errors\": "
      "%lld}\n",
      mode.c_str(), static_cast<long long>(batch), concurrency,
      static_cast<long long>(request_batch), static_cast<double>(samples.load()) / took,
      static_cast<double>(batched.load()) / static_cast<double>(std::max<int64_t>(1, batches)),
      static_cast<long long>(errors.load()));
}

int Main(int argc, char** argv) {
  std::map<std::string, std::string> a = ParseArgs(argc, argv);
  SetIntraOpThreads(std::atoi(a["threads"].c_str()));
  ConfigureDevice(a["device"]);
  absl::StatusOr<HostTensor> inputs = ReadNpy(a["inputs"]);
  absl::StatusOr<HostTensor> reference = ReadNpy(a["reference"]);
  if (!inputs.ok() || !reference.ok()) {
    std::fprintf(stderr, "inputs/reference: %s %s\n", inputs.status().ToString().c_str(),
                 reference.status().ToString().c_str());
    return 2;
  }
  const int64_t batch = std::atoi(a["batch"].c_str());
  const double seconds = std::atof(a["seconds"].c_str());
  for (absl::string_view m : absl::StrSplit(a["modes"], ',')) {
    const std::vector<std::string> pm = absl::StrSplit(m, ':');
    ModelLoadOptions lo;
    lo.path = a["file"];
    lo.architecture = a["arch"];
    lo.device = a["device"];
    absl::StatusOr<Precision> p = ParsePrecision(pm[0]);
    absl::StatusOr<MemoryLayout> l = ParseMemoryLayout(pm.size() > 1 ? pm[1] : "auto");
    if (!p.ok() || !l.ok()) return 2;
    lo.precision = *p;
    lo.memory_layout = *l;
    const std::string mode(m);
    const auto start = Clock::now();
    absl::StatusOr<std::shared_ptr<const Model>> model = LoadModelFromFile(lo);
    if (!model.ok()) {
      std::printf("{\"mode\": \"%s\", \"error\": \"%s\"}\n", mode.c_str(),
                  std::string(model.status().message()).c_str());
      continue;
    }
    Sync(lo.device);
    const ModelInfo& info = (*model)->info();
    std::printf(
        "{\"mode\": \"%s\", \"what\": \"load\", \"seconds\": %.3f, \"precision\": \"%s\", "
        "\"memory_format\": \"%s\", \"parameter_bytes\": %lld, \"device_allocated_bytes\": "
        "%lld}\n",
        mode.c_str(), Seconds(start), info.precision.c_str(), info.memory_format.c_str(),
        static_cast<long long>(info.parameter_bytes),
        static_cast<long long>(DeviceAllocatedBytes(lo.device)));
    std::fflush(stdout);
    Accuracy(**model, *inputs, *reference, batch, mode);
    std::fflush(stdout);
    const auto* vgg = dynamic_cast<const VggModel*>(model->get());
    if (vgg != nullptr && a["raw"] == "1") {
      Raw(*vgg, lo.device, batch, seconds, mode, info.precision,
          info.memory_format == "channels_last");
      std::fflush(stdout);
    }
    // concurrency=2,64 request_batch=32,1: pairs (one request_batch: for all).
    const std::vector<int> clients = Ints(a["concurrency"]);
    const std::vector<int> sizes = Ints(a["request_batch"]);
    for (size_t i = 0; i < clients.size(); ++i) {
      const int size = sizes.empty() ? 1 : sizes[std::min(i, sizes.size() - 1)];
      Served(*model, batch, std::atoi(a["workers"].c_str()), clients[i], size, seconds, mode);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace modelserver

int main(int argc, char** argv) {
  std::set_terminate([] {  // say which exception ended the process
    if (std::exception_ptr e = std::current_exception()) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        std::fprintf(stderr, "terminate: %s\n", x.what());
      } catch (...) {
      }
    }
    std::abort();
  });
  return modelserver::Main(argc, argv);
}
