/* LD_PRELOAD shim for tests: renameat2() with any flag fails with EINVAL, as on
 * Linux NFS and many FUSE filesystems; without flags it renames as usual. Loaded
 * into the store tests and the real server, it shows the store publishes on such
 * filesystems with the same guarantees. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>

int renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
              unsigned int flags) {
  if (flags != 0) {
    errno = EINVAL;
    return -1;
  }
  return renameat(olddirfd, oldpath, newdirfd, newpath);
}
