/*
 * disk.h - file system helpers the journal and spool need.
 */
#ifndef PLATFORM_DISK_H
#define PLATFORM_DISK_H

#include <stdint.h>

/*
 * Bytes available to an unprivileged writer on the file system holding
 * `path` (a file or directory). Returns 0 and sets *free_bytes, or -errno.
 */
int disk_free_bytes(const char *path, uint64_t *free_bytes);

/*
 * The size of the file system holding `path` (a file or directory), used
 * and free. Returns 0 and sets *size_bytes, or -errno.
 */
int disk_size_bytes(const char *path, uint64_t *size_bytes);

/*
 * Creates directory `path` and its parents with `mode` when missing.
 * Returns 0 or -errno.
 */
int disk_mkdirs(const char *path, unsigned mode);

/* fsyncs the directory holding `path`, so a created or renamed entry is durable. */
int disk_fsync_parent(const char *path);

#endif
