#include "server/checkpoint/checkpoint_check.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/state_dict_parser.h"

namespace modelserver {

absl::Status CheckCheckpointFile(const std::string& path, ModelFormat format) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  if (format != ModelFormat::kStateDict) return absl::OkStatus();
  ASSIGN_OR_RETURN(PickledStateDict sd, ParseStateDictPickle(*zip, path, 64ull << 20));
  for (const pickle::Value* s : sd.pickled->storages()) {
    auto e = zip->Find(absl::StrCat(sd.prefix, "data/", s->storage.key));
    if (!e.ok()) {
      return absl::DataLossError(absl::StrCat("storage '", s->storage.key, "' has no record"));
    }
    if ((*e)->size !=
        static_cast<uint64_t>(s->storage.numel) * pickle::StorageElementSize(s->storage.type)) {
      return absl::DataLossError(absl::StrCat("storage '", s->storage.key, "' has a short record"));
    }
  }
  return absl::OkStatus();
}

}  // namespace modelserver
