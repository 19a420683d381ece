#ifndef MODELSERVER_SERVER_MODEL_CHECKPOINT_WRITER_H_
#define MODELSERVER_SERVER_MODEL_CHECKPOINT_WRITER_H_

#include <string>

#include "absl/status/status.h"
#include "server/model/checkpoint_reader.h"

namespace modelserver {

// Writes `state` as `torch.save(state_dict, path)` would (zip, archive/data.pkl,
// one record per tensor, 64-byte aligned): the file loads with Python's
// torch.load and with ReadStateDict. Tensors on any device are copied to the CPU
// one at a time. Creates `path` (which must not exist) and fsyncs it.
// INTERNAL on I/O errors. Thread-safe.
absl::Status WriteStateDict(const StateDict& state, const std::string& path);

class VggImpl;
// Writes `vgg` as `torch.save(model, path)` would for a torchvision VGG in eval
// mode: Python's torch.load (with torchvision installed) gives a
// torchvision.models.vgg.VGG computing the same outputs. Same file handling as
// WriteStateDict.
absl::Status WriteVggModule(const VggImpl& vgg, const std::string& path);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_CHECKPOINT_WRITER_H_
