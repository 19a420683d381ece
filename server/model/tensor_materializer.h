#ifndef MODELSERVER_SERVER_MODEL_TENSOR_MATERIALIZER_H_
#define MODELSERVER_SERVER_MODEL_TENSOR_MATERIALIZER_H_

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/checkpoint/unpickler.h"
#include "server/checkpoint/zip_reader.h"

namespace modelserver {

// The ATen dtype of a PyTorch storage type.
at::ScalarType ScalarTypeOf(pickle::StorageType type);

// An ordered state dict: torchvision key -> CPU tensor.
using StateDict = std::vector<std::pair<std::string, at::Tensor>>;

struct CheckpointReadOptions {
  // Check each record's CRC-32. Off when the caller already verified the whole
  // file (the store's sha256).
  bool verify_crc = true;
  // Largest data.pkl accepted.
  uint64_t max_pickle_bytes = 64ull << 20;
};

// Reads `torch.save(model.state_dict(), path)` files (zip format, PyTorch >= 1.6)
// without Python and without torch::pickle_load: data.pkl goes through the
// restricted Unpickler; each storage's bytes are read from its zip record straight
// into the tensor's memory.
//
// Errors: DATA_LOSS for a non-zip or truncated file, a missing or short record, or
// a bad CRC; FAILED_PRECONDITION for a refused pickle (naming the global) or a
// file that holds something other than a dict of tensors.
// Thread-safe (no shared state); blocks on file I/O.
absl::StatusOr<StateDict> ReadStateDict(const std::string& path,
                                        const CheckpointReadOptions& options);
// ReadStateDict of bytes [offset, offset + size) of the open file `fd` (a
// sandboxed worker's memfd: it opens no path); `name` names it in messages.
absl::StatusOr<StateDict> ReadStateDictFromFd(int fd, uint64_t offset, uint64_t size,
                                              const std::string& name,
                                              const CheckpointReadOptions& options);

// Turns the storages and tensor references of an unpickled checkpoint into CPU
// tensors, reading each storage from "<prefix>data/<key>".
class TensorMaterializer {
 public:
  TensorMaterializer(const ZipReader& zip, std::string prefix, bool verify_crc)
      : zip_(zip), prefix_(std::move(prefix)), verify_crc_(verify_crc) {}

  // Reads every storage of `pickled` (call once, before Tensor()).
  absl::Status LoadStorages(const pickle::Unpickled& pickled);
  // The tensor for a kTensor value.
  absl::StatusOr<at::Tensor> Tensor(const pickle::Value& value) const;

 private:
  const ZipReader& zip_;
  std::string prefix_;
  bool verify_crc_;
  std::vector<std::pair<const pickle::Value*, at::Tensor>> storages_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TENSOR_MATERIALIZER_H_
