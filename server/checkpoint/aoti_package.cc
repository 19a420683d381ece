#include "server/checkpoint/aoti_package.h"

#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

// The path of `name` below data/aotinductor/ (directly, or under one root
// folder), or "" when it is not there.
absl::string_view BelowAoti(absl::string_view name) {
  constexpr absl::string_view kDir = "data/aotinductor/";
  if (absl::StartsWith(name, kDir)) return name.substr(kDir.size());
  const size_t slash = name.find('/');
  if (slash != absl::string_view::npos && absl::StartsWith(name.substr(slash + 1), kDir)) {
    return name.substr(slash + 1 + kDir.size());
  }
  return {};
}

struct ModelFiles {
  const ZipReader::Entry* library = nullptr;
  const ZipReader::Entry* metadata = nullptr;
};

}  // namespace

absl::StatusOr<AotiPackage> ReadAotiPackage(const ZipReader& zip, const AotiPackageLimits& limits) {
  std::map<std::string, ModelFiles> models;
  for (const ZipReader::Entry& e : zip.entries()) {
    const absl::string_view rest = BelowAoti(e.name);
    const size_t slash = rest.find('/');
    if (slash == absl::string_view::npos || slash == 0) continue;
    const absl::string_view file = rest.substr(slash + 1);
    if (file.find('/') != absl::string_view::npos) continue;  // kernels' binaries, ...
    ModelFiles& f = models[std::string(rest.substr(0, slash))];
    if (absl::EndsWith(file, ".so")) {
      if (f.library != nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the package's model '", rest.substr(0, slash), "' has two libraries (",
            f.library->name, ", ", e.name, "); a package of aoti_compile_and_package has one"));
      }
      f.library = &e;
    } else if (absl::EndsWith(file, "_metadata.json")) {
      f.metadata = &e;
    }
  }
  if (models.empty()) {
    return absl::FailedPreconditionError(
        "not an AOTInductor package: no data/aotinductor/<model>/ in the archive (a "
        "torch._inductor.aoti_compile_and_package .pt2 has one)");
  }
  auto chosen = models.begin();
  if (models.size() > 1) {
    chosen = models.find("model");
    if (chosen == models.end()) {
      std::vector<std::string> names;
      for (const auto& [name, f] : models) names.push_back(name);
      return absl::FailedPreconditionError(
          absl::StrCat("the package holds several models (", absl::StrJoin(names, ", "),
                       ") and none is named 'model': which one to serve is not clear"));
    }
  }
  AotiPackage package;
  package.model = chosen->first;
  package.library = chosen->second.library;
  if (package.library == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("the package's model '", package.model,
                     "' has no compiled library (.so): a package of C++ sources "
                     "(aot_inductor.package_cpp_only) must be compiled first"));
  }
  if (package.library->method != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(package.library->name, " is stored compressed; torch stores it as is"));
  }
  if (package.library->size > limits.max_library_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("the package's library is ",
                                                     package.library->size, " bytes; at most ",
                                                     limits.max_library_bytes));
  }
  if (const ZipReader::Entry* meta = chosen->second.metadata) {
    ASSIGN_OR_RETURN(std::string text, zip.ReadToString(*meta, limits.max_metadata_bytes));
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::DataLossError(absl::StrCat(meta->name, " is not a JSON object"));
    }
    if (const auto it = j.find("AOTI_DEVICE_KEY"); it != j.end()) {
      if (!it->is_string()) {
        return absl::DataLossError(absl::StrCat(meta->name, ": AOTI_DEVICE_KEY is not a string"));
      }
      package.device = it->get<std::string>();
    }
  }
  return package;
}

}  // namespace modelserver
