#ifndef MODELSERVER_SERVER_MODEL_VGG_VGG_WRITER_H_
#define MODELSERVER_SERVER_MODEL_VGG_VGG_WRITER_H_

#include <string>

#include "absl/status/status.h"
#include "server/model/vgg/vgg.h"

namespace modelserver {

// Writes `vgg` as `torch.save(model, path)` would for a torchvision VGG in eval
// mode (torch 1.13's module attributes; later versions fill in what they add in
// Module.__setstate__): Python's torch.load (with torchvision installed) gives a
// torchvision.models.vgg.VGG computing the same outputs. Same file handling as
// WriteStateDict. Thread-safe.
absl::Status WriteVggModule(const VggImpl& vgg, const std::string& path);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_VGG_VGG_WRITER_H_
