#include "server/model/placement.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace modelserver {
namespace {

// "cpu", or "cuda:N" with N < gpu_count.
absl::Status CheckDevice(absl::string_view d, int gpu_count) {
  if (d == "cpu") return absl::OkStatus();
  int n = -1;
  if (absl::StartsWith(d, "cuda:") && absl::SimpleAtoi(d.substr(5), &n) && n >= 0 &&
      n < gpu_count) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("device '", d, "' does not exist here (",
                                                 gpu_count, " GPU(s): cpu",
                                                 gpu_count > 0 ? ", cuda:0.." : "", ")"));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> PlaceModel(
    absl::string_view device, const std::vector<std::string>& explicit_devices, int gpu_count,
    int workers, int ordinal) {
  if (!explicit_devices.empty()) {
    std::set<std::string> seen;
    for (const std::string& d : explicit_devices) {
      if (absl::Status s = CheckDevice(d, gpu_count); !s.ok()) return s;
      if (!seen.insert(d).second) {
        return absl::InvalidArgumentError(absl::StrCat("device '", d, "' is named twice"));
      }
    }
    return explicit_devices;
  }
  if (device == "cuda" && gpu_count > 1) {
    const int n = std::max(1, std::min(workers, gpu_count));
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      out.push_back(absl::StrCat("cuda:", (std::max(0, ordinal) + i) % gpu_count));
    }
    return out;
  }
  const std::string one = device == "cuda" ? "cuda:0" : std::string(device);
  if (absl::Status s = CheckDevice(one, gpu_count); !s.ok()) return s;
  return std::vector<std::string>{one};
}

absl::StatusOr<std::map<std::string, std::vector<std::string>>> ParseModelDevices(
    const std::vector<std::string>& values) {
  // absl splits a list flag at commas: "a=cuda:0,cuda:1,b=cuda:2" arrives as
  // ["a=cuda:0", "cuda:1", "b=cuda:2"], so an item without '=' continues the
  // previous model's list.
  std::map<std::string, std::vector<std::string>> out;
  std::string current;
  for (const std::string& v : values) {
    const std::vector<std::string> kv = absl::StrSplit(v, absl::MaxSplits('=', 1));
    if (kv.size() == 2 && !kv[0].empty() && !kv[1].empty()) {
      current = kv[0];
      for (absl::string_view d : absl::StrSplit(kv[1], ',', absl::SkipEmpty())) {
        out[current].emplace_back(d);
      }
    } else if (kv.size() == 1 && !current.empty() && !v.empty()) {
      out[current].push_back(v);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--model_devices '", v, "' is not NAME=DEVICE[,DEVICE...]"));
    }
  }
  return out;
}

}  // namespace modelserver
