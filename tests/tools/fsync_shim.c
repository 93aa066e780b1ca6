/*
 * fsync_shim.c - an LD_PRELOAD shim for the benchmarks: a store device's
 * slow flash on a machine whose fsync is fast. fsync() and fdatasync()
 * (Debian's SQLite calls the latter) are counted, and delayed by
 * POS_FSYNC_DELAY_US microseconds each before the real call:
 *
 *   POS_FSYNC_DELAY_US    0 (unset) = no delay; 5000 = an eMMC's 5 ms;
 *                         -1 = skip the sync itself (returns 0 at once):
 *                         the CPU a process spends with no fsync at all,
 *                         for figures only, never durability
 *   POS_FSYNC_COUNT_FILE  the number of calls so far, rewritten in place
 *                         (one decimal line) after each call and at exit,
 *                         so a benchmark reads it before and after its load
 *                         while the process runs. Put it on tmpfs: on disk
 *                         each rewrite would count in the process's
 *                         write_bytes.
 *
 * Counted calls are those of any thread. Threads never wait for each other
 * here (beyond the delay each sleeps); two calls finishing together may
 * write the file in either order, so a read while the process runs may
 * trail by a call or two. The count written at exit is exact.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef int (*fsync_shim_fn)(int fd);

static atomic_ulong fsync_shim_calls;
static atomic_int fsync_shim_count_fd = -1;
static long fsync_shim_delay_us;
static int fsync_shim_skip;
/* The real functions, found once at load (before any thread runs). */
static fsync_shim_fn fsync_shim_real[2];

/* Writes the count at offset 0 of the count file, padded so that a shorter
 * number never leaves digits of a longer one behind. */
static void fsync_shim_publish(unsigned long calls)
{
  char line[24];
  int fd = atomic_load(&fsync_shim_count_fd);
  int len;

  if (fd < 0)
    return;
  len = snprintf(line, sizeof(line), "%20lu\n", calls);
  if (len > 0 && pwrite(fd, line, (size_t)len, 0) < 0) {
    /* Nothing to tell: the count is for figures, and the sync goes on. */
  }
}

__attribute__((constructor)) static void fsync_shim_init(void)
{
  const char *delay = getenv("POS_FSYNC_DELAY_US");
  const char *path = getenv("POS_FSYNC_COUNT_FILE");

  if (delay && *delay) {
    long value = strtol(delay, NULL, 10);
    fsync_shim_skip = value < 0;
    fsync_shim_delay_us = value > 0 ? value : 0;
  }
  if (path && *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    atomic_store(&fsync_shim_count_fd, fd);
    fsync_shim_publish(0);
  }
  fsync_shim_real[0] = (fsync_shim_fn)dlsym(RTLD_NEXT, "fsync");
  fsync_shim_real[1] = (fsync_shim_fn)dlsym(RTLD_NEXT, "fdatasync");
}

__attribute__((destructor)) static void fsync_shim_fini(void)
{
  fsync_shim_publish(atomic_load(&fsync_shim_calls));
}

/* The delay, the real call (unless skipped), the count. `which`: 0 for
 * fsync, 1 for fdatasync. */
static int fsync_shim_call(int which, int fd)
{
  int saved, rc = 0;

  if (fsync_shim_delay_us > 0) {
    struct timespec wait = {.tv_sec = fsync_shim_delay_us / 1000000,
                            .tv_nsec = (fsync_shim_delay_us % 1000000) * 1000};
    while (nanosleep(&wait, &wait) != 0 && errno == EINTR) {
    }
  }
  if (!fsync_shim_skip) {
    if (!fsync_shim_real[which]) {
      errno = ENOSYS;
      return -1;
    }
    rc = fsync_shim_real[which](fd);
  }
  saved = errno;
  fsync_shim_publish(atomic_fetch_add(&fsync_shim_calls, 1) + 1);
  errno = saved;
  return rc;
}

int fsync(int fd) { return fsync_shim_call(0, fd); }

int fdatasync(int fd) { return fsync_shim_call(1, fd); }
