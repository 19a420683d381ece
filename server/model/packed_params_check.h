#ifndef MODELSERVER_SERVER_MODEL_PACKED_PARAMS_CHECK_H_
#define MODELSERVER_SERVER_MODEL_PACKED_PARAMS_CHECK_H_

#include <string>

#include "absl/status/status.h"
#include "server/checkpoint/zip_reader.h"

namespace modelserver {

// The packed-parameter objects of a quantized TorchScript archive
// (torch.classes.quantized.Conv2dPackedParamsBase, Conv3dPackedParamsBase,
// LinearPackedParamsBase in constants.pkl), checked before LibTorch restores them:
// their __setstate__ reads the configuration record without checking it against
// the weight (a record cut short is read past its end). This reads constants.pkl
// with LibTorch's own unpickler (the one torch::jit::load uses) but hands each
// packed-parameter state to the check instead of its __setstate__: the
// configuration's length and spatial rank, strides, dilations and groups
// positive, paddings non-negative, flags known, the weight a quantized tensor of
// the right rank whose output channels the groups divide, the bias a vector of
// one value per output channel. FAILED_PRECONDITION naming the class and the
// defect. OK when the archive has no such objects (its constants.pkl never names
// torch.classes.quantized) or its constants cannot be read this way (the load
// then reports its own error). Not a boundary -- the load runs in the sandboxed
// worker -- but a clear message where LibTorch would read garbage.
absl::Status CheckPackedParams(const ZipReader& zip, const std::string& what);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_PACKED_PARAMS_CHECK_H_
