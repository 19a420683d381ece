#ifndef MODELSERVER_SERVER_UTIL_LOGGING_H_
#define MODELSERVER_SERVER_UTIL_LOGGING_H_

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace modelserver {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Process-wide minimum level (default kInfo). Thread-safe.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug|info|warning|error".
bool ParseLogLevel(absl::string_view text, LogLevel* level);

// Writes one line "<RFC3339 time> <LEVEL> <message>" to stderr. Thread-safe.
void LogLine(LogLevel level, absl::string_view message);

}  // namespace modelserver

// LOG_INFO("loaded ", name, " in ", ms, " ms"): arguments are absl::StrCat'ed,
// and only evaluated when the level is enabled.
#define MODELSERVER_LOG_(level, ...)                                               \
  do {                                                                             \
    if (static_cast<int>(level) >= static_cast<int>(::modelserver::GetLogLevel())) \
      ::modelserver::LogLine(level, ::absl::StrCat(__VA_ARGS__));                  \
  } while (0)
#define LOG_DEBUG(...) MODELSERVER_LOG_(::modelserver::LogLevel::kDebug, __VA_ARGS__)
#define LOG_INFO(...) MODELSERVER_LOG_(::modelserver::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARNING(...) MODELSERVER_LOG_(::modelserver::LogLevel::kWarning, __VA_ARGS__)
#define LOG_ERROR(...) MODELSERVER_LOG_(::modelserver::LogLevel::kError, __VA_ARGS__)

#endif  // MODELSERVER_SERVER_UTIL_LOGGING_H_
