#include "server/model/state_dict_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/zip_writer.h"
#include "server/model/tensor_convert.h"

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

PickledTensor Describe(const std::string& key, const at::Tensor& t, size_t index,
                       pickle::StorageType type) {
  PickledTensor p;
  p.key = key;
  p.type = type;
  p.storage_key = std::to_string(index);
  p.numel = t.numel();
  p.sizes.assign(t.sizes().begin(), t.sizes().end());
  // Contiguous strides of the saved copy.
  p.strides.assign(p.sizes.size(), 1);
  for (int d = static_cast<int>(p.sizes.size()) - 2; d >= 0; --d) {
    p.strides[d] = p.strides[d + 1] * std::max<int64_t>(1, p.sizes[d + 1]);
  }
  return p;
}

// A torch.save archive: archive/data.pkl, one record per storage, version, byteorder.
absl::Status WriteArchive(int fd, const std::string& pkl, const std::vector<at::Tensor>& storages,
                          const std::vector<std::string>& names) {
  ZipWriter zip(fd);
  RETURN_IF_ERROR(zip.Add("archive/data.pkl", pkl.data(), pkl.size()));
  static constexpr char kByteOrder[] = "little";
  RETURN_IF_ERROR(zip.Add("archive/byteorder", kByteOrder, sizeof(kByteOrder) - 1));
  for (size_t i = 0; i < storages.size(); ++i) {
    at::Tensor t;
    try {
      t = storages[i].to(at::kCPU).contiguous();
    } catch (const std::exception& e) {
      return TorchError(e, absl::StrCat("copying ", names[i], " to the CPU"));
    }
    RETURN_IF_ERROR(zip.Add(absl::StrCat("archive/data/", i), t.data_ptr(), t.nbytes()));
  }
  static constexpr char kVersion[] = "3\n";
  RETURN_IF_ERROR(zip.Add("archive/version", kVersion, sizeof(kVersion) - 1));
  return zip.Finish();
}

absl::Status WriteFile(const std::string& path, const std::function<absl::Status(int)>& write) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  absl::Status s = write(fd);
  if (s.ok() && fsync(fd) != 0) {
    s = absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(errno)));
  }
  close(fd);
  return s;
}

}  // namespace

absl::StatusOr<PickledTensor> TensorArchiveWriter::Add(const std::string& key,
                                                       const at::Tensor& tensor) {
  ASSIGN_OR_RETURN(pickle::StorageType type, StorageTypeOf(tensor.scalar_type()));
  PickledTensor p = Describe(key, tensor, storages_.size(), type);
  storages_.push_back(tensor);
  names_.push_back(key);
  return p;
}

absl::Status TensorArchiveWriter::Write(const std::string& path, const std::string& pkl) const {
  return WriteFile(path, [&](int fd) { return WriteToFd(fd, pkl); });
}

absl::Status TensorArchiveWriter::WriteToFd(int fd, const std::string& pkl) const {
  return WriteArchive(fd, pkl, storages_, names_);
}

absl::Status WriteStateDict(const StateDict& state, const std::string& path) {
  return WriteFile(path, [&](int fd) { return WriteStateDictToFd(state, fd); });
}

absl::Status WriteStateDictToFd(const StateDict& state, int fd) {
  TensorArchiveWriter archive;
  std::vector<PickledTensor> entries;
  for (const auto& [key, tensor] : state) {
    ASSIGN_OR_RETURN(PickledTensor t, archive.Add(key, tensor));
    entries.push_back(std::move(t));
  }
  return archive.WriteToFd(fd, PickleStateDict(entries));
}

}  // namespace modelserver
