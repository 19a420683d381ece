#include "server/checkpoint/state_dict_parser.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace modelserver {

absl::StatusOr<PickledStateDict> ParseArchivePickle(const ZipReader& zip, const std::string& what,
                                                    uint64_t max_pickle_bytes,
                                                    const pickle::UnpicklerOptions& options) {
  PickledStateDict out;
  for (const ZipReader::Entry& e : zip.entries()) {
    if (absl::EndsWith(e.name, "/data.pkl") &&
        e.name.find('/') == e.name.size() - sizeof("data.pkl")) {
      out.prefix = e.name.substr(0, e.name.size() - (sizeof("data.pkl") - 1));
    }
  }
  if (out.prefix.empty()) {
    return absl::DataLossError(absl::StrCat(
        what, ": zip archive has no <name>/data.pkl record; it was not written by torch.save"));
  }
  if (auto bo = zip.Find(out.prefix + "byteorder"); bo.ok()) {
    ASSIGN_OR_RETURN(std::string order, zip.ReadToString(**bo, 16));
    if (order != "little") {
      return absl::FailedPreconditionError(absl::StrCat(
          what, " was saved on a '", order, "'-endian machine; only little-endian is read"));
    }
  }
  ASSIGN_OR_RETURN(const ZipReader::Entry* pkl_entry, zip.Find(out.prefix + "data.pkl"));
  ASSIGN_OR_RETURN(std::string pkl, zip.ReadToString(*pkl_entry, max_pickle_bytes));
  pickle::Unpickler unpickler(options);
  auto pickled = unpickler.Parse(pkl);
  if (!pickled.ok()) {
    return absl::Status(pickled.status().code(),
                        absl::StrCat(what, ": ", pickled.status().message()));
  }
  out.pickled = *std::move(pickled);
  return out;
}

absl::StatusOr<PickledStateDict> ParseStateDictPickle(const ZipReader& zip, const std::string& what,
                                                      uint64_t max_pickle_bytes) {
  ASSIGN_OR_RETURN(PickledStateDict out,
                   ParseArchivePickle(zip, what, max_pickle_bytes, pickle::UnpicklerOptions{}));
  const pickle::Value* root = out.pickled->root();
  if (root->kind != pickle::Kind::kDict) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " holds a ", pickle::KindName(root->kind),
                     ", not a state dict; save it with torch.save(model.state_dict(), path)"));
  }
  for (const auto& [k, v] : root->entries) {
    if (k->kind != pickle::Kind::kString) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": state dict has a ", pickle::KindName(k->kind), " key"));
    }
    if (v->kind != pickle::Kind::kTensor) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": entry '", k->s, "' is a ", pickle::KindName(v->kind),
          ", not a tensor; save only model.state_dict() (not a training checkpoint dict)"));
    }
  }
  return out;
}

namespace {

std::string ShapeText(const std::vector<int64_t>& s) { return "[" + absl::StrJoin(s, ", ") + "]"; }

// "a", "b", ... (at most 20, then how many more).
std::string KeyList(const std::vector<std::string>& keys) {
  std::vector<std::string> shown;
  for (size_t i = 0; i < keys.size() && i < 20; ++i) shown.push_back("\"" + keys[i] + "\"");
  std::string out = absl::StrJoin(shown, ", ");
  if (keys.size() > 20) absl::StrAppend(&out, " and ", keys.size() - 20, " more");
  return out;
}

}  // namespace

std::string StateDictMismatch(const std::map<std::string, std::vector<int64_t>>& expected,
                              const std::map<std::string, std::vector<int64_t>>& given,
                              const std::string& against) {
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [k, shape] : expected) {
    auto it = given.find(k);
    if (it == given.end()) {
      missing.push_back(k);
    } else if (it->second != shape) {
      mismatched.push_back(absl::StrCat("size mismatch for ", k, ": the checkpoint has ",
                                        ShapeText(it->second), ", ", against, " ",
                                        ShapeText(shape)));
    }
  }
  for (const auto& [k, shape] : given) {
    if (expected.count(k) == 0) unexpected.push_back(k);
  }
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back("missing key(s) in the state dict: " + KeyList(missing));
  if (!unexpected.empty()) {
    parts.push_back("unexpected key(s) in the state dict: " + KeyList(unexpected));
  }
  for (size_t i = 0; i < mismatched.size() && i < 20; ++i) parts.push_back(mismatched[i]);
  return absl::StrJoin(parts, "; ");
}

}  // namespace modelserver
