#ifndef MODELSERVER_COMMON_WIRE_SIZE_H_
#define MODELSERVER_COMMON_WIRE_SIZE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// Sizes, offsets and counts that a request states (a JSON number, a proto field,
// a header, a length prefix) become size_t only through these: no negative value
// is cast to an unsigned one, no sum or product wraps, and each is checked
// against a limit before anything is allocated or copied. INVALID_ARGUMENT naming
// `what` otherwise.
//
//   ASSIGN_OR_RETURN(size_t n, WireSize(j.get<int64_t>(), body.size() - at, "binary_data_size"));

// `v` as a size when 0 <= v <= limit.
absl::StatusOr<size_t> WireSize(int64_t v, size_t limit, absl::string_view what);
// An unsigned value (a uint64 JSON number) when v <= limit.
absl::StatusOr<size_t> WireSizeUnsigned(uint64_t v, size_t limit, absl::string_view what);
// Decimal digits only (no sign, no space, no "0x"), at most `limit`.
absl::StatusOr<size_t> WireSizeText(absl::string_view text, size_t limit, absl::string_view what);

// a + b, or INVALID_ARGUMENT when it wraps or passes `limit`.
absl::StatusOr<size_t> CheckedAdd(size_t a, size_t b, size_t limit, absl::string_view what);
// a * b, or INVALID_ARGUMENT when it wraps or passes `limit`.
absl::StatusOr<size_t> CheckedMul(size_t a, size_t b, size_t limit, absl::string_view what);

// OK when [offset, offset + n) lies within [0, total).
absl::Status CheckSpan(size_t offset, size_t n, size_t total, absl::string_view what);

// The element count of `shape` (no negative dimension, no overflow), at most
// `limit`; times `element_bytes` it is still at most SIZE_MAX.
absl::StatusOr<size_t> ElementCount(const std::vector<int64_t>& shape, size_t element_bytes,
                                    size_t limit, absl::string_view what);

}  // namespace modelserver

#endif  // MODELSERVER_COMMON_WIRE_SIZE_H_
