#include "server/checkpoint/torchscript_archive.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

// Largest code record read (the code of torchvision's biggest models is < 1 MiB).
constexpr uint64_t kMaxCodeBytes = 64ull << 20;

}  // namespace

bool HasTorchScriptCode(const ZipReader& zip) {
  for (const ZipReader::Entry& e : zip.entries()) {
    if (absl::StrContains(e.name, "/code/") || absl::EndsWith(e.name, "/constants.pkl")) {
      return true;
    }
  }
  return false;
}

absl::Status CheckTorchScriptArchive(const ZipReader& zip, const std::string& what) {
  if (!HasTorchScriptCode(zip)) {
    return absl::FailedPreconditionError(
        absl::StrCat(what,
                     " is not a TorchScript archive (no code/ records); a file written by "
                     "torch.save(model.state_dict()) is format STATE_DICT"));
  }
  for (const ZipReader::Entry& e : zip.entries()) {
    if (!absl::StrContains(e.name, "/code/") || !absl::EndsWith(e.name, ".py")) continue;
    ASSIGN_OR_RETURN(std::string text, zip.ReadToString(e, kMaxCodeBytes, /*allow_deflated=*/true));
    if (absl::StrContains(text, "def __setstate__(")) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": TorchScript record '", e.name,
                       "' defines __setstate__, which LibTorch would run while loading the file; "
                       "such modules are served only with --trust_torchscript"));
    }
  }
  return absl::OkStatus();
}

}  // namespace modelserver
