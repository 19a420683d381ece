#include "server/model/checkpoint_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/model/pickle_writer.h"
#include "server/model/tensor_convert.h"
#include "server/model/zip_writer.h"
#include "server/util/status_macros.h"

namespace modelserver {
namespace {

absl::StatusOr<pickle::StorageType> StorageTypeOf(at::ScalarType t) {
  using pickle::StorageType;
  switch (t) {
    case at::kFloat:
      return StorageType::kFloat;
    case at::kDouble:
      return StorageType::kDouble;
    case at::kHalf:
      return StorageType::kHalf;
    case at::kBFloat16:
      return StorageType::kBFloat16;
    case at::kLong:
      return StorageType::kLong;
    case at::kInt:
      return StorageType::kInt;
    case at::kShort:
      return StorageType::kShort;
    case at::kChar:
      return StorageType::kChar;
    case at::kByte:
      return StorageType::kByte;
    case at::kBool:
      return StorageType::kBool;
    case at::kComplexFloat:
      return StorageType::kComplexFloat;
    case at::kComplexDouble:
      return StorageType::kComplexDouble;
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("cannot save dtype ", c10::toString(t)));
}

absl::Status WriteTo(int fd, const StateDict& state) {
  std::vector<PickledTensor> entries;
  for (size_t i = 0; i < state.size(); ++i) {
    const at::Tensor& t = state[i].second;
    PickledTensor p;
    p.key = state[i].first;
    ASSIGN_OR_RETURN(p.type, StorageTypeOf(t.scalar_type()));
    p.storage_key = std::to_string(i);
    p.numel = t.numel();
    p.sizes.assign(t.sizes().begin(), t.sizes().end());
    // Contiguous strides of the saved copy.
    p.strides.assign(p.sizes.size(), 1);
    for (int d = static_cast<int>(p.sizes.size()) - 2; d >= 0; --d) {
      p.strides[d] = p.strides[d + 1] * std::max<int64_t>(1, p.sizes[d + 1]);
    }
    entries.push_back(std::move(p));
  }
  ZipWriter zip(fd);
  const std::string pkl = PickleStateDict(entries);
  RETURN_IF_ERROR(zip.Add("archive/data.pkl", pkl.data(), pkl.size()));
  static constexpr char kByteOrder[] = "little";
  RETURN_IF_ERROR(zip.Add("archive/byteorder", kByteOrder, sizeof(kByteOrder) - 1));
  for (size_t i = 0; i < state.size(); ++i) {
    at::Tensor t;
    try {
      t = state[i].second.to(at::kCPU).contiguous();
    } catch (const std::exception& e) {
      return TorchError(e, absl::StrCat("copying ", state[i].first, " to the CPU"));
    }
    RETURN_IF_ERROR(zip.Add(absl::StrCat("archive/data/", i), t.data_ptr(), t.nbytes()));
  }
  static constexpr char kVersion[] = "3\n";
  RETURN_IF_ERROR(zip.Add("archive/version", kVersion, sizeof(kVersion) - 1));
  return zip.Finish();
}

}  // namespace

absl::Status WriteStateDict(const StateDict& state, const std::string& path) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  absl::Status s = WriteTo(fd, state);
  if (s.ok() && fsync(fd) != 0) {
    s = absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(errno)));
  }
  close(fd);
  return s;
}

}  // namespace modelserver
