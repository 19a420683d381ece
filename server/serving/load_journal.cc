#include "server/serving/load_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/util/logging.h"

namespace modelserver {

namespace fs = std::filesystem;

absl::Status LoadJournal::Init() {
  if (dir_.empty()) return absl::OkStatus();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || access(dir_.c_str(), W_OK) != 0) {
    return absl::InternalError(
        absl::StrCat("load journal directory ", dir_, " is not writable: ", ec.message()));
  }
  // At startup, a <model>.loading left behind is a load that killed the process
  // before this one. Only here: a poll that looked later could take a load in
  // progress (this process's, or a replica's sharing the directory) for a crash.
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string file = entry.path().filename().string();
    if (!absl::EndsWith(file, ".loading")) continue;
    const std::string model = file.substr(0, file.size() - std::strlen(".loading"));
    if (const int64_t crashed = Read(entry.path().string()); crashed > 0) {
      LOG_WARNING("load journal: model ", model, " version ", crashed,
                  " was loading when the process ended; it is skipped until a LoadModel of it "
                  "succeeds");
      Write(Path(model, ".skip"), crashed);
    }
    std::remove(entry.path().c_str());
  }
  return absl::OkStatus();
}

std::string LoadJournal::Path(const std::string& model, const char* suffix) const {
  return (fs::path(dir_) / (model + suffix)).string();
}

void LoadJournal::Write(const std::string& path, int64_t version) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << version << "\n";
    out.flush();
    if (!out) {
      LOG_WARNING("load journal: cannot write ", tmp);
      return;
    }
  }
  // fsync so that the record survives the crash it is there for.
  const int fd = open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) LOG_WARNING("load journal: cannot write ", path);
}

int64_t LoadJournal::Read(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!in || !std::getline(in, text)) return 0;
  int64_t v = 0;
  return absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &v) && v > 0 ? v : 0;
}

void LoadJournal::BeginLoad(const std::string& model, int64_t version) const {
  if (enabled()) Write(Path(model, ".loading"), version);
}

void LoadJournal::EndLoad(const std::string& model) const {
  if (enabled()) std::remove(Path(model, ".loading").c_str());
}

int64_t LoadJournal::SkippedVersion(const std::string& model) const {
  if (!enabled()) return 0;
  return Read(Path(model, ".skip"));
}

void LoadJournal::Skip(const std::string& model, int64_t version) const {
  if (!enabled()) return;
  Write(Path(model, ".skip"), version);
}

void LoadJournal::ClearSkip(const std::string& model, int64_t version) const {
  if (!enabled()) return;
  const std::string skip = Path(model, ".skip");
  if (const int64_t v = Read(skip); v > 0 && v <= version) std::remove(skip.c_str());
}

}  // namespace modelserver
