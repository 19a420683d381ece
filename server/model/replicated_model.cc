#include "server/model/replicated_model.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace modelserver {

ReplicatedModel::ReplicatedModel(std::vector<std::shared_ptr<const Model>> replicas)
    : replicas_(std::move(replicas)),
      running_(new std::atomic<int>[replicas_.size()]),
      total_(new std::atomic<int64_t>[replicas_.size()]) {
  info_ = replicas_[0]->info();
  info_.parameter_bytes = 0;
  info_.device.clear();
  for (size_t i = 0; i < replicas_.size(); ++i) {
    running_[i] = 0;
    total_[i] = 0;
    info_.parameter_bytes += replicas_[i]->info().parameter_bytes;
    absl::StrAppend(&info_.device, i == 0 ? "" : ",", replicas_[i]->info().device);
  }
}

absl::StatusOr<HostTensor> ReplicatedModel::Forward(const HostTensor& batch) const {
  return FirstOutput(ForwardAll(batch));
}

absl::StatusOr<std::vector<NamedTensor>> ReplicatedModel::ForwardAll(
    const HostTensor& batch) const {
  size_t best = 0;
  for (size_t i = 1; i < replicas_.size(); ++i) {
    if (running_[i].load() < running_[best].load()) best = i;
  }
  ++running_[best];
  ++total_[best];
  struct Done {
    std::atomic<int>* n;
    ~Done() { --*n; }
  } done{&running_[best]};
  return replicas_[best]->ForwardAll(batch);
}

std::vector<std::string> ReplicatedModel::OutputNames() const {
  // The copy that ran last knows; copies of one file name their outputs alike.
  for (const auto& r : replicas_) {
    std::vector<std::string> names = r->OutputNames();
    if (names != std::vector<std::string>{"output"}) return names;
  }
  return {"output"};
}

std::vector<int64_t> ReplicatedModel::forwards() const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < replicas_.size(); ++i) out.push_back(total_[i].load());
  return out;
}

}  // namespace modelserver
