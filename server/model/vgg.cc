#include "server/model/vgg.h"

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace modelserver {
namespace {

std::string Shape(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ","), "]"); }

// A leaf module holding one layer's tensors under torchvision's names.
class LeafModule : public torch::nn::Module {
 public:
  void AddParameter(const std::string& name, const at::Tensor& t) {
    register_parameter(name, t, /*requires_grad=*/false);
  }
  void AddBuffer(const std::string& name, const at::Tensor& t) { register_buffer(name, t); }
};

}  // namespace

absl::StatusOr<std::shared_ptr<VggImpl>> VggImpl::Create(const VggConfig& config, StateDict state) {
  const auto expected = config.StateDictShapes();
  std::map<std::string, at::Tensor> given;
  for (auto& [k, t] : state) given[k] = std::move(t);
  std::vector<std::string> missing, unexpected, mismatched;
  std::map<std::string, std::vector<int64_t>> expected_map;
  for (const auto& [k, shape] : expected) {
    expected_map[k] = shape;
    auto it = given.find(k);
    if (it == given.end()) {
      missing.push_back(k);
      continue;
    }
    const at::Tensor& t = it->second;
    const bool is_counter = absl::EndsWith(k, "num_batches_tracked");
    if (t.sizes() != at::IntArrayRef(shape)) {
      mismatched.push_back(absl::StrCat(k, " is ", Shape(t.sizes()), ", expected ", Shape(shape)));
    } else if (!is_counter && !at::isFloatingType(t.scalar_type())) {
      mismatched.push_back(absl::StrCat(k, " has dtype ", c10::toString(t.scalar_type()),
                                        ", expected a floating type"));
    }
  }
  for (const auto& [k, t] : given) {
    if (expected_map.count(k) == 0) unexpected.push_back(k);
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::vector<std::string> parts;
    auto list = [](const std::vector<std::string>& v) {
      const size_t kShown = 20;
      std::vector<std::string> head(v.begin(), v.begin() + std::min(v.size(), kShown));
      std::string s = absl::StrJoin(head, ", ");
      if (v.size() > kShown) absl::StrAppend(&s, ", ... (", v.size() - kShown, " more)");
      return s;
    };
    if (!missing.empty()) parts.push_back(absl::StrCat("missing keys: ", list(missing)));
    if (!unexpected.empty()) parts.push_back(absl::StrCat("unexpected keys: ", list(unexpected)));
    if (!mismatched.empty()) parts.push_back(absl::StrCat("shape mismatches: ", list(mismatched)));
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint does not fit architecture ", config.Name(), ": ", absl::StrJoin(parts, "; ")));
  }

  std::shared_ptr<VggImpl> vgg(new VggImpl(config));
  auto tensor = [&](const std::string& key) {
    at::Tensor t = given.at(key);
    if (!absl::EndsWith(key, "num_batches_tracked") && t.scalar_type() != at::kFloat) {
      t = t.to(at::kFloat);
    }
    return t.is_contiguous() ? t : t.contiguous();
  };
  auto features = std::make_shared<torch::nn::Module>();
  auto classifier = std::make_shared<torch::nn::Module>();
  int index = 0;
  for (int v : config.layers) {
    if (v == VggConfig::kMaxPool) {
      vgg->features_.push_back({Layer::Kind::kMaxPool, {}, {}, {}, {}});
      features->register_module(std::to_string(index++), std::make_shared<LeafModule>());
      continue;
    }
    const std::string p = absl::StrCat("features.", index, ".");
    auto conv = std::make_shared<LeafModule>();
    Layer conv_layer{Layer::Kind::kConv, tensor(p + "weight"), tensor(p + "bias"), {}, {}};
    conv->AddParameter("weight", conv_layer.weight);
    conv->AddParameter("bias", conv_layer.bias);
    features->register_module(std::to_string(index++), conv);
    vgg->features_.push_back(std::move(conv_layer));
    if (config.batch_norm) {
      const std::string b = absl::StrCat("features.", index, ".");
      auto bn = std::make_shared<LeafModule>();
      Layer bn_layer{Layer::Kind::kBatchNorm, tensor(b + "weight"), tensor(b + "bias"),
                     tensor(b + "running_mean"), tensor(b + "running_var")};
      bn->AddParameter("weight", bn_layer.weight);
      bn->AddParameter("bias", bn_layer.bias);
      bn->AddBuffer("running_mean", bn_layer.running_mean);
      bn->AddBuffer("running_var", bn_layer.running_var);
      bn->AddBuffer("num_batches_tracked", tensor(b + "num_batches_tracked"));
      features->register_module(std::to_string(index++), bn);
      vgg->features_.push_back(std::move(bn_layer));
    }
    vgg->features_.push_back({Layer::Kind::kReLU, {}, {}, {}, {}});
    features->register_module(std::to_string(index++), std::make_shared<LeafModule>());
  }
  for (int i = 0; i < 7; ++i) {
    const std::string p = absl::StrCat("classifier.", i, ".");
    auto leaf = std::make_shared<LeafModule>();
    if (i == 0 || i == 3 || i == 6) {
      Layer lin{Layer::Kind::kLinear, tensor(p + "weight"), tensor(p + "bias"), {}, {}};
      leaf->AddParameter("weight", lin.weight);
      leaf->AddParameter("bias", lin.bias);
      vgg->classifier_.push_back(std::move(lin));
    } else {
      vgg->classifier_.push_back(
          {(i == 1 || i == 4) ? Layer::Kind::kReLU : Layer::Kind::kDropout, {}, {}, {}, {}});
    }
    classifier->register_module(std::to_string(i), leaf);
  }
  vgg->register_module("features", features);
  vgg->register_module("avgpool", std::make_shared<LeafModule>());
  vgg->register_module("classifier", classifier);
  vgg->eval();
  return vgg;
}

at::Tensor VggImpl::forward(const at::Tensor& input) const {
  auto run = [](const Layer& l, at::Tensor x) -> at::Tensor {
    switch (l.kind) {
      case Layer::Kind::kConv:
        return at::conv2d(x, l.weight, l.bias, /*stride=*/1, /*padding=*/1);
      case Layer::Kind::kBatchNorm:
        return at::batch_norm(x, l.weight, l.bias, l.running_mean, l.running_var,
                              /*training=*/false, /*momentum=*/0.1, /*eps=*/1e-5,
                              /*cudnn_enabled=*/true);
      case Layer::Kind::kReLU:
        return at::relu_(x);
      case Layer::Kind::kMaxPool:
        return at::max_pool2d(x, {2, 2}, {2, 2});
      case Layer::Kind::kLinear:
        return at::linear(x, l.weight, l.bias);
      case Layer::Kind::kDropout:
        return x;
    }
    return x;
  };
  at::Tensor x = input;
  for (const Layer& l : features_) x = run(l, std::move(x));
  x = at::adaptive_avg_pool2d(x, {config_.pool, config_.pool});
  x = at::flatten(x, 1);
  for (const Layer& l : classifier_) x = run(l, std::move(x));
  return x;
}

StateDict VggImpl::state_dict() const {
  StateDict out;
  std::map<std::string, at::Tensor> all;
  for (const auto& p : named_parameters(/*recurse=*/true)) all[p.key()] = p.value();
  for (const auto& b : named_buffers(/*recurse=*/true)) all[b.key()] = b.value();
  for (const auto& [k, shape] : config_.StateDictShapes()) {
    out.emplace_back(k, all.at(k));
  }
  return out;
}

}  // namespace modelserver
