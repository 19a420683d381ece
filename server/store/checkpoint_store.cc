#include "server/store/checkpoint_store.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/npy.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/checkpoint/checkpoint_check.h"
#include "server/checkpoint/exported_program.h"
#include "server/checkpoint/zip_reader.h"

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
  if (s == "EXPORTED_PROGRAM") return ModelFormat::kExportedProgram;
  if (s == "AOTI_PACKAGE") return ModelFormat::kAotiPackage;
  return absl::DataLossError(absl::StrCat(
      "manifest format '", s,
      "' is not STATE_DICT, TORCHSCRIPT, PICKLED_MODULE, EXPORTED_PROGRAM or AOTI_PACKAGE"));
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

const char* CheckpointStore::ArchitectureFileFor(const std::string& path) {
  return absl::EndsWith(path, ".pt2") ? kArchitectureProgramFile : kArchitectureFile;
}

const char* CheckpointStore::FileNameFor(ModelFormat format) {
  switch (format) {
    case ModelFormat::kStateDict:
      return "model_weights.pth";
    case ModelFormat::kPickledModule:
      return "model.pth";
    case ModelFormat::kTorchScript:
      return "model.pt";
    case ModelFormat::kExportedProgram:
    case ModelFormat::kAotiPackage:
      return "model.pt2";
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
    str("precision", &m.precision);
    str("quantized_engine", &m.quantized_engine);
    str("architecture_file", &m.architecture_file);
    str("architecture_sha256", &m.architecture_sha256);
    if (!m.architecture_file.empty() && m.architecture_file != kArchitectureFile &&
        m.architecture_file != kArchitectureProgramFile) {
      return absl::DataLossError(absl::StrCat(
          "manifest.json names architecture_file '", m.architecture_file, "', expected '",
          kArchitectureFile, "' or '", kArchitectureProgramFile, "'"));
    }
    if (j.contains("preprocess") && j["preprocess"].is_object()) {
      m.preprocess = j["preprocess"].dump();
    }
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

absl::StatusOr<Manifest> CheckpointStore::ReadManifest(const std::string& dir) {
  const fs::path manifest_path = fs::path(dir) / "manifest.json";
  std::error_code ec;
  if (fs::exists(manifest_path, ec)) {
    std::ifstream in(manifest_path);
    std::stringstream text;
    text << in.rdbuf();
    auto m = ParseManifest(text.str());
    if (!m.ok()) {
      return absl::DataLossError(absl::StrCat(manifest_path.string(), ": ", m.status().message()));
    }
    return *std::move(m);
  }
  // Hand-copied version: the format comes from the file name.
  Manifest manifest;
  for (ModelFormat f : {ModelFormat::kStateDict, ModelFormat::kPickledModule,
                        ModelFormat::kTorchScript, ModelFormat::kExportedProgram}) {
    if (fs::exists(fs::path(dir) / FileNameFor(f), ec)) {
      if (manifest.format != ModelFormat::kUnspecified) {
        return absl::FailedPreconditionError(
            absl::StrCat(dir, " holds more than one checkpoint file and no manifest.json"));
      }
      manifest.format = f;
      manifest.file = FileNameFor(f);
    }
  }
  // A model.pt2 is a program or a compiled package: told by its contents.
  if (manifest.format == ModelFormat::kExportedProgram) {
    auto zip = ZipReader::Open((fs::path(dir) / manifest.file).string());
    if (zip.ok() && exported::ClassifyPt2(**zip) == exported::Pt2Kind::kAotiPackage) {
      manifest.format = ModelFormat::kAotiPackage;
    }
  }
  if (manifest.format == ModelFormat::kUnspecified) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " has neither manifest.json nor a model_weights.pth, model.pth or model.pt"));
  }
  return manifest;
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
  // Every file of the version is read through its resolved path, and only when
  // that lies in the store: a symlink (of the file or of the directory) out of
  // the store is refused, whatever it points at.
  RETURN_IF_ERROR(ContainedFile(v, "manifest.json", false).status());
  ASSIGN_OR_RETURN(v.manifest, ReadManifest(v.dir));
  ASSIGN_OR_RETURN(v.path, ContainedFile(v, v.manifest.file, true));
  ASSIGN_OR_RETURN(v.labels_path, ContainedFile(v, kLabelsFile, false));
  ASSIGN_OR_RETURN(v.calibration_path, ContainedFile(v, kCalibrationFile, false));
  // A compiled package's program (its input shapes), named by the manifest or just present.
  if (v.manifest.format == ModelFormat::kAotiPackage) {
    ASSIGN_OR_RETURN(v.architecture_path, ContainedFile(v,
                                                        v.manifest.architecture_file.empty()
                                                            ? std::string(kArchitectureProgramFile)
                                                            : v.manifest.architecture_file,
                                                        !v.manifest.architecture_file.empty()));
  }
  // A template beside a state dict, named by the manifest or just present.
  if (v.manifest.format == ModelFormat::kStateDict) {
    if (!v.manifest.architecture_file.empty()) {
      ASSIGN_OR_RETURN(v.architecture_path, ContainedFile(v, v.manifest.architecture_file, true));
    } else {
      ASSIGN_OR_RETURN(v.architecture_path, ContainedFile(v, kArchitectureFile, false));
      if (v.architecture_path.empty()) {
        ASSIGN_OR_RETURN(v.architecture_path, ContainedFile(v, kArchitectureProgramFile, false));
      }
    }
  }
  return v;
}

