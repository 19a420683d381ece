#include "server/serving/model_statistics.h"

#include <algorithm>
#include <limits>

namespace modelserver {

void ModelStatistics::Duration::Add(uint64_t n, absl::Duration d) {
  count += n;
  ns += static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Nanoseconds(d)));
}

void ModelStatistics::Record(const std::string& model, const BatchQueue::BatchStats& batch) {
  const uint64_t requests = batch.queue_waits.size();
  absl::MutexLock lock(&mu_);
  Version& v = versions_[{model, batch.version}];
  v.version = batch.version;
  v.last_inference_ms =
      static_cast<uint64_t>(std::max<int64_t>(0, absl::ToUnixMillis(batch.answered)));
  for (size_t i = 0; i < requests; ++i) {
    v.queue.Add(1, batch.queue_waits[i]);
    (batch.ok ? v.success : v.fail).Add(1, batch.answered - batch.arrivals[i]);
  }
  if (!batch.ok) return;  // Triton counts only successful inferences and executions
  v.inference_count += static_cast<uint64_t>(batch.samples);
  v.execution_count += 1;
  // Per request, as Triton reports them: each request of the batch spent the
  // batch's input, forward and output time.
  v.compute_input.Add(requests, batch.input * static_cast<double>(requests));
  v.compute_infer.Add(requests, batch.infer * static_cast<double>(requests));
  v.compute_output.Add(requests, batch.output * static_cast<double>(requests));
  BatchSize& b = v.batch_sizes[batch.samples];
  b.input.Add(1, batch.input);
  b.infer.Add(1, batch.infer);
  b.output.Add(1, batch.output);
}

std::vector<ModelStatistics::Version> ModelStatistics::Get(const std::string& model) const {
  std::vector<Version> out;
  absl::MutexLock lock(&mu_);
  for (auto it = versions_.lower_bound({model, std::numeric_limits<int64_t>::min()});
       it != versions_.end() && it->first.first == model; ++it) {
    out.push_back(it->second);
  }
  return out;
}

}  // namespace modelserver
