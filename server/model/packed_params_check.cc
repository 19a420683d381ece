#include "server/model/packed_params_check.h"

#include <torch/csrc/jit/serialization/unpickler.h>
#include <torch/custom_class.h>
#include <torch/script.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

constexpr char kPrefix[] = "__torch__.torch.classes.quantized.";

// A defect of a packed-parameter state (the check's own exception, told apart
// from LibTorch's while the unpickler runs).
class Defect : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A class this check does not know (the load decides about it).
class NotChecked : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A record the check read (the context of its tensors' storage), with its size.
struct Record {
  uint64_t size = 0;
  std::vector<uint64_t> words;
};

void DeleteRecord(void* p) { delete static_cast<Record*>(p); }

[[noreturn]] void Fail(const std::string& cls, const std::string& what) {
  throw Defect(absl::StrCat("torch.classes.quantized.", cls, ": ", what));
}

std::string Shape(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

// A tensor whose view reaches past the record its storage was read from: the
// unpickler does not compare the two (a record cut short would be read past its
// end).
void CheckInRecord(const std::string& cls, const at::Tensor& t, const char* what) {
  const c10::DataPtr& data = t.storage().data_ptr();
  if (data.get_deleter() != &DeleteRecord) return;  // not from a record
  const auto* record = static_cast<const Record*>(data.get_context());
  uint64_t end = 0;  // one past the last byte the view reaches
  if (t.numel() > 0) {
    uint64_t last = static_cast<uint64_t>(t.storage_offset());
    bool overflow = t.storage_offset() < 0;
    for (int64_t d = 0; d < t.dim(); ++d) {
      if (t.stride(d) < 0) overflow = true;
      overflow = overflow ||
                 __builtin_mul_overflow(static_cast<uint64_t>(t.size(d) - 1),
                                        static_cast<uint64_t>(t.stride(d)), &end) ||
                 __builtin_add_overflow(last, end, &last);
    }
    overflow = overflow || __builtin_add_overflow(last, uint64_t{1}, &end) ||
               __builtin_mul_overflow(end, static_cast<uint64_t>(t.element_size()), &end);
    if (overflow) Fail(cls, absl::StrCat("the ", what, "'s view overflows"));
  }
  if (end > record->size || t.storage().nbytes() > record->size) {
    Fail(cls, absl::StrCat("the ", what, " ", Shape(t), " needs ",
                           std::max<uint64_t>(end, t.storage().nbytes()),
                           " bytes; its record holds ", record->size));
  }
}

// The optional tensor `v` (None or a tensor); anything else is a defect.
at::Tensor OptionalTensor(const std::string& cls, const c10::IValue& v, const char* what) {
  if (v.isNone()) return at::Tensor();
  if (!v.isTensor()) Fail(cls, absl::StrCat("the ", what, " is a ", v.tagKind(), ", not a tensor"));
  return v.toTensor();
}

// The bias of a layer with `out` output channels: absent, or a vector of `out`.
void CheckBias(const std::string& cls, const at::Tensor& bias, int64_t out) {
  if (!bias.defined()) return;
  if (bias.dim() != 1 || bias.size(0) != out) {
    Fail(cls,
         absl::StrCat("the bias is ", Shape(bias), "; the weight has ", out, " output channels"));
  }
}

// Conv{2,3}dPackedParamsBase: version 2 ("2", [config as int16, weight], [bias]) or
// version 3 (3, config, [weight, bias]); config = [spatial rank k, stride x k,
// padding x k, dilation x k, output padding x k, groups, flags].
void CheckConv(const std::string& cls, int64_t k, const c10::IValue& state) {
  if (!state.isTuple()) Fail(cls, "the state is not a tuple");
  const auto& e = state.toTupleRef().elements();
  if (e.size() != 3) Fail(cls, absl::StrCat("the state has ", e.size(), " items, not 3"));
  std::vector<int64_t> config;
  at::Tensor weight;
  at::Tensor bias;
  if (e[0].isString() && e[0].toStringRef() == "2") {
    if (!e[1].isTensorList() || !e[2].isList())
      Fail(cls, "the version 2 state's lists are not tensor lists");
    const auto tensors = e[1].toTensorList();
    if (tensors.size() != 2) {
      Fail(cls, absl::StrCat("the version 2 state has ", tensors.size(), " tensors, not 2"));
    }
    const at::Tensor packed = tensors.get(0);
    CheckInRecord(cls, packed, "configuration record");
    if (packed.scalar_type() != at::kShort || packed.dim() != 1 || packed.numel() > 64) {
      Fail(cls, absl::StrCat("the configuration record is ", packed.scalar_type(), " ",
                             Shape(packed), ", not a short vector of int16"));
    }
    const at::Tensor values = packed.to(at::kLong).contiguous();
    config.assign(values.data_ptr<int64_t>(), values.data_ptr<int64_t>() + values.numel());
    weight = tensors.get(1);
    const auto optional = e[2].toListRef();
    if (optional.size() > 1) Fail(cls, "the version 2 state has more than a bias besides");
    if (optional.size() == 1) bias = OptionalTensor(cls, optional[0], "bias");
  } else if (e[0].isInt() && e[0].toInt() == 3) {
    if (!e[1].isIntList() || !e[2].isList())
      Fail(cls, "the version 3 state's lists are not an int list and a list");
    config = e[1].toIntVector();
    if (config.size() > 64)
      Fail(cls, absl::StrCat("the configuration has ", config.size(), " values"));
    const auto tensors = e[2].toListRef();
    if (tensors.size() != 2) {
      Fail(cls, absl::StrCat("the version 3 state has ", tensors.size(), " tensors, not 2"));
    }
    weight = OptionalTensor(cls, tensors[0], "weight");
    bias = OptionalTensor(cls, tensors[1], "bias");
  } else {
    return;  // a version this check does not read (its __setstate__ decides)
  }
  const size_t want = static_cast<size_t>(4 * k + 3);
  if (config.size() != want) {
    Fail(cls, absl::StrCat("the configuration has ", config.size(), " values; a ", k,
                           "-d convolution's has ", want));
  }
  if (config[0] != k) {
    Fail(cls, absl::StrCat("the configuration's spatial rank is ", config[0], ", not ", k));
  }
  constexpr int64_t kMax = 1 << 16;
  auto range = [&](const char* what, size_t first, int64_t lo) {
    for (size_t i = first; i < first + static_cast<size_t>(k); ++i) {
      if (config[i] < lo || config[i] > kMax) {
        Fail(cls, absl::StrCat("the ", what, " ", config[i], " is outside [", lo, ", ", kMax, "]"));
      }
    }
  };
  range("stride", 1, 1);
  range("padding", 1 + k, 0);
  range("dilation", 1 + 2 * k, 1);
  range("output padding", 1 + 3 * k, 0);
  const int64_t groups = config[static_cast<size_t>(4 * k + 1)];
  const int64_t flags = config[static_cast<size_t>(4 * k + 2)];
  if (groups < 1 || groups > kMax) Fail(cls, absl::StrCat("the groups are ", groups));
  if (flags != 0 && flags != 1) Fail(cls, absl::StrCat("unknown flags ", flags));
  const bool transposed = flags == 1;
  if (!weight.defined() || !weight.is_quantized())
    Fail(cls, "the weight is not a quantized tensor");
  if (weight.dim() != k + 2) {
    Fail(cls, absl::StrCat("the weight is ", Shape(weight), "; a ", k, "-d convolution's has ",
                           k + 2, " dimensions"));
  }
  for (int64_t d = 0; d < weight.dim(); ++d) {
    if (weight.size(d) < 1) Fail(cls, absl::StrCat("the weight is ", Shape(weight)));
  }
  if (weight.size(0) % groups != 0) {
    Fail(cls, absl::StrCat("the groups (", groups, ") do not divide the weight's ", weight.size(0),
                           " channels"));
  }
  CheckBias(cls, bias, transposed ? weight.size(1) * groups : weight.size(0));
}

// LinearPackedParamsBase: (weight, bias).
void CheckLinear(const std::string& cls, const c10::IValue& state) {
  if (!state.isTuple()) Fail(cls, "the state is not a tuple");
  const auto& e = state.toTupleRef().elements();
  if (e.size() != 2) Fail(cls, absl::StrCat("the state has ", e.size(), " items, not 2"));
  const at::Tensor weight = OptionalTensor(cls, e[0], "weight");
  if (!weight.defined() || !weight.is_quantized() || weight.dim() != 2) {
    Fail(cls, "the weight is not a quantized matrix");
  }
  CheckInRecord(cls, weight, "weight");
  const at::Tensor bias = OptionalTensor(cls, e[1], "bias");
  if (bias.defined()) CheckInRecord(cls, bias, "bias");
  CheckBias(cls, bias, weight.size(0));
}

// One pickle of the archive (constants.pkl or data.pkl, its records under
// `records`), unpickled with every packed-parameter state checked.
absl::Status CheckPickle(const ZipReader& zip, const std::string& pickle,
                         const std::string& records, uint64_t* budget, const std::string& what) {
  auto read_record = [&](const std::string& key) -> at::DataPtr {
    auto entry = zip.Find(records + key);
    if (!entry.ok()) throw NotChecked(std::string(entry.status().message()));
    auto bytes = zip.ReadToString(**entry, *budget);
    if (!bytes.ok()) throw NotChecked(std::string(bytes.status().message()));
    *budget -= bytes->size();
    auto* record = new Record;
    record->size = bytes->size();
    record->words.resize(bytes->size() / 8 + 1);  // 8-byte aligned
    std::memcpy(record->words.data(), bytes->data(), bytes->size());
    return at::DataPtr(record->words.data(), record, &DeleteRecord, at::Device(at::kCPU));
  };
  auto unit = std::make_shared<torch::jit::CompilationUnit>();
  auto resolve = [&](const c10::QualifiedName& name) {
    const std::string qualified = name.qualifiedName();
    if (!absl::StartsWith(qualified, "__torch__.")) {
      // a type tag ("List[Optional[Tensor]]"), as torch::jit::load parses it
      return c10::StrongTypePtr(unit, torch::jit::Unpickler::defaultTypeParser(qualified));
    }
    c10::ClassTypePtr cls;
    if (absl::StartsWith(qualified, kPrefix)) cls = torch::getCustomClass(qualified);
    // A module's or TorchScript class's type: an empty stand-in (nothing of the
    // archive's code runs here; its objects are not built).
    if (cls == nullptr) cls = c10::ClassType::create(c10::QualifiedName(qualified), unit);
    return c10::StrongTypePtr(unit, cls);
  };
  auto check = [](const c10::StrongTypePtr& type, c10::IValue state) {
    const auto cls = type.type_->expect<c10::ClassType>();
    const std::string qualified = cls->name() ? cls->name()->qualifiedName() : "";
    const std::string name =
        absl::StartsWith(qualified, kPrefix) ? qualified.substr(sizeof(kPrefix) - 1) : "";
    if (name == "Conv2dPackedParamsBase") {
      CheckConv(name, 2, state);
    } else if (name == "Conv3dPackedParamsBase") {
      CheckConv(name, 3, state);
    } else if (name == "LinearPackedParamsBase") {
      CheckLinear(name, state);
    }  // other quantized classes (embeddings, dynamic linear) are not checked here
    return c10::ivalue::Object::create(type, 0);
  };
  size_t pos = 0;
  auto reader = [&](char* out, size_t n) -> size_t {
    const size_t k = std::min(n, pickle.size() - pos);
    std::memcpy(out, pickle.data() + pos, k);
    pos += k;
    return k;
  };
  try {
    torch::jit::Unpickler unpickler(reader, resolve, check, read_record, at::Device(at::kCPU));
    unpickler.parse_ivalue();
  } catch (const Defect& e) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": its packed parameters do not fit: ", e.what()));
  } catch (const std::exception&) {
    return absl::OkStatus();  // not checked here; the load decides
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckPackedParams(const ZipReader& zip, const std::string& what) {
  // Every record read at most once per pickle: together no more than twice what
  // the archive holds.
  uint64_t budget = 0;
  for (const ZipReader::Entry& entry : zip.entries()) {
    if (__builtin_add_overflow(budget, entry.size, &budget)) budget = UINT64_MAX;
  }
  if (__builtin_mul_overflow(budget, uint64_t{2}, &budget)) budget = UINT64_MAX;
  for (const char* archive : {"constants", "data"}) {
    const std::string pkl = absl::StrCat("/", archive, ".pkl");
    for (const ZipReader::Entry& entry : zip.entries()) {
      if (!absl::EndsWith(entry.name, pkl) ||
          entry.name.find('/') + pkl.size() != entry.name.size()) {
        continue;  // only <root>/<archive>.pkl
      }
      auto text = zip.ReadToString(entry, uint64_t{64} << 20);
      if (!text.ok() || !absl::StrContains(*text, "torch.classes.quantized")) continue;
      const std::string records =
          absl::StrCat(entry.name.substr(0, entry.name.size() - pkl.size()), "/", archive, "/");
      RETURN_IF_ERROR(CheckPickle(zip, *text, records, &budget, what));
    }
  }
  return absl::OkStatus();
}

}  // namespace modelserver
