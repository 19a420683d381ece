#ifndef MODELSERVER_SERVER_MODEL_REPLICATED_MODEL_H_
#define MODELSERVER_SERVER_MODEL_REPLICATED_MODEL_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "server/model/model.h"

namespace modelserver {

// One model version on several devices (PlaceModel): the copies are the same
// weights, loaded once per device. Each Forward goes to the copy with the fewest
// forward passes running (ties: the lowest index), so a model's batch workers
// spread over its GPUs. Everything else is the first copy's; info().device lists
// every device ("cuda:0,cuda:1") and parameter_bytes sums them.
//
// Thread-safe, like every Model.
class ReplicatedModel : public Model {
 public:
  // `replicas` non-empty, all of one version.
  explicit ReplicatedModel(std::vector<std::shared_ptr<const Model>> replicas);

  const ModelInfo& info() const override { return info_; }
  absl::Status ValidateInput(DType dtype, const std::vector<int64_t>& shape) const override {
    return replicas_[0]->ValidateInput(dtype, shape);
  }
  bool IsUnbatched(const std::vector<int64_t>& shape) const override {
    return replicas_[0]->IsUnbatched(shape);
  }
  std::vector<int64_t> WarmupShape() const override { return replicas_[0]->WarmupShape(); }
  int OutputRank() const override { return replicas_[0]->OutputRank(); }
  int64_t ForwardBytes(const std::vector<int64_t>& shape) const override {
    return replicas_[0]->ForwardBytes(shape);
  }
  absl::Status Save(ModelFormat format, const std::string& path) const override {
    return replicas_[0]->Save(format, path);
  }
  absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const override;
  absl::StatusOr<std::vector<NamedTensor>> ForwardAll(const HostTensor& batch) const override;
  std::vector<std::string> OutputNames() const override;

  const std::vector<std::shared_ptr<const Model>>& replicas() const { return replicas_; }
  // Forward passes each copy has run (for tests and logs).
  std::vector<int64_t> forwards() const;

 private:
  std::vector<std::shared_ptr<const Model>> replicas_;
  ModelInfo info_;
  // Per copy: passes running now, passes run in all.
  std::unique_ptr<std::atomic<int>[]> running_;
  std::unique_ptr<std::atomic<int64_t>[]> total_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_REPLICATED_MODEL_H_
