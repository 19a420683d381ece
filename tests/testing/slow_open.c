/* LD_PRELOAD shim for tests: open() of any path containing "/slowload/" first
 * sleeps 60 s -- a model load that is stuck (a slow network filesystem, a huge
 * parse) while the server is asked to stop. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int call_real(const char* name, const char* path, int flags, mode_t mode) {
  int (*real)(const char*, int, ...) = (int (*)(const char*, int, ...))dlsym(RTLD_NEXT, name);
  if (path != NULL && strstr(path, "/slowload/") != NULL) sleep(60);
  return real(path, flags, mode);
}

/* The mode argument, present only with O_CREAT. */
static mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return call_real("open", path, flags, mode);
}

int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return call_real("open64", path, flags, mode);
}
