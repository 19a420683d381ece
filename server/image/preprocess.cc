#include "server/image/preprocess.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace modelserver {
namespace {

using Json = nlohmann::json;

absl::StatusOr<std::vector<int64_t>> ReadSize(const Json& j, const char* key) {
  std::vector<int64_t> size;
  if (j.is_number_integer()) {
    size.push_back(j.get<int64_t>());
  } else if (j.is_array() && (j.size() == 1 || j.size() == 2)) {
    for (const Json& v : j) {
      if (!v.is_number_integer()) break;
      size.push_back(v.get<int64_t>());
    }
    if (size.size() != j.size()) size.clear();
  } else if (j.is_null()) {
    return size;
  }
  if (size.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "preprocess \"", key, "\" must be an integer or [height, width], got ", j.dump()));
  }
  for (int64_t v : size) {
    if (v < 1 || v > 16384) {
      return absl::InvalidArgumentError(
          absl::StrCat("preprocess \"", key, "\" ", v, " is outside 1..16384"));
    }
  }
  return size;
}

absl::Status ReadTriple(const Json& j, const char* key, bool positive, std::array<float, 3>* out) {
  if (!j.is_array() || j.size() != 3 || !j[0].is_number() || !j[1].is_number() ||
      !j[2].is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess \"", key, "\" must be three numbers (R, G, B), got ", j.dump()));
  }
  for (size_t i = 0; i < 3; ++i) {
    const double v = j[i].get<double>();
    if (!std::isfinite(v) || (positive && v <= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("preprocess \"", key, "\" has ", j[i].dump(),
                       positive ? ", expected finite numbers > 0" : ", expected finite numbers"));
    }
    (*out)[i] = static_cast<float>(v);
  }
  return absl::OkStatus();
}

Json SizeJson(const std::vector<int64_t>& s) {
  if (s.empty()) return nullptr;
  if (s.size() == 1) return s[0];
  return s;
}

}  // namespace

int64_t ImagePreprocess::OutputHeight() const {
  if (!crop.empty()) return crop[0];
  return resize.size() == 2 ? resize[0] : 0;
}

int64_t ImagePreprocess::OutputWidth() const {
  if (!crop.empty()) return crop.back();
  return resize.size() == 2 ? resize[1] : 0;
}

absl::StatusOr<ImagePreprocess> ParsePreprocess(std::string_view json) {
  // A few numbers: anything longer is not a description (and is not parsed).
  constexpr size_t kMaxBytes = 4096;
  if (json.size() > kMaxBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess is ", json.size(), " bytes, over the limit of ", kMaxBytes));
  }
  const Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("preprocess must be a JSON object");
  }
  ImagePreprocess p;
  for (const auto& [key, value] : j.items()) {
    if (key == "resize") {
      auto size = ReadSize(value, "resize");
      if (!size.ok()) return size.status();
      p.resize = *std::move(size);
    } else if (key == "crop") {
      auto size = ReadSize(value, "crop");
      if (!size.ok()) return size.status();
      p.crop = *std::move(size);
    } else if (key == "mean") {
      if (absl::Status s = ReadTriple(value, "mean", false, &p.mean); !s.ok()) return s;
    } else if (key == "std") {
      if (absl::Status s = ReadTriple(value, "std", true, &p.std); !s.ok()) return s;
    } else if (key == "interpolation") {
      const std::string mode = value.is_string() ? value.get<std::string>() : "";
      if (mode == "bilinear") {
        p.interpolation = ImagePreprocess::Interpolation::kBilinear;
      } else if (mode == "bicubic") {
        p.interpolation = ImagePreprocess::Interpolation::kBicubic;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "preprocess \"interpolation\" ", value.dump(), " is not \"bilinear\" or \"bicubic\""));
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("preprocess has an unknown key \"", key,
                       "\" (known: resize, crop, mean, std, interpolation)"));
    }
  }
  if (p.crop.empty() && p.resize.size() != 2) {
    return absl::InvalidArgumentError(
        "preprocess needs a fixed output size: give \"crop\", or \"resize\" as [height, width]");
  }
  return p;
}

std::string PreprocessJson(const ImagePreprocess& p) {
  Json j;
  j["resize"] = SizeJson(p.resize);
  j["crop"] = SizeJson(p.crop);
  j["mean"] = p.mean;
  j["std"] = p.std;
  j["interpolation"] =
      p.interpolation == ImagePreprocess::Interpolation::kBicubic ? "bicubic" : "bilinear";
  return j.dump();
}

std::array<int64_t, 2> ResizedSize(const ImagePreprocess& p, int64_t height, int64_t width) {
  if (p.resize.size() == 2) return {p.resize[0], p.resize[1]};
  if (p.resize.empty()) return {height, width};
  // torchvision's _compute_resized_output_size: the shorter side becomes `size`,
  // the longer int(size * long / short).
  const int64_t size = p.resize[0];
  const int64_t shorter = std::min(height, width);
  const int64_t longer = std::max(height, width);
  if (shorter == size) return {height, width};
  const auto new_long = static_cast<int64_t>(
      static_cast<double>(size) * static_cast<double>(longer) / static_cast<double>(shorter));
  return height <= width ? std::array<int64_t, 2>{size, new_long}
                         : std::array<int64_t, 2>{new_long, size};
}

}  // namespace modelserver
