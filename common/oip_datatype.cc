#include "common/oip_datatype.h"

#include "absl/strings/str_cat.h"

namespace modelserver {
namespace {

struct DatatypeName {
  const char* name;
  DType dtype;
};
constexpr DatatypeName kDatatypes[] = {
    {"FP32", DType::kFloat32}, {"FP16", DType::kFloat16}, {"BF16", DType::kBFloat16},
    {"FP64", DType::kFloat64}, {"UINT8", DType::kUInt8},  {"INT8", DType::kInt8},
    {"INT32", DType::kInt32},  {"INT64", DType::kInt64},  {"BOOL", DType::kBool}};

}  // namespace

absl::StatusOr<DType> DTypeFromDatatype(absl::string_view datatype) {
  for (const DatatypeName& d : kDatatypes) {
    if (datatype == d.name) return d.dtype;
  }
  if (datatype == "UINT16" || datatype == "INT16" || datatype == "UINT32" || datatype == "UINT64" ||
      datatype == "BYTES") {
    return absl::InvalidArgumentError(
        absl::StrCat("datatype ", datatype,
                     " is not supported by the models served here; use FP32 (or FP16, BF16, "
                     "FP64, UINT8, INT8, INT32, INT64, BOOL)"));
  }
  return absl::InvalidArgumentError(absl::StrCat("datatype '", datatype, "' is unknown"));
}

const char* DatatypeOf(DType dtype) {
  for (const DatatypeName& d : kDatatypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "";
}

}  // namespace modelserver
