#ifndef MODELSERVER_SERVER_CHECKPOINT_CHECKPOINT_CHECK_H_
#define MODELSERVER_SERVER_CHECKPOINT_CHECKPOINT_CHECK_H_

#include <string>

#include "absl/status/status.h"
#include "server/checkpoint/format.h"

namespace modelserver {

// A cheap structural check of a checkpoint file before it is published: a
// readable zip archive of the declared format -- INVALID_ARGUMENT for a
// TorchScript archive declared as another format or the reverse; FAILED_PRECONDITION
// for a state dict declared PICKLED_MODULE -- and, for STATE_DICT, a state-dict pickle
// whose storages all have records of the right size; for PICKLED_MODULE, a
// module tree of allowlisted classes. Tensor bytes are not read. Thread-safe.
absl::Status CheckCheckpointFile(const std::string& path, ModelFormat format);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_CHECKPOINT_CHECK_H_
