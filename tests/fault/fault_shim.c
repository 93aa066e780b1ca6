/*
 * fault_shim.c - libpos-fault-shim.so: a storage fault shim for pos-agent,
 * loaded with LD_PRELOAD, so that the agent runs unchanged.
 *
 *   POS_FAULT_TRACK=/path/journal.db   files whose path starts with this are
 *                                      tracked (the database, -wal, -journal;
 *                                      never -shm, which SQLite rebuilds)
 *   POS_FAULT_UNDO_DIR=/path/undo      where the undo logs go (fault_undo.h)
 *   POS_FAULT_EIO_FILE=/path/eio       while this file exists, fsync and
 *                                      fdatasync of a tracked file fail with
 *                                      EIO without syncing anything
 *   POS_FAULT_SYNC_DELAY_US=N          each sync of a tracked file takes N
 *                                      microseconds longer (slow flash), so
 *                                      that a cut often lands between a
 *                                      commit's writes and its sync
 *
 * Power loss: every write and truncate of a tracked file since its last
 * successful sync is logged with its pre-image before it happens. The test
 * kills the agent with SIGKILL and runs pos-fault-powercut on the undo
 * directory, which rolls the files back to what a power cut would leave.
 * SIGKILL keeps the page cache, so the log needs no sync of its own: a log
 * record always reaches the page cache before the write it describes.
 *
 * Calls interposed: open, open64, openat, openat64, close, write, pwrite,
 * pwrite64, ftruncate, ftruncate64, fsync, fdatasync (the ones the Debian
 * libsqlite3 imports, plus their other names). One mutex serialises the
 * tracked calls, and a sync holds it from the real sync to the emptying of
 * the log, so no write can slip between the two.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "fault_undo.h"

#define SHIM_MAX_FDS 65536
#define SHIM_MAX_FILES 16
#define SHIM_PREIMAGE_CHUNK 65536

struct shim_file {
  char path[4096];
  int undo_fd;
  /* Pre-images are read through a descriptor of the shim's own: the
   * agent's may be write-only, or direct (O_DIRECT reads whole blocks only:
   * journal_vfs.c writes the WAL so). */
  int read_fd;
  uint64_t synced_size;
};

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*close_fn)(int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, off64_t);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*ftruncate64_fn)(int, off64_t);
typedef int (*sync_fn)(int);

static pthread_mutex_t shim_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t shim_once = PTHREAD_ONCE_INIT;
static const char *shim_track;
static const char *shim_undo_dir;
static const char *shim_eio_file;
static useconds_t shim_sync_delay_us;
static signed char shim_fd_file[SHIM_MAX_FDS]; /* file index + 1, 0 = untracked */
static struct shim_file shim_files[SHIM_MAX_FILES];
static int shim_file_count;

static open_fn real_open, real_open64;
static openat_fn real_openat, real_openat64;
static close_fn real_close;
static write_fn real_write;
static pwrite_fn real_pwrite;
static pwrite64_fn real_pwrite64;
static ftruncate_fn real_ftruncate;
static ftruncate64_fn real_ftruncate64;
static sync_fn real_fsync, real_fdatasync;

