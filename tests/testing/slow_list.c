/* LD_PRELOAD shim for tests: once the file named by $SLOWLIST_ARM exists,
 * opening a directory (opendir(), or openat() with O_DIRECTORY as libstdc++'s
 * directory_iterator does) whose path contains "/slowlist" sleeps $SLOWLIST_SECONDS (default
 * 20) -- a network filesystem that takes seconds to list a directory. While it
 * sleeps, the file named by $SLOWLIST_MARKER holds a token unique to that sleep
 * (removed when the sleep ends), so a test can tell that work it did happened
 * entirely while a listing was stuck. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static int armed(void) {
  const char* arm = getenv("SLOWLIST_ARM");
  return arm != NULL && access(arm, F_OK) == 0;
}

static void stuck_listing(void) {
  const char* marker = getenv("SLOWLIST_MARKER");
  const char* secs = getenv("SLOWLIST_SECONDS");
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  char token[64];
  snprintf(token, sizeof token, "%d-%ld-%ld\n", (int)getpid(), (long)now.tv_sec,
           (long)now.tv_nsec);
  if (marker != NULL) {
    FILE* f = fopen(marker, "w");
    if (f != NULL) {
      fputs(token, f);
      fclose(f);
    }
  }
  sleep(secs != NULL ? (unsigned)atoi(secs) : 20u);
  if (marker != NULL) unlink(marker);
}

DIR* opendir(const char* path) {
  DIR* (*real)(const char*) = (DIR * (*)(const char*)) dlsym(RTLD_NEXT, "opendir");
  if (path != NULL && strstr(path, "/slowlist") != NULL && armed()) stuck_listing();
  return real(path);
}

int openat(int dirfd, const char* path, int flags, ...) {
  int (*real)(int, const char*, int, ...) =
      (int (*)(int, const char*, int, ...))dlsym(RTLD_NEXT, "openat");
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = (flags & O_CREAT) ? (mode_t)va_arg(ap, int) : 0;
  va_end(ap);
  if ((flags & O_DIRECTORY) && path != NULL && strstr(path, "/slowlist") != NULL && armed()) {
    stuck_listing();
  }
  return real(dirfd, path, flags, mode);
}
