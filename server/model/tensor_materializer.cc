#include "server/model/tensor_materializer.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/state_dict_parser.h"

namespace modelserver {
namespace {

// Elements a view may have beyond 4x its storage (small broadcasts).
constexpr int64_t kViewSlackElements = 1024;

// Asks for transparent huge pages on a large buffer before it is filled: far
// fewer page faults while reading, fewer TLB misses in the forward pass.
void AdviseHugePages(void* data, uint64_t bytes) {
  constexpr uintptr_t kHuge = 2 << 20;
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace

at::ScalarType ScalarTypeOf(pickle::StorageType type) {
  using pickle::StorageType;
  switch (type) {
    case StorageType::kFloat:
      return at::kFloat;
    case StorageType::kDouble:
      return at::kDouble;
    case StorageType::kHalf:
      return at::kHalf;
    case StorageType::kBFloat16:
      return at::kBFloat16;
    case StorageType::kLong:
      return at::kLong;
    case StorageType::kInt:
      return at::kInt;
    case StorageType::kShort:
      return at::kShort;
    case StorageType::kChar:
      return at::kChar;
    case StorageType::kByte:
      return at::kByte;
    case StorageType::kBool:
      return at::kBool;
    case StorageType::kComplexFloat:
      return at::kComplexFloat;
    case StorageType::kComplexDouble:
      return at::kComplexDouble;
  }
  return at::kFloat;
}

absl::Status TensorMaterializer::LoadStorages(const pickle::Unpickled& pickled) {
  // Allocate every storage and check its record first; then read the records
  // straight into the tensors' memory on a few threads (pread and page faults
  // scale with cores; so does the CRC).
  struct Job {
    const ZipReader::Entry* entry;
    void* dst;
  };
  std::vector<Job> jobs;
  for (const pickle::Value* s : pickled.storages()) {
    const pickle::StorageRef& ref = s->storage;
    const std::string record = absl::StrCat(prefix_, "data/", ref.key);
    auto entry = zip_.Find(record);
    if (!entry.ok()) {
      return absl::DataLossError(absl::StrCat("storage '", ref.key, "' has no record '", record,
                                              "' in the archive; the checkpoint is corrupt"));
    }
    const uint64_t elem = pickle::StorageElementSize(ref.type);
    const uint64_t numel = static_cast<uint64_t>(ref.numel);
    if ((*entry)->method != 0) return zip_.ReadInto(**entry, nullptr, false);  // refused
    if (numel > std::numeric_limits<uint64_t>::max() / elem || (*entry)->size != numel * elem) {
      return absl::DataLossError(absl::StrCat(
          "record '", record, "' has ", (*entry)->size, " bytes, expected ", numel, " x ", elem,
          " for a ", pickle::StorageTypeName(ref.type), "; the checkpoint is corrupt"));
    }
    at::Tensor storage;
    try {
      storage = at::empty({static_cast<int64_t>(numel)},
                          at::TensorOptions().dtype(ScalarTypeOf(ref.type)));
    } catch (const std::exception& e) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", numel * elem, " bytes for storage '", ref.key, "'"));
    }
    AdviseHugePages(storage.data_ptr(), numel * elem);
    jobs.push_back({*entry, storage.data_ptr()});
    storages_.emplace_back(s, std::move(storage));
  }
  // Largest first, taken from a shared counter.
  std::sort(jobs.begin(), jobs.end(),
            [](const Job& a, const Job& b) { return a.entry->size > b.entry->size; });
  std::atomic<size_t> next{0};
  std::vector<absl::Status> results(
      std::max<size_t>(1, std::min<size_t>({jobs.size(), std::thread::hardware_concurrency(), 8})));
  auto worker = [&](absl::Status* result) {
    for (size_t i = next++; i < jobs.size() && result->ok(); i = next++) {
      *result = zip_.ReadInto(*jobs[i].entry, jobs[i].dst, verify_crc_);
    }
  };
  std::vector<std::thread> threads;
  for (size_t t = 1; t < results.size(); ++t) threads.emplace_back(worker, &results[t]);
  worker(&results[0]);
  for (std::thread& t : threads) t.join();
  for (const absl::Status& r : results) RETURN_IF_ERROR(r);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> TensorMaterializer::Tensor(const pickle::Value& value) const {
  if (value.kind != pickle::Kind::kTensor) {
    return absl::FailedPreconditionError(
        absl::StrCat("expected a tensor, found a ", pickle::KindName(value.kind)));
  }
  const pickle::TensorRef& t = value.tensor;
  const at::Tensor* base = nullptr;
  for (const auto& [v, tensor] : storages_) {
    if (v == t.storage) base = &tensor;
  }
  if (base == nullptr) return absl::InternalError("tensor refers to an unloaded storage");
  // The view must lie inside its storage.
  const int64_t numel = t.storage->storage.numel;
  bool empty = false;
  for (int64_t s : t.sizes) empty |= s == 0;
  __int128 last = t.offset;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] < 0 || t.strides[d] < 0) {
      return absl::DataLossError("tensor has a negative size or stride; the checkpoint is corrupt");
    }
    if (!empty) last += static_cast<__int128>(t.sizes[d] - 1) * t.strides[d];
  }
  if (!empty && last >= numel) {
    return absl::DataLossError(absl::StrCat("tensor view (offset ", t.offset, ") reaches element ",
                                            static_cast<int64_t>(last), " of a storage of ", numel,
                                            "; the checkpoint is corrupt"));
  }
  if (empty && t.offset > numel) {
    return absl::DataLossError("tensor offset lies past its storage; the checkpoint is corrupt");
  }
  // A view may repeat storage elements (stride 0, overlapping strides), but not
  // grow into far more memory than the file holds once made contiguous.
  __int128 view_numel = 1;
  for (int64_t s : t.sizes) view_numel = std::min<__int128>(view_numel * s, __int128{1} << 62);
  if (view_numel > 4 * static_cast<__int128>(numel) + kViewSlackElements) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tensor is a view of ", static_cast<int64_t>(view_numel), " elements of a storage of ",
        numel,
        " elements; views more than 4x their storage are not loaded (save tensor.contiguous() "
        "or tensor.clone() instead)"));
  }
  return base->as_strided(t.sizes, t.strides, t.offset);
}