static void shim_die(const char *what, const char *path)
{
  char line[512];
  int n = snprintf(line, sizeof(line), "pos-fault-shim: %s %s: %s\n", what, path, strerror(errno));
  if (n > 0 && real_write)
    (void)real_write(2, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
  abort();
}

static void shim_init(void)
{
  real_open = (open_fn)dlsym(RTLD_NEXT, "open");
  real_open64 = (open_fn)dlsym(RTLD_NEXT, "open64");
  real_openat = (openat_fn)dlsym(RTLD_NEXT, "openat");
  real_openat64 = (openat_fn)dlsym(RTLD_NEXT, "openat64");
  real_close = (close_fn)dlsym(RTLD_NEXT, "close");
  real_write = (write_fn)dlsym(RTLD_NEXT, "write");
  real_pwrite = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
  real_pwrite64 = (pwrite64_fn)dlsym(RTLD_NEXT, "pwrite64");
  real_ftruncate = (ftruncate_fn)dlsym(RTLD_NEXT, "ftruncate");
  real_ftruncate64 = (ftruncate64_fn)dlsym(RTLD_NEXT, "ftruncate64");
  real_fsync = (sync_fn)dlsym(RTLD_NEXT, "fsync");
  real_fdatasync = (sync_fn)dlsym(RTLD_NEXT, "fdatasync");
  shim_track = getenv("POS_FAULT_TRACK");
  shim_undo_dir = getenv("POS_FAULT_UNDO_DIR");
  shim_eio_file = getenv("POS_FAULT_EIO_FILE");
  const char *delay = getenv("POS_FAULT_SYNC_DELAY_US");
  shim_sync_delay_us = delay ? (useconds_t)strtoul(delay, NULL, 10) : 0;
  if (shim_track && !*shim_track)
    shim_track = NULL;
  if (shim_track && !shim_undo_dir)
    shim_track = NULL;
}

static void shim_ready(void)
{
  pthread_once(&shim_once, shim_init);
}

/* Writes all of a buffer to an undo log (not tracked itself). */
static void shim_put(int fd, const void *data, size_t length, const char *path)
{
  const char *p = data;
  while (length > 0) {
    ssize_t n = real_write(fd, p, length);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      shim_die("cannot write the undo log of", path);
    p += n;
    length -= (size_t)n;
  }
}

/* Empties a file's undo log and records its size as synced. Lock held. */
static void shim_reset_log(struct shim_file *file, uint64_t synced_size)
{
  uint32_t path_length = (uint32_t)strlen(file->path);
  if (real_ftruncate(file->undo_fd, 0) || lseek(file->undo_fd, 0, SEEK_SET) < 0)
    shim_die("cannot empty the undo log of", file->path);
  shim_put(file->undo_fd, FAULT_UNDO_MAGIC, 4, file->path);
  shim_put(file->undo_fd, &path_length, sizeof(path_length), file->path);
  shim_put(file->undo_fd, file->path, path_length, file->path);
  shim_put(file->undo_fd, &synced_size, sizeof(synced_size), file->path);
  file->synced_size = synced_size;
}

/* The tracked file for a path just opened as fd, or -1. Lock held. */
static int shim_file_for(const char *path, int fd)
{
  size_t track_length = strlen(shim_track);
  if (strncmp(path, shim_track, track_length) != 0 || strstr(path + track_length, "-shm"))
    return -1;
  for (int i = 0; i < shim_file_count; i++)
    if (strcmp(shim_files[i].path, path) == 0)
      return i;
  if (shim_file_count == SHIM_MAX_FILES || strlen(path) >= sizeof(shim_files[0].path))
    return -1;
  struct shim_file *file = &shim_files[shim_file_count];
  snprintf(file->path, sizeof(file->path), "%s", path);
  const char *name = strrchr(path, '/');
  name = name ? name + 1 : path;
  char undo_path[4096 + 64];
  snprintf(undo_path, sizeof(undo_path), "%s/%s.undo", shim_undo_dir, name);
  file->undo_fd = real_open(undo_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (file->undo_fd < 0)
    shim_die("cannot open the undo log", undo_path);
  file->read_fd = real_open(path, O_RDONLY | O_CLOEXEC);
  if (file->read_fd < 0)
    shim_die("cannot open for reading", path);
  struct stat st;
  if (fstat(fd, &st))
    shim_die("cannot stat", path);
  /* An existing log belongs to an earlier run that a power cut already
   * played (or that stopped cleanly): what is on the file now is the
   * starting point. */
  shim_reset_log(file, (uint64_t)st.st_size);
  return shim_file_count++;
}

static void shim_opened(const char *path, int fd)
{
  if (fd < 0 || fd >= SHIM_MAX_FDS || !shim_track || !path)
    return;
  pthread_mutex_lock(&shim_lock);
  int index = shim_file_for(path, fd);
  shim_fd_file[fd] = (signed char)(index + 1);
  pthread_mutex_unlock(&shim_lock);
}

static struct shim_file *shim_tracked(int fd)
{
  if (fd < 0 || fd >= SHIM_MAX_FDS || !shim_fd_file[fd])
    return NULL;
  return &shim_files[shim_fd_file[fd] - 1];
}

/* Logs the pre-image of [offset, offset + length) of fd's file before a
 * write or truncate changes it. Lock held. */
static void shim_log(struct shim_file *file, int fd, uint32_t kind, uint64_t offset,
                     uint64_t length)
{
  struct stat st;
  if (fstat(fd, &st))
    shim_die("cannot stat", file->path);
  uint64_t size = (uint64_t)st.st_size;
  uint64_t pre_end = offset + length < size ? offset + length : size;
  struct fault_undo_record record = {
    .kind = kind, .offset = offset, .length = length, .size_before = size,
    .pre_length = pre_end > offset ? pre_end - offset : 0,
  };
  if (lseek(file->undo_fd, 0, SEEK_END) < 0)
    shim_die("cannot seek the undo log of", file->path);
  /* The path may name a new file since (SQLite deletes a WAL and makes it
   * again): the read descriptor follows it; a file that no longer has the
   * path is read through the writer's own descriptor. */
  struct stat read_st;
  int read_fd = file->read_fd;
  if (fstat(read_fd, &read_st) || read_st.st_ino != st.st_ino || read_st.st_dev != st.st_dev) {
    if (file->read_fd >= 0)
      real_close(file->read_fd);
    file->read_fd = real_open(file->path, O_RDONLY | O_CLOEXEC);
    read_fd = file->read_fd;
    if (read_fd < 0 || fstat(read_fd, &read_st) || read_st.st_ino != st.st_ino ||
        read_st.st_dev != st.st_dev)
      read_fd = fd;
  }
  shim_put(file->undo_fd, &record, sizeof(record), file->path);
  char chunk[SHIM_PREIMAGE_CHUNK];
  for (uint64_t done = 0; done < record.pre_length;) {
    size_t want = record.pre_length - done < sizeof(chunk) ? record.pre_length - done
                                                           : sizeof(chunk);
    ssize_t n = pread64(read_fd, chunk, want, (off64_t)(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      shim_die("cannot read the pre-image of", file->path);
    shim_put(file->undo_fd, chunk, (size_t)n, file->path);
    done += (uint64_t)n;
  }
}

static int shim_sync(int fd, sync_fn real)
{
  shim_ready();
  struct shim_file *file = shim_tracked(fd);
  if (!file)
    return real(fd);
  pthread_mutex_lock(&shim_lock);
  int rc;
  if (shim_eio_file && access(shim_eio_file, F_OK) == 0) {
    /* A failing device: nothing reached the platter, the writes stay
     * unsynced (and a power cut drops them). */
    errno = EIO;
    rc = -1;
  } else {
    if (shim_sync_delay_us)
      usleep(shim_sync_delay_us);
    rc = real(fd);
    if (rc == 0) {
      struct stat st;
      if (fstat(fd, &st))
        shim_die("cannot stat", file->path);
      shim_reset_log(file, (uint64_t)st.st_size);
    }
  }
  int saved = errno;
  pthread_mutex_unlock(&shim_lock);
  errno = saved;
  return rc;
}

static ssize_t shim_pwrite(int fd, const void *data, size_t length, off64_t offset, int wide)
{
  shim_ready();
  struct shim_file *file = shim_tracked(fd);
  if (!file)
    return wide ? real_pwrite64(fd, data, length, offset)
                : real_pwrite(fd, data, length, (off_t)offset);
  pthread_mutex_lock(&shim_lock);
  shim_log(file, fd, FAULT_UNDO_WRITE, (uint64_t)offset, length);
  ssize_t rc = wide ? real_pwrite64(fd, data, length, offset)
                    : real_pwrite(fd, data, length, (off_t)offset);
  int saved = errno;
  pthread_mutex_unlock(&shim_lock);
  errno = saved;
  return rc;
}

static int shim_truncate(int fd, off64_t size, int wide)
{
  shim_ready();
  struct shim_file *file = shim_tracked(fd);
  if (!file)
    return wide ? real_ftruncate64(fd, size) : real_ftruncate(fd, (off_t)size);
  pthread_mutex_lock(&shim_lock);
  struct stat st;
  if (fstat(fd, &st))
    shim_die("cannot stat", file->path);
  uint64_t cut = (uint64_t)size < (uint64_t)st.st_size ? (uint64_t)st.st_size - (uint64_t)size : 0;
  shim_log(file, fd, FAULT_UNDO_TRUNCATE, (uint64_t)size, cut);
  int rc = wide ? real_ftruncate64(fd, size) : real_ftruncate(fd, (off_t)size);
  int saved = errno;
  pthread_mutex_unlock(&shim_lock);
  errno = saved;
  return rc;
}

/* ---- the interposed calls ------------------------------------------------ */

/* open(2) and friends: as libc's, and a tracked path's fd is remembered. */
int open(const char *path, int flags, ...)
{
  shim_ready();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = (mode_t)va_arg(ap, int);
    va_end(ap);
  }
  int fd = real_open(path, flags, mode);
  shim_opened(path, fd);
  return fd;
}

/* See open(). */
int open64(const char *path, int flags, ...)
{
  shim_ready();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = (mode_t)va_arg(ap, int);
    va_end(ap);
  }
  int fd = real_open64(path, flags, mode);
  shim_opened(path, fd);
  return fd;
}

/* See open(); only absolute paths are tracked. */
int openat(int dirfd, const char *path, int flags, ...)
{
  shim_ready();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = (mode_t)va_arg(ap, int);
    va_end(ap);
  }
  int fd = real_openat(dirfd, path, flags, mode);
  shim_opened(path, fd);
  return fd;
}

/* See open(); only absolute paths are tracked. */
int openat64(int dirfd, const char *path, int flags, ...)
{
  shim_ready();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = (mode_t)va_arg(ap, int);
    va_end(ap);
  }
  int fd = real_openat64(dirfd, path, flags, mode);
  shim_opened(path, fd);
  return fd;
}

