#include "common/wire_size.h"

#include <algorithm>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace modelserver {

absl::StatusOr<size_t> WireSize(int64_t v, size_t limit, absl::string_view what) {
  if (v < 0) return absl::InvalidArgumentError(absl::StrCat(what, " is ", v, ", a negative size"));
  return WireSizeUnsigned(static_cast<uint64_t>(v), limit, what);
}

absl::StatusOr<size_t> WireSizeUnsigned(uint64_t v, size_t limit, absl::string_view what) {
  if (v > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", v, ", over the ", limit, " that fit here"));
  }
  return static_cast<size_t>(v);
}

absl::StatusOr<size_t> WireSizeText(absl::string_view text, size_t limit, absl::string_view what) {
  if (text.empty() || text.size() > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", text.substr(0, 24), "' is not a decimal size"));
  }
  uint64_t v = 0;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " '", text.substr(0, 24), "' is not a decimal size"));
    }
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return absl::InvalidArgumentError(absl::StrCat(what, " '", text, "' is too large"));
    }
    v = v * 10 + digit;
  }
  return WireSizeUnsigned(v, limit, what);
}

absl::StatusOr<size_t> CheckedAdd(size_t a, size_t b, size_t limit, absl::string_view what) {
  if (a > limit || b > limit - a) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", a, " + ", b, " is over the limit of ", limit));
  }
  return a + b;
}

absl::StatusOr<size_t> CheckedMul(size_t a, size_t b, size_t limit, absl::string_view what) {
  if (a != 0 && b > limit / a) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", a, " x ", b, " is over the limit of ", limit));
  }
  return a * b;
}

absl::Status CheckSpan(size_t offset, size_t n, size_t total, absl::string_view what) {
  if (offset > total || n > total - offset) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", n, " bytes at offset ", offset,
                                                   " run past the ", total, " there are"));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> ElementCount(const std::vector<int64_t>& shape, size_t element_bytes,
                                    size_t limit, absl::string_view what) {
  const size_t per = element_bytes == 0 ? 1 : element_bytes;
  const size_t cap = std::min(limit, std::numeric_limits<size_t>::max() / per);
  size_t count = 1;
  bool zero = false;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " shape [", absl::StrJoin(shape, ","), "] has a negative dimension"));
    }
    if (d == 0) zero = true;
  }
  if (zero) return size_t{0};
  for (int64_t d : shape) {
    if (static_cast<uint64_t>(d) > cap / count) {
      return absl::InvalidArgumentError(absl::StrCat(what, " shape [", absl::StrJoin(shape, ","),
                                                     "] is too large (over ", cap, " elements)"));
    }
    count *= static_cast<size_t>(d);
  }
  return count;
}

}  // namespace modelserver