absl::StatusOr<std::string> CheckpointStore::ContainedFile(const StoreVersion& v,
                                                           const std::string& file,
                                                           bool required) const {
  const fs::path path = fs::path(v.dir) / file;
  std::error_code ec;
  const fs::file_status link = fs::symlink_status(path, ec);
  if (ec || !fs::exists(link)) {
    if (!required) return std::string();
    return absl::DataLossError(
        absl::StrCat(file, " of model '", v.model_name, "' version ", v.version, " is missing"));
  }
  const fs::path real = fs::canonical(path, ec);
  if (ec) {
    return absl::DataLossError(absl::StrCat(file, " of model '", v.model_name, "' version ",
                                            v.version, " cannot be resolved (", ec.message(),
                                            "): a dangling symlink?"));
  }
  if (!absl::StartsWith(real.string(), root_ + "/")) {
    return absl::PermissionDeniedError(
        absl::StrCat(file, " of model '", v.model_name, "' version ", v.version, " resolves to ",
                     real.string(), ", outside the store; symlinks out of the store are refused"));
  }
  if (!fs::is_regular_file(real, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        file, " of model '", v.model_name, "' version ", v.version, " is not a regular file"));
  }
  return real.string();
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
  if (!v.architecture_path.empty() && !v.manifest.architecture_sha256.empty()) {
    ASSIGN_OR_RETURN(std::string arch_sha, Sha256File(v.architecture_path));
    if (arch_sha != v.manifest.architecture_sha256) {
      return absl::DataLossError(absl::StrCat(v.architecture_path, " has sha256 ", arch_sha,
                                              ", manifest says ", v.manifest.architecture_sha256,
                                              "; the file is corrupt"));
    }
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

namespace modelserver {
namespace {

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  const int rc = fsync(fd);
  const int err = errno;
  close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(err)));
  return absl::OkStatus();
}

std::string NowRfc3339() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
}

}  // namespace

std::string CheckpointStore::ManifestJson(const Manifest& m) {
  nlohmann::json j;
  j["format"] = ModelFormatName(m.format);
  j["architecture"] = m.architecture;
  j["file"] = m.file;
  j["sha256"] = m.sha256;
  j["size_bytes"] = m.size_bytes;
  j["created_at"] = m.created_at;
  j["source"] = m.source;
  if (!m.precision.empty()) j["precision"] = m.precision;
  if (!m.quantized_engine.empty()) j["quantized_engine"] = m.quantized_engine;
  if (!m.preprocess.empty()) {
    j["preprocess"] = nlohmann::json::parse(m.preprocess, nullptr, /*allow_exceptions=*/false);
  }
  if (!m.architecture_file.empty()) {
    j["architecture_file"] = m.architecture_file;
    j["architecture_sha256"] = m.architecture_sha256;
  }
  return j.dump(2) + "\n";
}

