#ifndef MODELSERVER_SERVER_CHECKPOINT_STATE_DICT_PARSER_H_
#define MODELSERVER_SERVER_CHECKPOINT_STATE_DICT_PARSER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/checkpoint/unpickler.h"
#include "server/checkpoint/zip_reader.h"

namespace modelserver {

// The torch-free half of reading `torch.save(state_dict)` files: the archive's
// record prefix ("archive/" for "archive/data.pkl"), the byte order, and data.pkl
// through the restricted unpickler, checked to be a dict of named tensors.
struct PickledStateDict {
  std::string prefix;
  std::unique_ptr<pickle::Unpickled> pickled;  // root: kDict of kString -> kTensor
};

// Finds "<name>/data.pkl", checks the byte order and unpickles data.pkl with
// `options`. Errors as ParseStateDictPickle, without the dict-of-tensors check.
absl::StatusOr<PickledStateDict> ParseArchivePickle(const ZipReader& zip, const std::string& what,
                                                    uint64_t max_pickle_bytes,
                                                    const pickle::UnpicklerOptions& options);

// DATA_LOSS for a file that is not a torch.save archive or a corrupt pickle;
// FAILED_PRECONDITION for a refused pickle, another byte order, or something other
// than a dict of tensors. Messages start with `what` (usually the path).
absl::StatusOr<PickledStateDict> ParseStateDictPickle(const ZipReader& zip, const std::string& what,
                                                      uint64_t max_pickle_bytes);

// What load_state_dict(strict=True) would say of a state dict whose tensors have
// the shapes `given` (by key) against a module's `expected` ones: "" when they are
// the same keys and shapes, else "missing key(s) in the state dict: "a", ...;
// unexpected key(s) in the state dict: ...; size mismatch for k: the checkpoint has
// [..], <against> [..]" (at most 20 of each, then how many more keys).
std::string StateDictMismatch(const std::map<std::string, std::vector<int64_t>>& expected,
                              const std::map<std::string, std::vector<int64_t>>& given,
                              const std::string& against);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_CHECKPOINT_STATE_DICT_PARSER_H_
