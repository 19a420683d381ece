#ifndef MODELSERVER_COMMON_NPY_H_
#define MODELSERVER_COMMON_NPY_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/host_tensor.h"

namespace modelserver {

// The largest calibration sample set (calibration.npy, or calibration/ images
// preprocessed) an upload stores or an int8 load reads: a few dozen samples are enough.
inline constexpr int64_t kMaxCalibrationBytes = int64_t{512} << 20;

// Reads a NumPy .npy file (format 1.0-3.0, C order, little-endian dtypes f4, f8,
// f2, u1, i1, i4, i8, b1). INVALID_ARGUMENT for anything else.
absl::StatusOr<HostTensor> ReadNpy(const std::string& path);
// Parses .npy bytes.
absl::StatusOr<HostTensor> ParseNpy(const std::string& bytes);
// Writes `t` as a .npy file (format 1.0).
absl::Status WriteNpy(const std::string& path, const HostTensor& t);

}  // namespace modelserver

#endif  // MODELSERVER_COMMON_NPY_H_