absl::StatusOr<std::unique_ptr<PendingVersion>> CheckpointStore::BeginVersion(
    const NewVersion& v) const {
  RETURN_IF_ERROR(ValidateModelName(v.model_name));
  if (v.format == ModelFormat::kUnspecified) {
    return absl::InvalidArgumentError(
        "checkpoint format is unspecified, expected STATE_DICT, TORCHSCRIPT or PICKLED_MODULE");
  }
  const fs::path model_dir = fs::path(root_) / v.model_name;
  std::error_code ec;
  std::string templ;
  bool made = false;
  // Another writer's failed version may remove the (empty) model directory
  // between the two calls: try again then.
  for (int attempt = 0; attempt < 3 && !made && !ec; ++attempt) {
    fs::create_directories(model_dir, ec);
    templ = (model_dir / ".staging-XXXXXX").string();
    made = !ec && mkdtemp(templ.data()) != nullptr;
  }
  if (!made) {
    const int err = ec ? ec.value() : errno;
    const std::string why = ec ? ec.message() : std::strerror(errno);
    if (err == EROFS || err == EACCES || err == EPERM) {  // how the store is mounted
      return absl::FailedPreconditionError(
          absl::StrCat("the store cannot be written (", model_dir.string(), ": ", why,
                       "); mount it writable, or run this server with --read_only"));
    }
    return absl::InternalError(
        absl::StrCat("cannot create a staging directory in ", model_dir.string(), ": ", why));
  }
  chmod(templ.c_str(), 0755);
  std::unique_ptr<PendingVersion> p(new PendingVersion());
  p->store_ = this;
  p->model_name_ = v.model_name;
  p->staging_dir_ = templ;
  p->lock_fd_ = open(templ.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (p->lock_fd_ >= 0) (void)flock(p->lock_fd_, LOCK_EX | LOCK_NB);
  p->file_path_ = (fs::path(templ) / FileNameFor(v.format)).string();
  p->manifest_.present = true;
  p->manifest_.format = v.format;
  p->manifest_.architecture = v.architecture;
  p->manifest_.file = FileNameFor(v.format);
  p->validate_ = v.validate;
  p->expected_arch_sha256_ = v.expected_architecture_sha256;
  p->manifest_.source = v.source;
  p->manifest_.precision = v.precision;
  p->manifest_.preprocess = v.preprocess;
  p->manifest_.quantized_engine = v.quantized_engine;
  p->max_bytes_ = v.max_bytes;
  p->expected_sha256_ = v.expected_sha256;
  p->expected_size_ = v.expected_size;
  return p;
}

PendingVersion::~PendingVersion() {
  if (fd_ >= 0) close(fd_);
  if (arch_fd_ >= 0) close(arch_fd_);
  if (calib_fd_ >= 0) close(calib_fd_);
  if (lock_fd_ >= 0) close(lock_fd_);  // releases the flock
  if (!committed_ && !staging_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(staging_dir_, ec);
    // A model directory this version created and nothing else uses goes too, so
    // a refused upload leaves no model behind. rmdir only removes an empty
    // directory: another writer's staging directory or a version keeps it.
    rmdir(fs::path(staging_dir_).parent_path().c_str());
  }
}

namespace {

absl::Status WriteAll(int fd, absl::string_view chunk, const std::string& path) {
  const char* p = chunk.data();
  size_t left = chunk.size();
  while (left > 0) {
    const ssize_t n = write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("write ", path, ": ", std::strerror(errno)));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Another version's file at `target` in a staging directory: hard-linked (same
// file system, same bytes), else copied. `what` names it in the error.
absl::Status LinkOrCopy(const std::string& path, const std::string& target, const char* what) {
  if (link(path.c_str(), target.c_str()) == 0) return absl::OkStatus();
  std::error_code ec;
  fs::copy_file(path, target, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot copy ", what, ": ", ec.message()));
  return absl::OkStatus();
}

// Uploaded calibration samples: a float32 .npy with at least one sample (read
// whole: at most kMaxCalibrationBytes). What the model takes is checked at load.
absl::Status CheckCalibrationFile(const std::string& path, uint64_t size) {
  if (size > static_cast<uint64_t>(kMaxCalibrationBytes)) {
    return absl::InvalidArgumentError(absl::StrCat("the calibration samples have ", size,
                                                   " bytes; at most ", kMaxCalibrationBytes,
                                                   " are read (a few dozen samples are enough)"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  absl::StatusOr<HostTensor> t = ParseNpy(bytes.str());
  if (!t.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the calibration samples are not a .npy file: ", t.status().message()));
  }
  if (t->dtype != DType::kFloat32 || t->shape.empty() || t->shape[0] < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the calibration samples are ", DTypeName(t->dtype), " ", ShapeString(t->shape),
        "; upload float32 [samples, ...] with at least one sample"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PendingVersion::CheckBesideLimit(size_t more, const char* what) const {
  if (max_bytes_ > 0 && bytes_ + arch_bytes_ + calib_bytes_ + more > max_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "checkpoint and ", what, " are larger than the upload limit of ", max_bytes_, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status PendingVersion::AppendCalibration(absl::string_view chunk) {
  RETURN_IF_ERROR(CheckBesideLimit(chunk.size(), "calibration samples"));
  const std::string path = (fs::path(staging_dir_) / CheckpointStore::kCalibrationFile).string();
  if (calib_fd_ < 0) {
    calib_fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (calib_fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("cannot create calibration.npy: ", std::strerror(errno)));
    }
  }
  RETURN_IF_ERROR(WriteAll(calib_fd_, chunk, path));
  calib_bytes_ += chunk.size();
  return absl::OkStatus();
}

absl::Status PendingVersion::AddCalibrationFrom(const std::string& path) {
  return LinkOrCopy(path, (fs::path(staging_dir_) / CheckpointStore::kCalibrationFile).string(),
                    "calibration.npy");
}

absl::Status PendingVersion::AppendArchitecture(absl::string_view chunk) {
  RETURN_IF_ERROR(CheckBesideLimit(chunk.size(), "architecture"));
  const std::string path = (fs::path(staging_dir_) / CheckpointStore::kArchitectureFile).string();
  if (arch_fd_ < 0) {
    arch_fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (arch_fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("cannot create the architecture file: ", std::strerror(errno)));
    }
    arch_sha_ = std::make_unique<Sha256>();
  }
  RETURN_IF_ERROR(WriteAll(arch_fd_, chunk, path));
  arch_sha_->Update(chunk);
  arch_bytes_ += chunk.size();
  return absl::OkStatus();
}

absl::Status PendingVersion::AddArchitectureFrom(const std::string& path) {
  arch_name_ = CheckpointStore::ArchitectureFileFor(path);
  return LinkOrCopy(path, (fs::path(staging_dir_) / arch_name_).string(), "the architecture file");
}

absl::Status PendingVersion::SetLabels(absl::string_view text) {
  const std::string path = (fs::path(staging_dir_) / CheckpointStore::kLabelsFile).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out) return absl::InternalError("cannot write labels.txt");
  return FsyncPath(path, false);
}

absl::Status PendingVersion::AddLabelsFrom(const std::string& path) {
  return LinkOrCopy(path, (fs::path(staging_dir_) / CheckpointStore::kLabelsFile).string(),
                    "labels.txt");
}

absl::Status PendingVersion::CommitArchitecture() {
  std::string path = (fs::path(staging_dir_) / arch_name_).string();
  std::string sha;
  if (arch_fd_ >= 0) {
    if (fsync(arch_fd_) != 0) {
      return absl::InternalError(
          absl::StrCat("fsync of the architecture file: ", std::strerror(errno)));
    }
    close(arch_fd_);
    arch_fd_ = -1;
    sha = arch_sha_->HexDigest();
  } else {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      if (!expected_arch_sha256_.empty()) {
        return absl::InvalidArgumentError(
            "the header announced an architecture file, but none was sent");
      }
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(sha, Sha256File(path));
    RETURN_IF_ERROR(FsyncPath(path, false));
  }
  if (manifest_.format != ModelFormat::kStateDict &&
      manifest_.format != ModelFormat::kAotiPackage) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an architecture file goes with a STATE_DICT checkpoint (its template) or an "
        "AOTI_PACKAGE (the program it was compiled from), not ",
        ModelFormatName(manifest_.format), " (a TorchScript or pickled module carries its own)"));
  }
  if (!expected_arch_sha256_.empty() && sha != expected_arch_sha256_) {
    return absl::DataLossError(absl::StrCat("received architecture file has sha256 ", sha,
                                            ", the header announced ", expected_arch_sha256_));
  }
  // A streamed template is TorchScript or an exported program: which, from its records.
  if (arch_name_ == CheckpointStore::kArchitectureFile) {
    auto zip = ZipReader::Open(path);
    if (zip.ok() && exported::ClassifyPt2(**zip) != exported::Pt2Kind::kNotPt2) {
      const std::string renamed =
          (fs::path(staging_dir_) / CheckpointStore::kArchitectureProgramFile).string();
      if (std::rename(path.c_str(), renamed.c_str()) != 0) {
        return absl::InternalError(
            absl::StrCat("cannot rename the architecture file: ", std::strerror(errno)));
      }
      arch_name_ = CheckpointStore::kArchitectureProgramFile;
      path = renamed;
    }
  }
  const bool program = arch_name_ == CheckpointStore::kArchitectureProgramFile;
  if (manifest_.format == ModelFormat::kAotiPackage && !program) {
    return absl::InvalidArgumentError(
        "the architecture file of an AOTI_PACKAGE is the torch.export program it was compiled "
        "from (torch.export.save(ep, 'program.pt2')), which gives its input shapes; this one "
        "is no .pt2 archive");
  }
  RETURN_IF_ERROR(CheckCheckpointFile(
      path, program ? ModelFormat::kExportedProgram : ModelFormat::kTorchScript));
  manifest_.architecture_file = arch_name_;
  manifest_.architecture_sha256 = sha;
  // One template on disk for every version that uses it: replace this copy by a
  // hard link to an earlier version's identical file (kept as is if linking fails).
  auto versions = store_->ListVersions(model_name_);
  for (int64_t v : versions.ok() ? *versions : std::vector<int64_t>()) {
    const fs::path dir = fs::path(store_->root()) / model_name_ / std::to_string(v);
    auto m = CheckpointStore::ReadManifest(dir.string());
    if (!m.ok() || m->architecture_sha256 != sha || m->architecture_file != arch_name_) continue;
    const std::string tmp = path + ".link";
    if (link((dir / arch_name_).c_str(), tmp.c_str()) == 0 &&
        std::rename(tmp.c_str(), path.c_str()) == 0) {
      break;
    }
    unlink(tmp.c_str());
  }
  return absl::OkStatus();
}

absl::Status PendingVersion::Append(absl::string_view chunk) {
  if (max_bytes_ > 0 && bytes_ + chunk.size() > max_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("checkpoint is larger than the upload limit of ", max_bytes_, " bytes"));
  }
  if (expected_size_ >= 0 && bytes_ + chunk.size() > static_cast<uint64_t>(expected_size_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("upload is larger than its announced size_bytes ", expected_size_));
  }
  if (fd_ < 0) {
    fd_ = open(file_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("cannot create ", file_path_, ": ", std::strerror(errno)));
    }
    sha_ = std::make_unique<Sha256>();
  }
  RETURN_IF_ERROR(WriteAll(fd_, chunk, file_path_));
  sha_->Update(chunk);
  bytes_ += chunk.size();
  return absl::OkStatus();
}

absl::StatusOr<StoreVersion> PendingVersion::Commit() {
  if (committed_) return absl::FailedPreconditionError("version already committed");
  std::string sha;
  if (fd_ >= 0) {
    if (fsync(fd_) != 0) {
      return absl::InternalError(absl::StrCat("fsync ", file_path_, ": ", std::strerror(errno)));
    }
    close(fd_);
    fd_ = -1;
    sha = sha_->HexDigest();
  } else {
    // Written through file_path() by the caller (SaveModel), or an empty upload.
    std::error_code ec;
    if (!fs::exists(file_path_, ec)) {
      return absl::InvalidArgumentError("the checkpoint is empty: no bytes were sent");
    }
    ASSIGN_OR_RETURN(sha, Sha256File(file_path_));
    RETURN_IF_ERROR(FsyncPath(file_path_, false));
    std::error_code ec2;
    bytes_ = fs::file_size(file_path_, ec2);
  }
  if (expected_size_ >= 0 && bytes_ != static_cast<uint64_t>(expected_size_)) {
    return absl::DataLossError(
        absl::StrCat("received ", bytes_, " bytes, the header announced ", expected_size_));
  }
  if (!expected_sha256_.empty() && sha != expected_sha256_) {
    return absl::DataLossError(absl::StrCat("received data has sha256 ", sha,
                                            ", the header announced ", expected_sha256_));
  }
  RETURN_IF_ERROR(CheckCheckpointFile(file_path_, manifest_.format));
  RETURN_IF_ERROR(CommitArchitecture());
  if (calib_fd_ >= 0) {
    if (fsync(calib_fd_) != 0) {
      return absl::InternalError(absl::StrCat("fsync of calibration.npy: ", std::strerror(errno)));
    }
    close(calib_fd_);
    calib_fd_ = -1;
    RETURN_IF_ERROR(CheckCalibrationFile(
        (fs::path(staging_dir_) / CheckpointStore::kCalibrationFile).string(), calib_bytes_));
  }
  if (validate_) {
    RETURN_IF_ERROR(validate_(file_path_, manifest_.architecture_file.empty()
                                              ? std::string()
                                              : (fs::path(staging_dir_) / arch_name_).string()));
  }
  manifest_.sha256 = sha;
  manifest_.size_bytes = static_cast<int64_t>(bytes_);
  manifest_.created_at = NowRfc3339();
  const std::string manifest_path = (fs::path(staging_dir_) / "manifest.json").string();
  {
    std::ofstream out(manifest_path, std::ios::trunc);
    out << CheckpointStore::ManifestJson(manifest_);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", manifest_path));
  }
  RETURN_IF_ERROR(FsyncPath(manifest_path, false));
  RETURN_IF_ERROR(FsyncPath(staging_dir_, true));
  ASSIGN_OR_RETURN(int64_t version, store_->PublishStaging(model_name_, staging_dir_));
  committed_ = true;
  StoreVersion v;
  v.model_name = model_name_;
  v.version = version;
  v.dir = (fs::path(store_->root()) / model_name_ / std::to_string(version)).string();
  v.path = (fs::path(v.dir) / manifest_.file).string();
  v.manifest = manifest_;
  return v;
}

absl::StatusOr<int64_t> CheckpointStore::PublishStaging(const std::string& model,
                                                        const std::string& staging) const {
  absl::MutexLock lock(&publish_mu_);
  const fs::path model_dir = fs::path(root_) / model;
  ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(model));
  int64_t next = versions.empty() ? 1 : versions.back() + 1;
  // Claims left by writers that died are passed over, not reused.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    int64_t claimed = 0;
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, kClaimPrefix) &&
        ParseVersionDir(name.substr(sizeof(kClaimPrefix) - 1), &claimed)) {
      next = std::max(next, claimed + 1);
    }
  }
  // Another process may publish at the same time. Without rename flags (NFS and
  // many FUSE filesystems refuse them): claim the number with an exclusive create,
  // which is atomic on NFSv3 and later, then move the complete staging directory
  // into place with a plain rename. Only the claimant renames to that number.
  for (int attempt = 0; attempt < 1000; ++attempt, ++next) {
    const fs::path claim = model_dir / absl::StrCat(kClaimPrefix, next);
    const int fd = open(claim.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return absl::InternalError(absl::StrCat("cannot claim version ", next, " of model '", model,
                                              "': ", std::strerror(errno)));
    }
    close(fd);
    const fs::path target = model_dir / std::to_string(next);
    std::error_code exists;
    if (fs::exists(target, exists)) continue;  // a hand-copied version took it; keep the claim
    if (std::rename(staging.c_str(), target.c_str()) != 0) {
      const int err = errno;
      unlink(claim.c_str());
      return absl::InternalError(absl::StrCat("cannot publish version ", next, " of model '", model,
                                              "': ", std::strerror(err)));
    }
    RETURN_IF_ERROR(FsyncPath(model_dir.string(), true));
    unlink(claim.c_str());
    return next;
  }
  return absl::InternalError("could not allocate a version number");
}

