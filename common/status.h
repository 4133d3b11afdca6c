// Return-if-error helpers shaped like Abseil's (Debian's absl 20220623 has
// none).
#ifndef LATHE_COMMON_STATUS_H_
#define LATHE_COMMON_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LATHE_CONCAT_INNER_(a, b) a##b
#define LATHE_CONCAT_(a, b) LATHE_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function
// when it is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status lathe_status_ = (expr);         \
    if (!lathe_status_.ok()) return lathe_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns `x` from a StatusOr,
// or returns its status from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, expr)                                           \
  LATHE_ASSIGN_OR_RETURN_IMPL_(LATHE_CONCAT_(lathe_statusor_, __LINE__), lhs, \
                               expr)

#define LATHE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#endif  // LATHE_COMMON_STATUS_H_
