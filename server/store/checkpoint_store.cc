#include "server/store/checkpoint_store.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/util/sha256.h"
#include "server/util/status_macros.h"

namespace modelserver {
namespace fs = std::filesystem;

namespace {

bool ParseVersionDir(const std::string& name, int64_t* version) {
  if (name.empty() || name.size() > 18 || name[0] == '0') return false;
  for (char c : name) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(name, version) && *version > 0;
}

absl::StatusOr<ModelFormat> ParseFormat(const std::string& s) {
  if (s == "STATE_DICT") return ModelFormat::kStateDict;
  if (s == "TORCHSCRIPT") return ModelFormat::kTorchScript;
  if (s == "PICKLED_MODULE") return ModelFormat::kPickledModule;
  return absl::DataLossError(
      absl::StrCat("manifest format '", s, "' is not STATE_DICT, TORCHSCRIPT or PICKLED_MODULE"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointStore>> CheckpointStore::Create(const Options& options) {
  if (options.root.empty()) return absl::InvalidArgumentError("--store is empty");
  std::error_code ec;
  if (options.create_root) fs::create_directories(options.root, ec);
  const fs::path canonical = fs::canonical(options.root, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint store ", options.root, " is not accessible: ", ec.message()));
  }
  if (!fs::is_directory(canonical)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint store ", options.root, " is not a directory"));
  }
  return std::unique_ptr<CheckpointStore>(new CheckpointStore(canonical.string()));
}

absl::Status CheckpointStore::ValidateModelName(absl::string_view name) {
  auto ok_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  bool valid = !name.empty() && name.size() <= 128 && ok_char(name[0]);
  for (char c : name) valid = valid && (ok_char(c) || c == '.' || c == '_' || c == '-');
  if (!valid) {
    std::string shown;
    for (char c : name.substr(0, 140)) shown.push_back((c >= 0x20 && c < 0x7f) ? c : '?');
    return absl::InvalidArgumentError(
        absl::StrCat("model name '", shown,
                     "' is invalid: expected 1 to 128 characters of [A-Za-z0-9._-] starting "
                     "with a letter or digit"));
  }
  return absl::OkStatus();
}

const char* CheckpointStore::FileNameFor(ModelFormat format) {
  switch (format) {
    case ModelFormat::kStateDict:
      return "model_weights.pth";
    case ModelFormat::kPickledModule:
      return "model.pth";
    case ModelFormat::kTorchScript:
      return "model.pt";
    case ModelFormat::kUnspecified:
      break;
  }
  return "";
}

absl::StatusOr<std::vector<std::string>> CheckpointStore::ListModels() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && ValidateModelName(name).ok()) names.push_back(name);
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", root_, ": ", ec.message()));
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<std::vector<int64_t>> CheckpointStore::ListVersions(absl::string_view name) const {
  RETURN_IF_ERROR(ValidateModelName(name));
  std::vector<int64_t> versions;
  const fs::path dir = fs::path(root_) / std::string(name);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return versions;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    int64_t v = 0;
    if (entry.is_directory() && ParseVersionDir(entry.path().filename().string(), &v)) {
      versions.push_back(v);
    }
  }
  if (ec)
    return absl::InternalError(absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
  std::sort(versions.begin(), versions.end());
  return versions;
}

absl::StatusOr<Manifest> CheckpointStore::ParseManifest(absl::string_view text) {
  Manifest m;
  m.present = true;
  try {
    const nlohmann::json j = nlohmann::json::parse(text.begin(), text.end());
    if (!j.is_object()) return absl::DataLossError("manifest.json is not a JSON object");
    auto str = [&](const char* key, std::string* out) {
      if (j.contains(key) && j[key].is_string()) *out = j[key].get<std::string>();
    };
    std::string format;
    str("format", &format);
    ASSIGN_OR_RETURN(m.format, ParseFormat(format));
    str("architecture", &m.architecture);
    str("file", &m.file);
    str("sha256", &m.sha256);
    str("created_at", &m.created_at);
    str("source", &m.source);
    if (j.contains("size_bytes") && j["size_bytes"].is_number_integer()) {
      m.size_bytes = j["size_bytes"].get<int64_t>();
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("manifest.json is not valid JSON: ", e.what()));
  }
  if (m.file.empty()) m.file = FileNameFor(m.format);
  if (m.file != FileNameFor(m.format)) {
    return absl::DataLossError(absl::StrCat("manifest.json names file '", m.file, "', expected '",
                                            FileNameFor(m.format), "' for ",
                                            ModelFormatName(m.format)));
  }
  return m;
}

absl::StatusOr<StoreVersion> CheckpointStore::Resolve(absl::string_view name,
                                                      int64_t version) const {
  RETURN_IF_ERROR(ValidateModelName(name));
  if (version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("version ", version, " is negative"));
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(name));
  if (versions.empty()) {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' has no version in the store ", root_));
  }
  if (version == 0) version = versions.back();
  if (!std::binary_search(versions.begin(), versions.end(), version)) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version ", version,
                                            " in the store (newest is ", versions.back(), ")"));
  }
  StoreVersion v;
  v.model_name = std::string(name);
  v.version = version;
  v.dir = (fs::path(root_) / v.model_name / std::to_string(version)).string();
  const fs::path manifest_path = fs::path(v.dir) / "manifest.json";
  std::error_code ec;
  if (fs::exists(manifest_path, ec)) {
    std::ifstream in(manifest_path);
    std::stringstream text;
    text << in.rdbuf();
    auto m = ParseManifest(text.str());
    if (!m.ok()) {
      return absl::DataLossError(absl::StrCat(manifest_path.string(), ": ", m.status().message()));
    }
    v.manifest = *std::move(m);
  } else {
    // Hand-copied version: the format comes from the file name.
    for (ModelFormat f :
         {ModelFormat::kStateDict, ModelFormat::kPickledModule, ModelFormat::kTorchScript}) {
      if (fs::exists(fs::path(v.dir) / FileNameFor(f), ec)) {
        if (v.manifest.format != ModelFormat::kUnspecified) {
          return absl::FailedPreconditionError(
              absl::StrCat(v.dir, " holds more than one checkpoint file and no manifest.json"));
        }
        v.manifest.format = f;
        v.manifest.file = FileNameFor(f);
      }
    }
    if (v.manifest.format == ModelFormat::kUnspecified) {
      return absl::FailedPreconditionError(absl::StrCat(
          v.dir, " has neither manifest.json nor a model_weights.pth, model.pth or model.pt"));
    }
  }
  v.path = (fs::path(v.dir) / v.manifest.file).string();
  const fs::path real = fs::canonical(v.path, ec);
  if (ec) {
    return absl::DataLossError(
        absl::StrCat("checkpoint file ", v.path, " is missing: ", ec.message()));
  }
  const std::string prefix = root_ + "/";
  if (!absl::StartsWith(real.string(), prefix)) {
    return absl::PermissionDeniedError(absl::StrCat("checkpoint file ", v.path, " resolves to ",
                                                    real.string(), ", outside the store"));
  }
  return v;
}

absl::StatusOr<bool> CheckpointStore::Verify(const StoreVersion& v) const {
  std::error_code ec;
  const uintmax_t size = fs::file_size(v.path, ec);
  if (ec) return absl::DataLossError(absl::StrCat("cannot stat ", v.path, ": ", ec.message()));
  if (v.manifest.size_bytes >= 0 && static_cast<int64_t>(size) != v.manifest.size_bytes) {
    return absl::DataLossError(absl::StrCat(v.path, " has ", size, " bytes, manifest says ",
                                            v.manifest.size_bytes,
                                            "; the file is truncated or "
                                            "was changed"));
  }
  if (v.manifest.sha256.empty()) return false;
  ASSIGN_OR_RETURN(std::string sha, Sha256File(v.path));
  if (sha != v.manifest.sha256) {
    return absl::DataLossError(absl::StrCat(v.path, " has sha256 ", sha, ", manifest says ",
                                            v.manifest.sha256, "; the file is corrupt"));
  }
  return true;
}

}  // namespace modelserver
