#ifndef MODELSERVER_SERVER_MODEL_STATE_DICT_WRITER_H_
#define MODELSERVER_SERVER_MODEL_STATE_DICT_WRITER_H_

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/checkpoint/pickle_writer.h"
#include "server/model/tensor_materializer.h"

namespace modelserver {

// Writes `state` as `torch.save(state_dict, path)` would (zip, archive/data.pkl,
// one record per tensor, 64-byte aligned): the file loads with Python's
// torch.load and with ReadStateDict. Tensors on any device are copied to the CPU
// one at a time. Creates `path` (which must not exist) and fsyncs it.
// INTERNAL on I/O errors. Thread-safe.
absl::Status WriteStateDict(const StateDict& state, const std::string& path);
// The same archive written to an open descriptor (a sandboxed worker's memfd).
absl::Status WriteStateDictToFd(const StateDict& state, int fd);

// The tensors of one torch.save archive, collected while its pickle is built,
// then written with the pickle. Not thread-safe.
//
//   TensorArchiveWriter archive;
//   ASSIGN_OR_RETURN(PickledTensor t, archive.Add("features.0.weight", weight));
//   ... build the pickle around t ...
//   RETURN_IF_ERROR(archive.Write(path, PickleValue(root)));
class TensorArchiveWriter {
 public:
  // Describes `tensor` as the next storage record (a contiguous copy is what gets
  // written). INVALID_ARGUMENT for a dtype torch.save storages cannot hold.
  absl::StatusOr<PickledTensor> Add(const std::string& key, const at::Tensor& tensor);

  // Creates `path` (which must not exist): archive/data.pkl = `pkl`, byteorder,
  // every added tensor, version; fsynced. INTERNAL on I/O errors.
  absl::Status Write(const std::string& path, const std::string& pkl) const;
  // The same archive written to an open descriptor (not synced).
  absl::Status WriteToFd(int fd, const std::string& pkl) const;

 private:
  std::vector<at::Tensor> storages_;
  std::vector<std::string> names_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_STATE_DICT_WRITER_H_
