#include "common/npy.h"

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace modelserver {
namespace {

struct DescrMap {
  const char* descr;
  DType dtype;
};
constexpr DescrMap kDescrs[] = {
    {"<f4", DType::kFloat32}, {"<f8", DType::kFloat64}, {"<f2", DType::kFloat16},
    {"|u1", DType::kUInt8},   {"|i1", DType::kInt8},    {"<i4", DType::kInt32},
    {"<i8", DType::kInt64},   {"|b1", DType::kBool},
};

// Value of 'key' in the header dict text, up to the next top-level comma.
absl::StatusOr<std::string> HeaderField(const std::string& header, const std::string& key) {
  const std::string needle = "'" + key + "':";
  const size_t p = header.find(needle);
  if (p == std::string::npos) return absl::InvalidArgumentError("npy header lacks '" + key + "'");
  size_t i = p + needle.size();
  while (i < header.size() && header[i] == ' ') ++i;
  if (i < header.size() && header[i] == '(') {
    const size_t close = header.find(')', i);
    if (close == std::string::npos) return absl::InvalidArgumentError("npy header shape unclosed");
    return header.substr(i, close - i + 1);
  }
  size_t end = header.find_first_of(",}", i);
  if (end == std::string::npos) end = header.size();
  return std::string(absl::StripAsciiWhitespace(header.substr(i, end - i)));
}

}  // namespace

absl::StatusOr<HostTensor> ParseNpy(const std::string& bytes) {
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    return absl::InvalidArgumentError("not a .npy file (no \\x93NUMPY magic)");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return absl::InvalidArgumentError("npy header truncated");
    for (int k = 0; k < 4; ++k)
      header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + k])) << (8 * k);
    offset = 12;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("npy format version ", major, " is unknown"));
  }
  if (bytes.size() < offset + header_len) return absl::InvalidArgumentError("npy header truncated");
  const std::string header = bytes.substr(offset, header_len);
  ASSIGN_OR_RETURN(std::string descr, HeaderField(header, "descr"));
  ASSIGN_OR_RETURN(std::string fortran, HeaderField(header, "fortran_order"));
  ASSIGN_OR_RETURN(std::string shape, HeaderField(header, "shape"));
  HostTensor t;
  descr = std::string(absl::StripSuffix(absl::StripPrefix(descr, "'"), "'"));
  for (const auto& d : kDescrs) {
    if (descr == d.descr) t.dtype = d.dtype;
  }
  if (t.dtype == DType::kUnspecified) {
    return absl::InvalidArgumentError(absl::StrCat("npy dtype ", descr, " is not supported"));
  }
  if (fortran != "False") return absl::InvalidArgumentError("npy file is in Fortran order");
  shape = shape.substr(1, shape.size() - 2);
  for (absl::string_view part : absl::StrSplit(shape, ',', absl::SkipWhitespace())) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) {
      return absl::InvalidArgumentError(absl::StrCat("npy shape (", shape, ") is malformed"));
    }
    t.shape.push_back(d);
  }
  t.data = bytes.substr(offset + header_len);
  RETURN_IF_ERROR(CheckTensorBytes(t.dtype, t.shape, t.data.size()));
  return t;
}

absl::StatusOr<HostTensor> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto t = ParseNpy(ss.str());
  if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", t.status().message()));
  return t;
}

absl::Status WriteNpy(const std::string& path, const HostTensor& t) {
  const char* descr = nullptr;
  for (const auto& d : kDescrs) {
    if (d.dtype == t.dtype) descr = d.descr;
  }
  if (descr == nullptr) return absl::InvalidArgumentError("dtype has no npy equivalent");
  std::string shape = absl::StrJoin(t.shape, ", ");
  if (t.shape.size() == 1) shape += ",";
  std::string header =
      absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (", shape, "), }");
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  out.write("\x93NUMPY\x01\x00", 8);
  const char len[2] = {static_cast<char>(header.size() & 0xff),
                       static_cast<char>(header.size() >> 8)};
  out.write(len, 2);
  out << header;
  out.write(t.data.data(), static_cast<std::streamsize>(t.data.size()));
  return out ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path));
}

}  // namespace modelserver
