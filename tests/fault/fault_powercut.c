/*
 * fault_powercut.c - pos-fault-powercut: plays a power cut on the files the
 * fault shim tracked (fault_shim.c, fault_undo.h), after the test killed the
 * process with SIGKILL.
 *
 *   pos-fault-powercut UNDO_DIR [--keep-random SEED]
 *
 * For each UNDO_DIR/<name>.undo: undoes the logged writes and truncates from
 * the newest to the oldest and truncates the file to its synced size, so
 * that no write since the file's last successful sync is left (the default),
 * or, with --keep-random, keeps a random prefix of them in order with the
 * last kept write torn at a random 512-byte sector (a disk that writes in
 * order and lost power mid-write). Removes each log it played.
 *
 * Prints one line per file: "powercut FILE dropped=N kept=K bytes_rolled_back=B".
 * Exits 0, 1 on an error (named on stderr), 2 on bad usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault_undo.h"

struct powercut_record {
  struct fault_undo_record head;
  long pre_offset; /* where the pre-image starts in the log */
};

static int powercut_fail(const char *what, const char *path)
{
  fprintf(stderr, "pos-fault-powercut: %s %s: %s\n", what, path, strerror(errno));
  return 1;
}

static int powercut_copy(FILE *log, long from, uint64_t length, int fd, uint64_t offset,
                         const char *path)
{
  char chunk[65536];
  if (fseek(log, from, SEEK_SET))
    return powercut_fail("cannot seek the log of", path);
  while (length > 0) {
    size_t want = length < sizeof(chunk) ? (size_t)length : sizeof(chunk);
    if (fread(chunk, 1, want, log) != want)
      return powercut_fail("short pre-image in the log of", path);
    if (pwrite(fd, chunk, want, (off_t)offset) != (ssize_t)want)
      return powercut_fail("cannot restore", path);
    offset += want;
    length -= want;
  }
  return 0;
}

/* Plays one log; see the header. */
static int powercut_file(const char *log_path, int keep_random)
{
  FILE *log = fopen(log_path, "rb");
  struct powercut_record *records = NULL;
  size_t count = 0, capacity = 0;
  char path[4096] = "";
  int fd = -1, rc = 1;
  uint32_t path_length = 0;
  uint64_t synced_size = 0, rolled_back = 0;
  char magic[4];

  if (!log)
    return powercut_fail("cannot open", log_path);
  if (fread(magic, 1, 4, log) != 4) {
    rc = 0; /* an empty log: the file was never written since it was opened */
    goto out;
  }
  if (memcmp(magic, FAULT_UNDO_MAGIC, 4) || fread(&path_length, 4, 1, log) != 1 ||
      path_length >= sizeof(path) || fread(path, 1, path_length, log) != path_length ||
      fread(&synced_size, 8, 1, log) != 1) {
    errno = EINVAL;
    powercut_fail("bad header in", log_path);
    goto out;
  }
  path[path_length] = '\0';
  for (;;) {
    struct powercut_record record;
    if (fread(&record.head, sizeof(record.head), 1, log) != 1)
      break;
    record.pre_offset = ftell(log);
    if (fseek(log, (long)record.head.pre_length, SEEK_CUR))
      break;
    if (count == capacity) {
      capacity = capacity ? capacity * 2 : 64;
      struct powercut_record *grown = realloc(records, capacity * sizeof(*records));
      if (!grown)
        goto out;
      records = grown;
    }
    records[count++] = record;
  }
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    /* Removed by the process (a clean close deletes the WAL): nothing to play. */
    printf("powercut %s gone\n", path);
    rc = 0;
    goto out;
  }
  if (fd < 0) {
    powercut_fail("cannot open", path);
    goto out;
  }
  size_t keep = keep_random ? (size_t)random() % (count + 1) : 0;
  for (size_t i = count; i > keep; i--) {
    const struct powercut_record *record = &records[i - 1];
    if (powercut_copy(log, record->pre_offset, record->head.pre_length, fd, record->head.offset,
                      path))
      goto out;
    rolled_back += record->head.pre_length;
  }
  uint64_t final_size = keep < count ? records[keep].head.size_before : synced_size;
  if (keep == count && count > 0) {
    /* Everything kept: the file stays as the process left it. */
    struct stat st;
    if (fstat(fd, &st)) {
      powercut_fail("cannot stat", path);
      goto out;
    }
    final_size = (uint64_t)st.st_size;
  } else if (keep > 0 && records[keep - 1].head.kind == FAULT_UNDO_WRITE) {
    /* Tear the last kept write at a sector: undo it, then put back its
     * first sectors as they were written. */
    const struct powercut_record *torn = &records[keep - 1];
    uint64_t sectors = (torn->head.length + 511) / 512;
    uint64_t kept_bytes = sectors ? ((uint64_t)random() % (sectors + 1)) * 512 : 0;
    if (kept_bytes > torn->head.length)
      kept_bytes = torn->head.length;
    char *written = malloc(kept_bytes ? kept_bytes : 1);
    if (!written)
      goto out;
    if (pread(fd, written, kept_bytes, (off_t)torn->head.offset) != (ssize_t)kept_bytes ||
        powercut_copy(log, torn->pre_offset, torn->head.pre_length, fd, torn->head.offset,
                      path) ||
        pwrite(fd, written, kept_bytes, (off_t)torn->head.offset) != (ssize_t)kept_bytes) {
      free(written);
      powercut_fail("cannot tear the last kept write of", path);
      goto out;
    }
    free(written);
    final_size = torn->head.size_before > torn->head.offset + kept_bytes
                     ? torn->head.size_before
                     : torn->head.offset + kept_bytes;
  }
  if (ftruncate(fd, (off_t)final_size) || fsync(fd)) {
    powercut_fail("cannot truncate or sync", path);
    goto out;
  }
  printf("powercut %s dropped=%zu kept=%zu bytes_rolled_back=%" PRIu64 " size=%" PRIu64 "\n",
         path, count - keep, keep, rolled_back, final_size);
  rc = 0;
out:
  if (fd >= 0)
    close(fd);
  fclose(log);
  free(records);
  if (rc == 0 && unlink(log_path))
    rc = powercut_fail("cannot remove", log_path);
  return rc;
}

int main(int argc, char **argv)
{
  int keep_random = 0, rc = 0;
  if (argc == 4 && strcmp(argv[2], "--keep-random") == 0) {
    keep_random = 1;
    srandom((unsigned)strtoul(argv[3], NULL, 10));
  } else if (argc != 2) {
    fprintf(stderr, "usage: pos-fault-powercut UNDO_DIR [--keep-random SEED]\n");
    return 2;
  }
  DIR *dir = opendir(argv[1]);
  if (!dir)
    return powercut_fail("cannot open", argv[1]);
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL) {
    size_t length = strlen(entry->d_name);
    if (length < 6 || strcmp(entry->d_name + length - 5, ".undo") != 0)
      continue;
    char log_path[8192];
    snprintf(log_path, sizeof(log_path), "%s/%s", argv[1], entry->d_name);
    if (powercut_file(log_path, keep_random))
      rc = 1;
  }
  closedir(dir);
  return rc;
}
