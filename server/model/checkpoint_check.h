#ifndef MODELSERVER_SERVER_MODEL_CHECKPOINT_CHECK_H_
#define MODELSERVER_SERVER_MODEL_CHECKPOINT_CHECK_H_

#include <string>

#include "absl/status/status.h"
#include "server/model/model.h"

namespace modelserver {

// A cheap structural check of a checkpoint file before it is published: a
// readable zip archive and, for STATE_DICT, a data.pkl the restricted unpickler
// accepts whose root is a dict of tensors whose storages all have records.
// Tensor bytes are not read. DATA_LOSS / FAILED_PRECONDITION as ReadStateDict.
// Torch-free; thread-safe.
absl::Status CheckCheckpointFile(const std::string& path, ModelFormat format);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_CHECKPOINT_CHECK_H_