namespace {

// The newest mtime of `dir` and of the entries directly inside it.
fs::file_time_type NewestWrite(const fs::path& dir) {
  std::error_code ec;
  fs::file_time_type newest = fs::last_write_time(dir, ec);
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::error_code ec2;
    const fs::file_time_type t = fs::last_write_time(e.path(), ec2);
    if (!ec2 && t > newest) newest = t;
  }
  return newest;
}

// True when a writer holds the staging directory's lock.
bool Locked(const fs::path& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool locked = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);  // releases it again if we got it
  return locked;
}

}  // namespace

absl::StatusOr<int64_t> CheckpointStore::Pin(absl::string_view name) const {
  RETURN_IF_ERROR(ValidateModelName(name));
  std::ifstream in(fs::path(root_) / std::string(name) / ".pin");
  std::string text;
  if (!in || !std::getline(in, text)) return 0;
  int64_t v = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &v) || v < 0) {
    return absl::DataLossError(absl::StrCat("model '", name, "' has a corrupt pin file"));
  }
  return v;
}

absl::Status CheckpointStore::SetPin(absl::string_view name, int64_t version) const {
  RETURN_IF_ERROR(ValidateModelName(name));
  const fs::path pin = fs::path(root_) / std::string(name) / ".pin";
  if (version <= 0) {
    if (std::remove(pin.c_str()) != 0) {
      if (errno == ENOENT) return absl::OkStatus();  // not pinned: nothing to do
      return absl::InternalError(
          absl::StrCat("cannot unpin model '", name, "': ", std::strerror(errno)));
    }
    return FsyncPath(pin.parent_path().string(), true);
  }
  const std::string tmp = absl::StrCat(pin.string(), ".tmp-", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << version << "\n";
    if (!out.flush()) {
      return absl::InternalError(absl::StrCat("cannot pin model '", name, "'"));
    }
  }
  RETURN_IF_ERROR(FsyncPath(tmp, false));
  if (std::rename(tmp.c_str(), pin.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot pin model '", name, "': ", std::strerror(errno)));
  }
  return FsyncPath(pin.parent_path().string(), true);
}

std::string CheckpointStore::Describe(absl::string_view message) const {
  const std::string prefix = root_ + "/";
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t at = message.find(prefix, pos);
    if (at == absl::string_view::npos) break;
    absl::StrAppend(&out, message.substr(pos, at - pos));
    size_t end = at + prefix.size();
    while (end < message.size() &&
           (absl::ascii_isalnum(message[end]) ||
            absl::string_view("._-/").find(message[end]) != absl::string_view::npos)) {
      ++end;
    }
    const std::vector<std::string> parts = absl::StrSplit(
        message.substr(at + prefix.size(), end - at - prefix.size()), '/', absl::SkipEmpty());
    std::string text = "a file in the store";
    if (!parts.empty()) {
      const std::string model = absl::StrCat("model '", parts[0], "'");
      if (parts.size() == 1) {
        text = model;
      } else if (absl::StartsWith(parts[1], ".staging-")) {
        text = absl::StrCat("an upload of ", model,
                            parts.size() > 2 ? absl::StrCat(" (file '", parts[2], "')") : "");
      } else {
        text = absl::StrCat(model, " version ", parts[1],
                            parts.size() > 2 ? absl::StrCat(" file '", parts[2], "'") : "");
      }
    }
    out.append(text);
    pos = end;
  }
  absl::StrAppend(&out, message.substr(pos));
  // The root itself (without a trailing slash).
  return absl::StrReplaceAll(out, {{root_, "the store"}});
}

int CheckpointStore::RemoveStaleStaging(absl::Duration age) const {
  int removed = 0;
  std::error_code ec;
  const auto cutoff = fs::file_time_type::clock::now() - absl::ToChronoNanoseconds(age);
  for (const auto& model : fs::directory_iterator(root_, ec)) {
    if (!model.is_directory()) continue;
    std::error_code ec2;
    for (const auto& entry : fs::directory_iterator(model.path(), ec2)) {
      const std::string name = entry.path().filename().string();
      const bool staging = absl::StartsWith(name, ".staging-");
      if (!staging && !absl::StartsWith(name, kClaimPrefix)) continue;
      std::error_code ec3;
      const fs::file_time_type written =
          staging ? NewestWrite(entry.path()) : fs::last_write_time(entry.path(), ec3);
      if (ec3 || written >= cutoff || (staging && Locked(entry.path()))) continue;
      fs::remove_all(entry.path(), ec3);
      ++removed;
    }
  }
  return removed;
}

}  // namespace modelserver
