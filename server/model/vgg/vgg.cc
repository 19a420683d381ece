#include "server/model/vgg/vgg.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace modelserver {
namespace {

// A leaf module holding one layer's tensors under torchvision's names.
class LeafModule : public torch::nn::Module {
 public:
  void AddParameter(const std::string& name, const at::Tensor& t) {
    register_parameter(name, t, /*requires_grad=*/false);
  }
  void AddBuffer(const std::string& name, const at::Tensor& t) { register_buffer(name, t); }
};

// load_state_dict(strict=True): CheckVggStateDict on the shapes, plus floating
// dtypes (num_batches_tracked aside).
absl::Status CheckStrict(const VggConfig& config, const std::map<std::string, at::Tensor>& given) {
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<std::string> dtype_problems;
  for (const auto& [k, t] : given) {
    shapes[k] = std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
    if (!absl::EndsWith(k, "num_batches_tracked") && !at::isFloatingType(t.scalar_type())) {
      dtype_problems.push_back(absl::StrCat(k, " has dtype ", c10::toString(t.scalar_type()),
                                            ", expected a floating type"));
    }
  }
  return CheckVggStateDict(config, shapes, std::move(dtype_problems));
}

}  // namespace

// Registers the checkpoint's tensors as the parameters and buffers of leaf
// modules under torchvision's names, and collects the layers forward() runs.
class VggImpl::Builder {
 public:
  Builder(VggImpl* vgg, std::map<std::string, at::Tensor> given, const Numerics& numerics)
      : vgg_(vgg), given_(std::move(given)), numerics_(numerics) {}

  void Build() {
    AddFeatures();
    AddClassifier();
    vgg_->register_module("features", features_);
    vgg_->register_module("avgpool", std::make_shared<LeafModule>());
    vgg_->register_module("classifier", classifier_);
  }

 private:
  // A checked tensor as the network uses it: in the serving precision and layout
  // (the counter aside), converted straight from the checkpoint's tensor -- no
  // float32 copy is kept when serving bf16/fp16.
  at::Tensor Take(const std::string& key) const {
    const at::Tensor& t = given_.at(key);
    if (absl::EndsWith(key, "num_batches_tracked")) return t.contiguous();
    return numerics_.Apply(t);  // CheckStrict made every other tensor floating
  }

  // A layer without tensors (ReLU, MaxPool2d, Dropout) at `index` of `parent`.
  void AddPlain(Layer::Kind kind, int index, torch::nn::Module* parent,
                std::vector<Layer>* layers) {
    layers->push_back({kind, {}, {}, {}, {}});
    parent->register_module(std::to_string(index), std::make_shared<LeafModule>());
  }

  // A Conv2d or Linear: weight and bias.
  void AddWeighted(Layer::Kind kind, const std::string& parent_name, int index,
                   torch::nn::Module* parent, std::vector<Layer>* layers) {
    const std::string p = absl::StrCat(parent_name, ".", index, ".");
    auto leaf = std::make_shared<LeafModule>();
    Layer layer{kind, Take(p + "weight"), Take(p + "bias"), {}, {}};
    leaf->AddParameter("weight", layer.weight);
    leaf->AddParameter("bias", layer.bias);
    parent->register_module(std::to_string(index), leaf);
    layers->push_back(std::move(layer));
  }

  void AddBatchNorm(int index) {
    const std::string b = absl::StrCat("features.", index, ".");
    auto bn = std::make_shared<LeafModule>();
    Layer layer{Layer::Kind::kBatchNorm, Take(b + "weight"), Take(b + "bias"),
                Take(b + "running_mean"), Take(b + "running_var")};
    bn->AddParameter("weight", layer.weight);
    bn->AddParameter("bias", layer.bias);
    bn->AddBuffer("running_mean", layer.running_mean);
    bn->AddBuffer("running_var", layer.running_var);
    bn->AddBuffer("num_batches_tracked", Take(b + "num_batches_tracked"));
    features_->register_module(std::to_string(index), bn);
    vgg_->features_.push_back(std::move(layer));
  }

