/*
 * disk.c - file system helpers.
 */
#include "platform/disk.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

int disk_free_bytes(const char *path, uint64_t *free_bytes)
{
  struct statvfs vfs;

  if (statvfs(path, &vfs) != 0)
    return -errno;
  *free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
  return 0;
}

int disk_size_bytes(const char *path, uint64_t *size_bytes)
{
  struct statvfs vfs;

  if (statvfs(path, &vfs) != 0)
    return -errno;
  *size_bytes = (uint64_t)vfs.f_blocks * (uint64_t)vfs.f_frsize;
  return 0;
}

int disk_mkdirs(const char *path, unsigned mode)
{
  char partial[PATH_MAX];
  size_t len = strlen(path);

  if (len == 0 || len >= sizeof(partial))
    return -ENAMETOOLONG;
  memcpy(partial, path, len + 1);
  for (char *p = partial + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(partial, (mode_t)mode) != 0 && errno != EEXIST)
      return -errno;
    *p = '/';
  }
  if (mkdir(partial, (mode_t)mode) != 0 && errno != EEXIST)
    return -errno;
  return 0;
}

int disk_fsync_parent(const char *path)
{
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  int fd;
  int rc = 0;

  if (!slash) {
    snprintf(dir, sizeof(dir), ".");
  } else if (slash == path) {
    snprintf(dir, sizeof(dir), "/");
  } else {
    if ((size_t)(slash - path) >= sizeof(dir))
      return -ENAMETOOLONG;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  if (fsync(fd) != 0)
    rc = -errno;
  close(fd);
  return rc;
}
