#include "server/model/checkpoint_check.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/model/unpickler.h"
#include "server/model/zip_reader.h"
#include "server/util/status_macros.h"

namespace modelserver {

absl::Status CheckCheckpointFile(const std::string& path, ModelFormat format) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  if (format != ModelFormat::kStateDict) return absl::OkStatus();
  std::string prefix;
  for (const ZipReader::Entry& e : zip->entries()) {
    if (absl::EndsWith(e.name, "/data.pkl") && e.name.find('/') == e.name.size() - 9) {
      prefix = e.name.substr(0, e.name.size() - 8);
    }
  }
  if (prefix.empty()) {
    return absl::DataLossError(
        "zip archive has no <name>/data.pkl record; it was not written by "
        "torch.save");
  }
  ASSIGN_OR_RETURN(const ZipReader::Entry* pkl_entry, zip->Find(prefix + "data.pkl"));
  ASSIGN_OR_RETURN(std::string pkl, zip->ReadToString(*pkl_entry, 64ull << 20));
  pickle::Unpickler unpickler{pickle::UnpicklerOptions{}};
  ASSIGN_OR_RETURN(std::unique_ptr<pickle::Unpickled> pickled, unpickler.Parse(pkl));
  const pickle::Value* root = pickled->root();
  if (root->kind != pickle::Kind::kDict) {
    return absl::FailedPreconditionError(
        absl::StrCat("file holds a ", pickle::KindName(root->kind), ", not a state dict"));
  }
  for (const auto& [k, v] : root->entries) {
    if (k->kind != pickle::Kind::kString || v->kind != pickle::Kind::kTensor) {
      return absl::FailedPreconditionError("state dict holds something other than named tensors");
    }
  }
  for (const pickle::Value* s : pickled->storages()) {
    auto e = zip->Find(absl::StrCat(prefix, "data/", s->storage.key));
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
