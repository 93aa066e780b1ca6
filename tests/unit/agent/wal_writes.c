/*
 * wal_writes.c - see wal_writes.h.
 */
#define _GNU_SOURCE /* RTLD_NEXT, pwrite64 */
#include "wal_writes.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

atomic_int wal_writes_counting;
atomic_int wal_writes_seen;
atomic_int wal_writes_fail;

/* Whether `fd` is a file whose name ends in "-wal". */
static int is_wal(int fd)
{
  char link[64], target[512];
  ssize_t length;

  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  length = readlink(link, target, sizeof(target) - 1);
  return length > 4 && memcmp(target + length - 4, "-wal", 4) == 0;
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
  ssize_t (*real)(int, const void *, size_t, off_t) =
      (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
  int counting = atomic_load(&wal_writes_counting), failing = atomic_load(&wal_writes_fail);

  if ((counting || failing) && is_wal(fd)) {
    if (failing) {
      errno = ENOSPC;
      return -1;
    }
    atomic_fetch_add(&wal_writes_seen, 1);
  }
  return real ? real(fd, buf, count, offset) : -1;
}
