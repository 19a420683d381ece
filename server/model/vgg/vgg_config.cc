#include "server/model/vgg/vgg_config.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace modelserver {
namespace {

constexpr int M = VggConfig::kMaxPool;

struct Standard {
  const char* name;
  std::vector<int> layers;
};

const std::vector<Standard>& StandardConfigs() {
  static const auto* configs = new std::vector<Standard>{
      {"vgg11", {64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M}},
      {"vgg13", {64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M}},
      {"vgg16", {64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M}},
      {"vgg19", {64,  64,  M,   128, 128, M,   256, 256, 256, 256, M,
                 512, 512, 512, 512, M,   512, 512, 512, 512, M}},
  };
  return *configs;
}

std::string LayersString(const std::vector<int>& layers) {
  std::vector<std::string> parts;
  for (int v : layers) parts.push_back(v == M ? "M" : std::to_string(v));
  return absl::StrJoin(parts, "-");
}

absl::Status Bad(absl::string_view arch, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "architecture '", arch, "' is invalid: ", why,
      "; expected vgg11|vgg13|vgg16|vgg19[_bn] or vgg:cfg=64-M-128-M..., optionally followed by "
      ":bn, :classes=N, :hidden=N, :pool=N"));
}

}  // namespace

bool IsVggArchitecture(absl::string_view arch) { return absl::StartsWith(arch, "vgg"); }

std::string VggConfig::Name() const {
  std::string base;
  for (const Standard& s : StandardConfigs()) {
    if (s.layers == layers) base = s.name;
  }
  std::string name;
  if (!base.empty()) {
    name = batch_norm ? base + "_bn" : base;
  } else {
    name = absl::StrCat("vgg:cfg=", LayersString(layers), batch_norm ? ":bn" : "");
  }
  if (num_classes != 1000) absl::StrAppend(&name, ":classes=", num_classes);
  if (hidden != 4096) absl::StrAppend(&name, ":hidden=", hidden);
  if (pool != 7) absl::StrAppend(&name, ":pool=", pool);
  return name;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> VggConfig::StateDictShapes() const {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  int64_t in = in_channels;
  int index = 0;
  for (int v : layers) {
    if (v == M) {
      ++index;
      continue;
    }
    const std::string conv = absl::StrCat("features.", index, ".");
    out.push_back({conv + "weight", {v, in, 3, 3}});
    out.push_back({conv + "bias", {v}});
    if (batch_norm) {
      const std::string bn = absl::StrCat("features.", index + 1, ".");
      out.push_back({bn + "weight", {v}});
      out.push_back({bn + "bias", {v}});
      out.push_back({bn + "running_mean", {v}});
      out.push_back({bn + "running_var", {v}});
      out.push_back({bn + "num_batches_tracked", {}});
      index += 3;
    } else {
      index += 2;
    }
    in = v;
  }
  out.push_back({"classifier.0.weight", {hidden, in * pool * pool}});
  out.push_back({"classifier.0.bias", {hidden}});
  out.push_back({"classifier.3.weight", {hidden, hidden}});
  out.push_back({"classifier.3.bias", {hidden}});
  out.push_back({"classifier.6.weight", {num_classes, hidden}});
  out.push_back({"classifier.6.bias", {num_classes}});
  return out;
}

int VggConfig::MaxPools() const {
  int pools = 0;
  for (int v : layers) pools += v == kMaxPool ? 1 : 0;
  return pools;
}

int64_t VggConfig::MinInputSize() const {
  int64_t size = 1;
  for (int v : layers) {
    if (v == M) size *= 2;
  }
  return size;
}

absl::StatusOr<VggConfig> ParseVggArchitecture(absl::string_view arch) {
  std::vector<absl::string_view> parts = absl::StrSplit(arch, ':');
  VggConfig config;
  absl::string_view base = parts[0];
  bool have_layers = false;
  if (absl::EndsWith(base, "_bn")) {
    config.batch_norm = true;
    base.remove_suffix(3);
  }
  for (const Standard& s : StandardConfigs()) {
    if (base == s.name) {
      config.layers = s.layers;
      have_layers = true;
    }
  }
  if (!have_layers && base != "vgg")
    return Bad(arch, absl::StrCat("unknown model '", parts[0], "'"));
  auto positive = [&](absl::string_view key, absl::string_view value,
                      int64_t* out) -> absl::Status {
    if (!absl::SimpleAtoi(value, out) || *out <= 0 || *out > (1 << 20)) {
      return Bad(arch, absl::StrCat(key, " must be a positive integer, got '", value, "'"));
    }
    return absl::OkStatus();
  };
  for (size_t i = 1; i < parts.size(); ++i) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(parts[i], '=');
    absl::Status st;
    if (kv.first == "bn" && kv.second.empty()) {
      config.batch_norm = true;
    } else if (kv.first == "classes") {
      st = positive(kv.first, kv.second, &config.num_classes);
    } else if (kv.first == "hidden") {
      st = positive(kv.first, kv.second, &config.hidden);
    } else if (kv.first == "pool") {
      st = positive(kv.first, kv.second, &config.pool);
    } else if (kv.first == "cfg") {
      config.layers.clear();
      for (absl::string_view item : absl::StrSplit(kv.second, '-')) {
        int64_t channels = 0;
        if (item == "M") {
          config.layers.push_back(M);
        } else if (absl::SimpleAtoi(item, &channels) && channels > 0 && channels <= 65536) {
          config.layers.push_back(static_cast<int>(channels));
        } else {
          return Bad(arch, absl::StrCat("cfg item '", item, "' is neither M nor a channel count"));
        }
      }
      have_layers = true;
    } else {
      return Bad(arch, absl::StrCat("unknown option '", parts[i], "'"));
    }
    if (!st.ok()) return st;
  }
  if (!have_layers) return Bad(arch, "vgg needs cfg=...");
  bool any_conv = false;
  for (int v : config.layers) any_conv |= v != M;
  if (!any_conv) return Bad(arch, "cfg has no convolution");
  if (config.MaxPools() > VggConfig::kMaxMaxPools || config.layers.size() > VggConfig::kMaxLayers) {
    return Bad(arch, absl::StrCat("cfg has ", config.layers.size(), " layers and ",
                                  config.MaxPools(), " max-pools, at most ", VggConfig::kMaxLayers,
                                  " and ", VggConfig::kMaxMaxPools,
                                  " are served (each max-pool doubles the smallest input)"));
  }
  return config;
}

