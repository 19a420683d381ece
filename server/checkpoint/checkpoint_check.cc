#include "server/checkpoint/checkpoint_check.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/checkpoint/aoti_package.h"
#include "server/checkpoint/exported_program.h"
#include "server/checkpoint/module_tree.h"
#include "server/checkpoint/state_dict_parser.h"
#include "server/checkpoint/torchscript_archive.h"

namespace modelserver {

absl::Status CheckCheckpointFile(const std::string& path, ModelFormat format) {
  ASSIGN_OR_RETURN(std::unique_ptr<ZipReader> zip, ZipReader::Open(path));
  const bool torchscript = HasTorchScriptCode(*zip);
  if (format == ModelFormat::kTorchScript) {
    if (torchscript) return absl::OkStatus();
    return absl::InvalidArgumentError(
        "the file is not a TorchScript archive (it has no code/ records): a torch.save file "
        "is format STATE_DICT (a state dict) or PICKLED_MODULE (a whole module)");
  }
  if (torchscript) {
    return absl::InvalidArgumentError(
        absl::StrCat("the file is a TorchScript archive (torch.jit.save), not ",
                     ModelFormatName(format), "; upload it with format TORCHSCRIPT"));
  }
  if (format == ModelFormat::kExportedProgram) {
    return exported::ReadExportedProgram(std::move(zip), "the file").status();
  }
  const exported::Pt2Kind kind = exported::ClassifyPt2(*zip);
  if (format == ModelFormat::kAotiPackage) {
    // The structure, torch-free; its worker opens the library.
    if (kind == exported::Pt2Kind::kAotiPackage) return ReadAotiPackage(*zip).status();
    return absl::InvalidArgumentError(absl::StrCat(
        "the file is not an AOTInductor package (no data/aotinductor/<model>/ records)",
        kind == exported::Pt2Kind::kExportedProgram
            ? ": it is a torch.export program, format EXPORTED_PROGRAM"
            : ""));
  }
  if (kind == exported::Pt2Kind::kAotiPackage) {
    return absl::InvalidArgumentError(
        absl::StrCat("the file is an AOTInductor package (aoti_compile_and_package), not ",
                     ModelFormatName(format), "; upload it with format AOTI_PACKAGE"));
  }
  if (kind != exported::Pt2Kind::kNotPt2) {
    return absl::InvalidArgumentError(
        absl::StrCat("the file is a torch.export archive (.pt2), not ", ModelFormatName(format),
                     "; upload it with format EXPORTED_PROGRAM"));
  }
  if (format == ModelFormat::kPickledModule) {
    ASSIGN_OR_RETURN(PickledModuleTree tree, ParsePickledModule(*zip, "the file"));
    return absl::OkStatus();
  }
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
