#ifndef MODELSERVER_SERVER_MODEL_PLACEMENT_H_
#define MODELSERVER_SERVER_MODEL_PLACEMENT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Which devices serve a model: one copy of the weights per device, the model's
// batch workers spread over the copies (ReplicatedModel sends each forward pass
// to the copy with the fewest running). Torch-free, so the rule is tested with
// any device count.
//
//   - `explicit_devices` (from --model_devices NAME=cuda:0,cuda:1) wins: those
//     devices, each checked to exist (cuda:N with N < gpu_count), no duplicates.
//   - `device` "cuda" (no index) on a machine with gpu_count > 1: min(workers,
//     gpu_count) GPUs, starting at `ordinal` (the model's place among the models
//     loaded so far) and going round, so models spread over every GPU.
//   - otherwise `device` alone ("cpu", "cuda:N", or "cuda" with one GPU: cuda:0).
// INVALID_ARGUMENT for a device that does not exist.
absl::StatusOr<std::vector<std::string>> PlaceModel(
    absl::string_view device, const std::vector<std::string>& explicit_devices, int gpu_count,
    int workers, int ordinal);

// --model_devices values as a map: "NAME=cuda:0,cuda:1" (absl's list flag hands
// it over split at the commas: an item without '=' continues the previous
// model's list). INVALID_ARGUMENT for a malformed one.
absl::StatusOr<std::map<std::string, std::vector<std::string>>> ParseModelDevices(
    const std::vector<std::string>& values);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_PLACEMENT_H_
