#include "common/dtype_convert.h"

#include <fp16.h>  // Debian's libfp16-dev: IEEE half <-> float, as PyTorch uses

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

// bfloat16 is the top half of a float32: widening is a shift; narrowing rounds
// to nearest-even and keeps NaNs quiet (fp16.h has no bfloat16).
float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

std::vector<float> ToFloats(const HostTensor& t) {
  const size_t n = static_cast<size_t>(t.NumElements());
  std::vector<float> out(n);
  const char* p = t.data.data();
  for (size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::kFloat32:
        std::memcpy(&out[i], p + 4 * i, 4);
        break;
      case DType::kFloat64: {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        out[i] = static_cast<float>(d);
        break;
      }
      case DType::kFloat16: {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = fp16_ieee_to_fp32_value(h);
        break;
      }
      default: {  // kBFloat16 (checked by the caller)
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = Bf16ToFloat(h);
      }
    }
  }
  return out;
}

void FromFloats(const std::vector<float>& v, HostTensor* out) {
  out->data.resize(v.size() * DTypeSize(out->dtype));
  char* p = out->data.data();
  for (size_t i = 0; i < v.size(); ++i) {
    switch (out->dtype) {
      case DType::kFloat32:
        std::memcpy(p + 4 * i, &v[i], 4);
        break;
      case DType::kFloat64: {
        const double d = v[i];
        std::memcpy(p + 8 * i, &d, 8);
        break;
      }
      case DType::kFloat16: {
        const uint16_t h = fp16_ieee_from_fp32_value(v[i]);
        std::memcpy(p + 2 * i, &h, 2);
        break;
      }
      default: {
        const uint16_t h = FloatToBf16(v[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
    }
  }
}

}  // namespace

bool IsWireFloat(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

absl::StatusOr<HostTensor> ConvertFloat(const HostTensor& t, DType to) {
  if (!IsWireFloat(t.dtype) || !IsWireFloat(to)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot convert ", DTypeName(t.dtype), " to ",
                                                   DTypeName(to),
                                                   ": only between float32, "
                                                   "float64, float16 and bfloat16"));
  }
  RETURN_IF_ERROR(CheckTensorBytes(t.dtype, t.shape, t.data.size()));
  if (t.dtype == to) return t;
  HostTensor out;
  out.dtype = to;
  out.shape = t.shape;
  // float64 -> float32 -> narrower would round twice; float64 is only ever
  // converted to float32 (the server's compute type) and back.
  FromFloats(ToFloats(t), &out);
  return out;
}

}  // namespace modelserver
