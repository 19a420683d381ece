#ifndef MODELSERVER_COMMON_STATUS_MACROS_H_
#define MODELSERVER_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// RETURN_IF_ERROR(expr): returns the absl::Status of `expr` when it is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status modelserver_status_ = (expr);               \
    if (!modelserver_status_.ok()) return modelserver_status_; \
  } while (0)

#define MODELSERVER_CONCAT_INNER_(a, b) a##b
#define MODELSERVER_CONCAT_(a, b) MODELSERVER_CONCAT_INNER_(a, b)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the absl::StatusOr `expr`; returns its
// status when not OK, else moves its value into `lhs` (which may declare a
// variable: `ASSIGN_OR_RETURN(auto x, F());`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  MODELSERVER_ASSIGN_OR_RETURN_IMPL_(MODELSERVER_CONCAT_(statusor_, __LINE__), lhs, expr)

#define MODELSERVER_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                       \
  if (!statusor.ok()) return std::move(statusor).status();      \
  lhs = std::move(statusor).value()

#endif  // MODELSERVER_COMMON_STATUS_MACROS_H_