/* close(2): forgets the fd (the file's log stays until its next sync). */
int close(int fd)
{
  shim_ready();
  if (fd >= 0 && fd < SHIM_MAX_FDS && shim_fd_file[fd]) {
    pthread_mutex_lock(&shim_lock);
    shim_fd_file[fd] = 0;
    pthread_mutex_unlock(&shim_lock);
  }
  return real_close(fd);
}

/* write(2): a tracked fd's write is logged at the fd's current offset. */
ssize_t write(int fd, const void *data, size_t length)
{
  shim_ready();
  struct shim_file *file = shim_tracked(fd);
  if (!file)
    return real_write(fd, data, length);
  off_t offset = lseek(fd, 0, SEEK_CUR);
  if (offset < 0)
    return real_write(fd, data, length);
  pthread_mutex_lock(&shim_lock);
  shim_log(file, fd, FAULT_UNDO_WRITE, (uint64_t)offset, length);
  ssize_t rc = real_write(fd, data, length);
  int saved = errno;
  pthread_mutex_unlock(&shim_lock);
  errno = saved;
  return rc;
}

/* pwrite(2), logged for a tracked fd. */
ssize_t pwrite(int fd, const void *data, size_t length, off_t offset)
{
  shim_ready();
  return shim_pwrite(fd, data, length, offset, 0);
}

/* pwrite64, logged for a tracked fd. */
ssize_t pwrite64(int fd, const void *data, size_t length, off64_t offset)
{
  shim_ready();
  return shim_pwrite(fd, data, length, offset, 1);
}

/* ftruncate(2), logged for a tracked fd (the bytes cut off are the pre-image). */
int ftruncate(int fd, off_t size)
{
  shim_ready();
  return shim_truncate(fd, size, 0);
}

/* ftruncate64, see ftruncate(). */
int ftruncate64(int fd, off64_t size)
{
  shim_ready();
  return shim_truncate(fd, size, 1);
}

/* fsync(2): EIO while the EIO file exists; otherwise a success empties the log. */
int fsync(int fd)
{
  shim_ready();
  return shim_sync(fd, real_fsync);
}

/* fdatasync(2): see fsync(). */
int fdatasync(int fd)
{
  shim_ready();
  return shim_sync(fd, real_fdatasync);
}
