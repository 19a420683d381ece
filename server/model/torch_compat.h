#ifndef MODELSERVER_SERVER_MODEL_TORCH_COMPAT_H_
#define MODELSERVER_SERVER_MODEL_TORCH_COMPAT_H_

// The LibTorch APIs this project uses that differ between the platforms it builds
// on (Debian 12's LibTorch 1.13, Debian 13's 2.6, official 2.x): the one place
// that tests TORCH_VERSION_MAJOR.

#include <c10/core/Allocator.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <cstddef>
#include <string>

namespace modelserver {
namespace torch_compat {

// A c10 warning handler that receives the message only.
class WarningSink : public c10::WarningHandler {
 public:
  virtual void Warn(const std::string& message) = 0;

#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& warning) override { Warn(warning.msg()); }
#else
  void process(const c10::SourceLocation& /*location*/, const std::string& message,
               const bool /*verbatim*/) override {
    Warn(message);
  }
#endif
};

// Installs a handler for the calling thread (c10's handler is thread-local) until
// it goes out of scope.
#if TORCH_VERSION_MAJOR >= 2
using WarningHandlerGuard = c10::WarningUtils::WarningHandlerGuard;
#else
using WarningHandlerGuard = c10::Warning::WarningHandlerGuard;
#endif

// A c10 allocator implemented by Allocate() (LibTorch 2.3 made allocate()
// non-const and added copy_data()).
class AllocatorBase : public c10::Allocator {
 public:
  virtual c10::DataPtr Allocate(size_t n) const = 0;

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  c10::DataPtr allocate(size_t n) override { return Allocate(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
#else
  c10::DataPtr allocate(size_t n) const override { return Allocate(n); }
#endif
};

}  // namespace torch_compat
}  // namespace modelserver

#endif  // MODELSERVER_SERVER_MODEL_TORCH_COMPAT_H_