namespace {

namespace mc = module_class;

// A 2x2, stride-2 MaxPool2d without ceil mode.
bool IsVggMaxPool(const ModuleNode& n) {
  auto k = n.Pair("kernel_size");
  if (!k.ok()) return false;
  auto s = n.Pair("stride", *k);
  return s.ok() && *k == std::vector<int64_t>{2, 2} && *s == *k && !n.Bool("ceil_mode", false);
}

// A 3x3 Conv2d, padding 1, stride 1: its output channels, else nullopt.
std::optional<int64_t> VggConvChannels(const ModuleNode& n) {
  if (n.cls != mc::kConv) return std::nullopt;
  auto k = n.Pair("kernel_size");
  auto p = n.Pair("padding");
  auto s = n.Pair("stride");
  auto out = n.Int("out_channels");
  if (!k.ok() || !p.ok() || !s.ok() || !out.ok() || *k != std::vector<int64_t>{3, 3} ||
      *p != std::vector<int64_t>{1, 1} || *s != std::vector<int64_t>{1, 1}) {
    return std::nullopt;
  }
  return *out;
}

// features: (Conv2d [BatchNorm2d] ReLU | MaxPool2d)*, batch norm after every conv or none.
bool ReadFeatures(const std::vector<ModuleNode>& f, VggConfig* c) {
  size_t i = 0;
  while (i < f.size()) {
    if (f[i].cls == mc::kMaxPool) {
      if (!IsVggMaxPool(f[i++])) return false;
      c->layers.push_back(VggConfig::kMaxPool);
      continue;
    }
    std::optional<int64_t> out = VggConvChannels(f[i++]);
    if (!out) return false;
    c->layers.push_back(static_cast<int>(*out));
    if (i < f.size() && f[i].cls == mc::kBatchNorm) {
      if (!c->batch_norm && c->layers.size() > 1) return false;
      c->batch_norm = true;
      ++i;
    } else if (c->batch_norm) {
      return false;
    }
    if (i >= f.size() || f[i++].cls != mc::kReLU) return false;
  }
  return true;
}

// classifier: Linear ReLU Dropout Linear ReLU Dropout Linear.
bool ReadClassifier(const std::vector<ModuleNode>& cl, VggConfig* c) {
  const char* expected[] = {mc::kLinear, mc::kReLU,    mc::kDropout, mc::kLinear,
                            mc::kReLU,   mc::kDropout, mc::kLinear};
  if (cl.size() != 7) return false;
  for (int j = 0; j < 7; ++j) {
    if (cl[j].cls != expected[j]) return false;
  }
  auto hidden = cl[0].Int("out_features");
  auto classes = cl[6].Int("out_features");
  if (!hidden.ok() || !classes.ok()) return false;
  c->hidden = *hidden;
  c->num_classes = *classes;
  return true;
}

}  // namespace

