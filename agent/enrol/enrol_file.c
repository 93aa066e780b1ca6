/*
 * enrol_file.c - writing a key or certificate file so that nobody, not even
 * the file system after a power cut, sees half of it; see enrol.h.
 */
#include "enrol/enrol.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "platform/disk.h"

/* Writes all of `data` to `fd`, through short writes and signals. */
static int file_write_all(int fd, const unsigned char *data, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Creates `tmp` with `mode` from the start; a file of that name can only be
 * left by an earlier process with our pid (after a reboot), so it goes. */
static int file_create(const char *tmp, unsigned mode)
{
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);

  if (fd < 0 && errno == EEXIST && unlink(tmp) == 0)
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
  return fd;
}

/* See enrol.h. */
int enrol_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode,
                            char *err, size_t err_size)
{
  char tmp[4096];
  const char *what = NULL;
  int saved = 0;
  int fd = -1;
  int rc;

  rc = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
  if (rc < 0 || (size_t)rc >= sizeof(tmp)) {
    snprintf(err, err_size, "cannot write %s: the path is too long; use a shorter one", path);
    return -1;
  }
  fd = file_create(tmp, mode);
  if (fd < 0) {
    saved = errno;
    snprintf(err, err_size,
             "cannot create %s: %s; check that its directory exists and that the agent's user "
             "may write to it",
             tmp, strerror(saved));
    return -1;
  }
  /* fsync before the rename: otherwise a power cut after the rename can
   * leave the new name pointing at an empty or partial file. */
  if (file_write_all(fd, data, len) != 0)
    what = "write";
  else if (fsync(fd) != 0)
    what = "fsync";
  if (what)
    saved = errno;
  if (close(fd) != 0 && !what) {
    what = "close";
    saved = errno;
  }
  if (!what && rename(tmp, path) != 0) {
    what = "rename into place";
    saved = errno;
  }
  if (what) {
    unlink(tmp);
    snprintf(err, err_size,
             "cannot write %s (%s of %s failed): %s; check the disk has room and is writable, "
             "then try again",
             path, what, tmp, strerror(saved));
    return -1;
  }
  /* The rename is durable only once the directory is. */
  rc = disk_fsync_parent(path);
  if (rc != 0) {
    snprintf(err, err_size,
             "wrote %s but cannot fsync its directory: %s; a power cut could undo it, so check "
             "the disk and try again",
             path, strerror(-rc));
    return -1;
  }
  return 0;
}
