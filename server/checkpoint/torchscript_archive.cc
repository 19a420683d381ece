#include "server/checkpoint/torchscript_archive.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

// Largest code record read (the code of torchvision's biggest models is < 1 MiB).
constexpr uint64_t kMaxCodeBytes = 64ull << 20;

// Whether a record may be read by LibTorch as code: any record in a folder named
// "code" in any case (its zip lookup ignores case), whatever its extension.
bool IsCodeRecord(absl::string_view name) {
  std::string lower = absl::AsciiStrToLower(name);
  return absl::StartsWith(lower, "code/") || absl::StrContains(lower, "/code/");
}

bool IsIdentifierChar(char c) { return absl::ascii_isalnum(c) || c == '_'; }

// Whether `text` has the tokens `def __setstate__` however they are spaced.
bool DefinesSetState(absl::string_view text) {
  constexpr absl::string_view kName = "__setstate__";
  for (size_t at = text.find(kName); at != absl::string_view::npos; at = text.find(kName, at + 1)) {
    if (at + kName.size() < text.size() && IsIdentifierChar(text[at + kName.size()])) continue;
    // Walk back over blanks and continuations to the token before the name.
    size_t end = at;
    while (end > 0) {
      char c = text[end - 1];
      if (c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\r') {
        --end;
      } else if (c == '\n' && end >= 2 && text[end - 2] == '\\') {
        end -= 2;
      } else if (c == '\n' && end >= 3 && text[end - 2] == '\r' && text[end - 3] == '\\') {
        end -= 3;
      } else {
        break;
      }
    }
    if (end >= 3 && text.substr(end - 3, 3) == "def" &&
        (end == 3 || !IsIdentifierChar(text[end - 4]))) {
      return true;
    }
  }
  return false;
}

// Whether a code record holds one of torch's own quantized module classes
// (torch.ao.nn.quantized / intrinsic, torch.nn.quantized in older torch), whose
// __setstate__ repacks weights with quantized::*_prepack. Such records pass the
// text check: the file is loaded in the sandboxed worker (the boundary), and the
// operator allowlist then checks what the method calls.
bool IsTorchQuantizedModuleRecord(absl::string_view name) {
  std::string lower = absl::AsciiStrToLower(name);
  for (absl::string_view package :
       {"/__torch__/torch/ao/nn/quantized/", "/__torch__/torch/ao/nn/intrinsic/quantized/",
        "/__torch__/torch/nn/quantized/", "/__torch__/torch/nn/intrinsic/quantized/"}) {
    if (absl::StrContains(lower, package)) return true;
  }
  return false;
}

}  // namespace

bool HasTorchScriptCode(const ZipReader& zip) {
  for (const ZipReader::Entry& e : zip.entries()) {
    if (IsCodeRecord(e.name) || absl::EndsWith(absl::AsciiStrToLower(e.name), "/constants.pkl")) {
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
    if (!IsCodeRecord(e.name) || IsTorchQuantizedModuleRecord(e.name)) continue;
    ASSIGN_OR_RETURN(std::string text, zip.ReadToString(e, kMaxCodeBytes, /*allow_deflated=*/true));
    if (DefinesSetState(text)) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": TorchScript record '", e.name,
                       "' defines __setstate__, which LibTorch would run while loading the file; "
                       "such modules are served only with --trust_torchscript"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> TorchScriptFormatVersion(const ZipReader& zip) {
  if (zip.entries().empty()) return absl::NotFoundError("an empty archive has no version record");
  const std::string& first = zip.entries().front().name;
  const std::string folder = first.substr(0, first.find('/') + 1);  // "" without a folder
  auto find = [&](absl::string_view name) -> const ZipReader::Entry* {
    const std::string want = absl::StrCat(folder, name);
    for (const ZipReader::Entry& e : zip.entries()) {
      if (absl::EqualsIgnoreCase(e.name, want)) return &e;
    }
    return nullptr;
  };
  const ZipReader::Entry* found = find(".data/version");
  if (found == nullptr) found = find("version");
  if (found == nullptr) return absl::NotFoundError("the archive has no version record");
  ASSIGN_OR_RETURN(std::string text, zip.ReadToString(*found, 64));
  absl::string_view digits = absl::StripAsciiWhitespace(text);
  uint64_t version = 0;
  if (digits.empty() || digits.size() > 19 || !absl::SimpleAtoi(digits, &version)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the version record ", found->name, " holds no number"));
  }
  return version;
}

}  // namespace modelserver