std::optional<VggConfig> VggConfigFromModuleTree(const ModuleNode& root) {
  if (root.cls != mc::kVgg || root.children.size() != 3) return std::nullopt;
  const ModuleNode& avgpool = root.children[1];
  VggConfig c;
  if (!ReadFeatures(root.children[0].children, &c)) return std::nullopt;
  auto pool = avgpool.Pair("output_size");
  if (avgpool.cls != mc::kAdaptiveAvgPool || !pool.ok() || (*pool)[0] != (*pool)[1]) {
    return std::nullopt;
  }
  c.pool = (*pool)[0];
  if (!ReadClassifier(root.children[2].children, &c)) return std::nullopt;
  // Deeper trees run as layer stacks (no warm-up at a huge input size).
  if (c.MaxPools() > VggConfig::kMaxMaxPools || c.layers.size() > VggConfig::kMaxLayers) {
    return std::nullopt;
  }
  return c;
}

namespace {

// "a, b, c, ... (N more)": at most 20 items.
std::string ShortList(const std::vector<std::string>& v) {
  const size_t kShown = 20;
  std::vector<std::string> head(v.begin(), v.begin() + std::min(v.size(), kShown));
  std::string s = absl::StrJoin(head, ", ");
  if (v.size() > kShown) absl::StrAppend(&s, ", ... (", v.size() - kShown, " more)");
  return s;
}

std::string Shape(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ","), "]");
}

}  // namespace

absl::Status CheckVggStateDict(const VggConfig& config,
                               const std::map<std::string, std::vector<int64_t>>& shapes,
                               std::vector<std::string> problems) {
  std::vector<std::string> missing, unexpected;
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& [k, shape] : config.StateDictShapes()) {
    expected[k] = shape;
    auto it = shapes.find(k);
    if (it == shapes.end()) {
      missing.push_back(k);
    } else if (it->second != shape) {
      problems.push_back(absl::StrCat(k, " is ", Shape(it->second), ", expected ", Shape(shape)));
    }
  }
  for (const auto& [k, shape] : shapes) {
    if (expected.count(k) == 0) unexpected.push_back(k);
  }
  if (missing.empty() && unexpected.empty() && problems.empty()) return absl::OkStatus();
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back(absl::StrCat("missing keys: ", ShortList(missing)));
  if (!unexpected.empty()) {
    parts.push_back(absl::StrCat("unexpected keys: ", ShortList(unexpected)));
  }
  if (!problems.empty()) parts.push_back(absl::StrCat("shape mismatches: ", ShortList(problems)));
  return absl::FailedPreconditionError(absl::StrCat(
      "checkpoint does not fit architecture ", config.Name(), ": ", absl::StrJoin(parts, "; ")));
}

}  // namespace modelserver