namespace {
absl::StatusOr<StateDict> ReadFromZip(const std::unique_ptr<ZipReader>& zip,
                                      const std::string& path,
                                      const CheckpointReadOptions& options) {
  ASSIGN_OR_RETURN(PickledStateDict sd, ParseStateDictPickle(*zip, path, options.max_pickle_bytes));
  TensorMaterializer materializer(*zip, sd.prefix, options.verify_crc);
  RETURN_IF_ERROR(materializer.LoadStorages(*sd.pickled));
  StateDict out;
  out.reserve(sd.pickled->root()->entries.size());
  for (const auto& [k, v] : sd.pickled->root()->entries) {
    absl::StatusOr<at::Tensor> t = materializer.Tensor(*v);
    if (!t.ok()) {
      return absl::Status(t.status().code(),
                          absl::StrCat(path, ": '", k->s, "': ", t.status().message()));
    }
    out.emplace_back(k->s, *std::move(t));
  }
  return out;
}
}  // namespace

absl::StatusOr<StateDict> ReadStateDict(const std::string& path,
                                        const CheckpointReadOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  return ReadFromZip(zip, path, options);
}

absl::StatusOr<StateDict> ReadStateDictFromFd(int fd, uint64_t offset, uint64_t size,
                                              const std::string& name,
                                              const CheckpointReadOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::FromFd(fd, offset, size, name));
  return ReadFromZip(zip, name, options);
}

}  // namespace modelserver