  void AddFeatures() {
    int index = 0;
    for (int v : vgg_->config_.layers) {
      if (v == VggConfig::kMaxPool) {
        AddPlain(Layer::Kind::kMaxPool, index++, features_.get(), &vgg_->features_);
        continue;
      }
      AddWeighted(Layer::Kind::kConv, "features", index++, features_.get(), &vgg_->features_);
      if (vgg_->config_.batch_norm) AddBatchNorm(index++);
      AddPlain(Layer::Kind::kReLU, index++, features_.get(), &vgg_->features_);
    }
  }

  // Linear ReLU Dropout Linear ReLU Dropout Linear.
  void AddClassifier() {
    for (int i = 0; i < 7; ++i) {
      if (i % 3 == 0) {
        AddWeighted(Layer::Kind::kLinear, "classifier", i, classifier_.get(), &vgg_->classifier_);
      } else {
        AddPlain(i % 3 == 1 ? Layer::Kind::kReLU : Layer::Kind::kDropout, i, classifier_.get(),
                 &vgg_->classifier_);
      }
    }
  }

  VggImpl* vgg_;
  std::map<std::string, at::Tensor> given_;
  const Numerics numerics_;
  std::shared_ptr<torch::nn::Module> features_ = std::make_shared<torch::nn::Module>();
  std::shared_ptr<torch::nn::Module> classifier_ = std::make_shared<torch::nn::Module>();
};

absl::StatusOr<std::shared_ptr<VggImpl>> VggImpl::Create(const VggConfig& config, StateDict state,
                                                         const Numerics& numerics) {
  std::map<std::string, at::Tensor> given;
  for (auto& [k, t] : state) given[k] = std::move(t);
  if (absl::Status s = CheckStrict(config, given); !s.ok()) return s;
  std::shared_ptr<VggImpl> vgg(new VggImpl(config));
  Builder(vgg.get(), std::move(given), numerics).Build();
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

std::vector<FloatLayer> VggImpl::Layers() const {
  std::vector<FloatLayer> out;
  auto add = [&out](const Layer& l) {
    FloatLayer f;
    switch (l.kind) {
      case Layer::Kind::kConv:
        f.kind = FloatLayer::Kind::kConv;
        f.stride = {1, 1};
        f.padding = {1, 1};
        f.dilation = {1, 1};
        break;
      case Layer::Kind::kBatchNorm:
        f.kind = FloatLayer::Kind::kBatchNorm;
        f.running_mean = l.running_mean;
        f.running_var = l.running_var;
        break;
      case Layer::Kind::kReLU:
        f.kind = FloatLayer::Kind::kReLU;
        break;
      case Layer::Kind::kMaxPool:
        f.kind = FloatLayer::Kind::kMaxPool;
        f.kernel = {2, 2};
        f.stride = {2, 2};
        f.padding = {0, 0};
        f.dilation = {1, 1};
        break;
      case Layer::Kind::kLinear:
        f.kind = FloatLayer::Kind::kLinear;
        break;
      case Layer::Kind::kDropout:
        return;  // eval mode: the identity
    }
    f.weight = l.weight;
    f.bias = l.bias;
    out.push_back(std::move(f));
  };
  for (const Layer& l : features_) add(l);
  FloatLayer pool;
  pool.kind = FloatLayer::Kind::kAdaptiveAvgPool;
  pool.output_size = {config_.pool, config_.pool};
  out.push_back(pool);
  FloatLayer flatten;
  flatten.kind = FloatLayer::Kind::kFlatten;
  out.push_back(flatten);
  for (const Layer& l : classifier_) add(l);
  return out;
}

StateDict VggImpl::state_dict() const {
  StateDict out;
  std::map<std::string, at::Tensor> all;
  for (const auto& p : named_parameters(/*recurse=*/true)) all[p.key()] = p.value();
  for (const auto& b : named_buffers(/*recurse=*/true)) all[b.key()] = b.value();
  for (const auto& [k, shape] : config_.StateDictShapes()) {
    // As PyTorch keeps them: float32 (whatever the serving precision), contiguous.
    at::Tensor t = all.at(k);
    if (at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kFloat) t = t.to(at::kFloat);
    out.emplace_back(k, t.contiguous());
  }
  return out;
}

}  // namespace modelserver
