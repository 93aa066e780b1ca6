/*
 * journal_hwm.c - the seq high-water mark beside the database (PATH-hwm):
 * the record of which seqs were handed out and acknowledged that does not
 * live in the WAL it is meant to check (journal_int.h says what each field
 * bounds and when it is written).
 *
 * The file is two 512-byte slots, each a line of text and its SHA-256:
 *   posjhwm1 g=GEN id=JOURNAL_ID r=RESERVED c=COMMITTED ab=ACKED_BATCH as=ACKED_SEQ
 *   sb=SEALED_BATCH
 *   h=SHA256-HEX-OF-THE-LINE-ABOVE
 * (one line up to h=; sb= was added later: a line without it is read with
 * the acknowledged batch as the sealed one, and an older agent reading a
 * line with it ignores it.)
 * A durable write fills both slots and fdatasyncs; a cheap write fills the
 * slot of its generation only. A torn or stale slot is never worse than
 * the other one: both always carry the reserved value of the last durable
 * write, and every committed/acked value is a lower bound, so reading an
 * older slot after a power cut only says less, never something false.
 * The file keeps its size (1 KiB) once made, so rewriting it needs no new
 * blocks on a full disk.
 *
 * The cheap write after every commit only has to outlive the process
 * (kill -9). When systemd gives the agent a runtime directory
 * ($RUNTIME_DIRECTORY: tmpfs, kept across restarts by
 * RuntimeDirectoryPreserve=yes), it goes to a one-slot file there instead
 * (journal-<hash of PATH>.hwm): written into a page of PATH-hwm, it made
 * the kernel write that page back to flash after every sale at a store's
 * pace (issue 12, item 3: tests/bench/journal_bench.sh BENCH_PACE_MS).
 * At open that slot counts beside the two of PATH-hwm if it is of the same
 * journal and newer; after a reboot it is gone, as an unsynced slot of
 * PATH-hwm may be after a power cut: the durable slots say less, never
 * something false.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/journal_int.h"
#include "platform/disk.h"
#include "platform/log.h"

#define HWM_SLOT_BYTES 512
#define HWM_SLOTS 2

static void hwm_hex(const uint8_t *bytes, size_t len, char *out)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  out[2 * len] = '\0';
}

static int hwm_digest(const char *text, size_t len, char out[65])
{
  uint8_t hash[32];
  if (mbedtls_sha256_ret((const unsigned char *)text, len, hash, 0) != 0)
    return -1;
  hwm_hex(hash, sizeof(hash), out);
  return 0;
}

/* Appends `key` and `v` at `at` (room checked by the caller). */
static size_t hwm_put_i64(char *at, const char *key, size_t key_len, int64_t v)
{
  memcpy(at, key, key_len);
  return key_len + journal__format_i64(at + key_len, v);
}

/* Fills one slot (zero padded) from j->hwm: the line of the header comment,
 * as "posjhwm1 g=%" PRIu64 " id=%s r=%" PRId64 " c=... sb=%" PRId64 "\n"
 * would print it. Written by hand: it runs after every commit. */
static int hwm_format(const journal *j, char slot[HWM_SLOT_BYTES])
{
  char digest[65];
  size_t id_len = strnlen(j->hwm.journal_id, sizeof(j->hwm.journal_id));
  size_t len = 0;
  uint64_t g = j->hwm.generation;
  char digits[20];
  size_t n = 0;

  /* 7 numbers of at most 20 digits and a sign, the keys, the id, the digest. */
  if (id_len >= sizeof(j->hwm.journal_id))
    return -1;
  memset(slot, 0, HWM_SLOT_BYTES);
  memcpy(slot, "posjhwm1 g=", 11);
  len = 11;
  do {
    digits[n++] = (char)('0' + g % 10);
    g /= 10;
  } while (g);
  while (n)
    slot[len++] = digits[--n];
  memcpy(slot + len, " id=", 4);
  len += 4;
  memcpy(slot + len, j->hwm.journal_id, id_len);
  len += id_len;
  len += hwm_put_i64(slot + len, " r=", 3, j->hwm.reserved);
  len += hwm_put_i64(slot + len, " c=", 3, j->hwm.committed);
  len += hwm_put_i64(slot + len, " ab=", 4, j->hwm.acked_batch_seq);
  len += hwm_put_i64(slot + len, " as=", 4, j->hwm.acked_last_seq);
  len += hwm_put_i64(slot + len, " sb=", 4, j->hwm.sealed_batch_seq);
  slot[len++] = '\n';
  if (len + 68 >= HWM_SLOT_BYTES || hwm_digest(slot, len, digest))
    return -1;
  memcpy(slot + len, "h=", 2);
  memcpy(slot + len + 2, digest, 64);
  slot[len + 66] = '\n';
  return 0;
}

/* Parses one slot; 0 if it is whole and its digest matches. */
static int hwm_parse(const char slot[HWM_SLOT_BYTES], struct journal_hwm *out)
{
  char text[HWM_SLOT_BYTES + 1];
  char digest[65], stored[65];
  const char *newline;
  unsigned long long generation;
  long long reserved, committed, acked_batch, acked_seq, sealed_batch;
  int fields;
  char id[33];
  size_t len;

  memcpy(text, slot, HWM_SLOT_BYTES);
  text[HWM_SLOT_BYTES] = '\0';
  newline = strchr(text, '\n');
  if (!newline)
    return -1;
  len = (size_t)(newline - text) + 1;
  if (sscanf(newline + 1, "h=%64[0-9a-f]\n", stored) != 1 || hwm_digest(text, len, digest) ||
      strcmp(stored, digest) != 0)
    return -1;
  fields = sscanf(text, "posjhwm1 g=%llu id=%32[0-9a-f] r=%lld c=%lld ab=%lld as=%lld sb=%lld",
                  &generation, id, &reserved, &committed, &acked_batch, &acked_seq,
                  &sealed_batch);
  if (fields < 6 || strlen(id) != 32)
    return -1;
  if (fields == 6)
    sealed_batch = acked_batch;
  out->generation = generation;
  memcpy(out->journal_id, id, sizeof(id));
  out->reserved = reserved;
  out->committed = committed;
  out->acked_batch_seq = acked_batch;
  out->acked_last_seq = acked_seq;
  out->sealed_batch_seq = sealed_batch;
  return 0;
}

/* Makes a slot read back the journal's record (not its file or runtime fd). */
static void hwm_take(journal *j, const struct journal_hwm *slot)
{
  j->hwm.generation = slot->generation;
  memcpy(j->hwm.journal_id, slot->journal_id, sizeof(slot->journal_id));
  j->hwm.reserved = slot->reserved;
  j->hwm.committed = slot->committed;
  j->hwm.acked_batch_seq = slot->acked_batch_seq;
  j->hwm.acked_last_seq = slot->acked_last_seq;
  j->hwm.sealed_batch_seq = slot->sealed_batch_seq;
}

/* The runtime slot's file for journal `path` in the first directory of
 * $RUNTIME_DIRECTORY (a colon-separated list), or NULL when there is none. */
static char *hwm_runtime_path(const char *path)
{
  const char *dirs = getenv("RUNTIME_DIRECTORY");
  size_t dir_len;
  char digest[65], *out;

  if (!dirs || dirs[0] != '/')
    return NULL;
  dir_len = strcspn(dirs, ":");
  if (hwm_digest(path, strlen(path), digest))
    return NULL;
  /* "/journal-" + 16 hex digits + ".hwm" + NUL */
  out = malloc(dir_len + 9 + 16 + 4 + 1);
  if (!out)
    return NULL;
  memcpy(out, dirs, dir_len);
  memcpy(out + dir_len, "/journal-", 9);
  memcpy(out + dir_len + 9, digest, 16);
  memcpy(out + dir_len + 25, ".hwm", 5);
  return out;
}

/* Opens the runtime slot (when there is a runtime directory) and takes it
 * into j->hwm if it is of the journal PATH-hwm names and newer. A runtime
 * file that cannot be opened is logged and done without. */
static void hwm_runtime_open(journal *j, int found)
{
  char slot_bytes[HWM_SLOT_BYTES];
  struct journal_hwm slot;

  free(j->hwm.runtime_path);
  if (j->hwm.runtime_fd >= 0)
    close(j->hwm.runtime_fd);
  j->hwm.runtime_fd = -1;
  j->hwm.runtime_path = hwm_runtime_path(j->path);
  if (!j->hwm.runtime_path)
    return;
  j->hwm.runtime_fd = open(j->hwm.runtime_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (j->hwm.runtime_fd < 0) {
    log_warn("journal", "hwm_runtime_unavailable",
             "path=%s error=\"%s\" reason=\"the slot written after each commit goes to %s "
             "instead, on flash\"",
             j->hwm.runtime_path, strerror(errno), j->hwm.path);
    return;
  }
  memset(slot_bytes, 0, sizeof(slot_bytes));
  memset(&slot, 0, sizeof(slot));
  if (!found || pread(j->hwm.runtime_fd, slot_bytes, sizeof(slot_bytes), 0) <= 0 ||
      hwm_parse(slot_bytes, &slot) || strcmp(slot.journal_id, j->hwm.journal_id) != 0 ||
      slot.generation <= j->hwm.generation)
    return;
  hwm_take(j, &slot);
}

int journal__hwm_open(journal *j, int *damaged, char *err, size_t err_size)
{
  char slots[HWM_SLOTS][HWM_SLOT_BYTES];
  size_t path_len = strlen(j->path) + sizeof("-hwm");
  ssize_t got;
  int found = 0;

  *damaged = 0;
  j->hwm.fd = -1;
  j->hwm.path = malloc(path_len);
  if (!j->hwm.path) {
    snprintf(err, err_size, "journal %s: out of memory", j->path);
    return -1;
  }
  snprintf(j->hwm.path, path_len, "%s-hwm", j->path);
  j->hwm.fd = open(j->hwm.path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (j->hwm.fd < 0) {
    snprintf(err, err_size,
             "journal %s: its seq high-water mark %s cannot be opened: %s (the agent's user "
             "must be able to write the journal's directory)",
             j->path, j->hwm.path, strerror(errno));
    return -1;
  }
  memset(slots, 0, sizeof(slots));
  got = pread(j->hwm.fd, slots, sizeof(slots), 0);
  if (got < 0) {
    snprintf(err, err_size, "journal %s: its seq high-water mark %s cannot be read: %s", j->path,
             j->hwm.path, strerror(errno));
    return -1;
  }
  for (int i = 0; i < HWM_SLOTS; i++) {
    struct journal_hwm slot;
    memset(&slot, 0, sizeof(slot));
    if (hwm_parse(slots[i], &slot))
      continue;
    if (!found || slot.generation > j->hwm.generation)
      hwm_take(j, &slot);
    found = 1;
  }
  if (!found && got > 0)
    *damaged = 1;
  hwm_runtime_open(j, found);
  return found;
}

int journal__hwm_write(journal *j, int sync)
{
  /* One flat buffer: both slots are written with one pwrite. */
  char slots[HWM_SLOTS * HWM_SLOT_BYTES];
  off_t offset = 0;
  size_t len = sizeof(slots);
  const char *from = slots;
  int rc = 0;

  if (j->hwm.fd < 0)
    return -EBADF;
  j->hwm.generation++;
  if (hwm_format(j, slots))
    return -EINVAL;
  if (sync) {
    memcpy(slots + HWM_SLOT_BYTES, slots, HWM_SLOT_BYTES);
  } else {
    /* One slot: the other keeps the previous record whole if this write
     * is torn. */
    offset = (off_t)(j->hwm.generation % HWM_SLOTS) * HWM_SLOT_BYTES;
    len = HWM_SLOT_BYTES;
  }
  errno = 0;
  if (!sync && j->hwm.runtime_fd >= 0) {
    if (pwrite(j->hwm.runtime_fd, from, len, 0) == (ssize_t)len)
      return 0;
    /* The runtime directory failed (full, gone): the file on flash, as
     * without one, from now on. */
    log_warn("journal", "hwm_runtime_failed",
             "path=%s error=\"%s\" reason=\"the slot written after each commit goes to %s "
             "from now on\"",
             j->hwm.runtime_path, strerror(errno ? errno : EIO), j->hwm.path);
    close(j->hwm.runtime_fd);
    j->hwm.runtime_fd = -1;
    errno = 0;
  }
  if (pwrite(j->hwm.fd, from, len, offset) != (ssize_t)len)
    rc = errno ? -errno : -EIO;
  else if (sync && fdatasync(j->hwm.fd) != 0)
    rc = -errno;
  if (rc && !j->hwm.write_failed)
    log_error("journal", "hwm_write_failed", "path=%s error=\"%s\"", j->hwm.path, strerror(-rc));
  j->hwm.write_failed = rc != 0;
  return rc;
}

void journal__hwm_close(journal *j)
{
  if (j->hwm.fd >= 0)
    close(j->hwm.fd);
  j->hwm.fd = -1;
  free(j->hwm.path);
  j->hwm.path = NULL;
  if (j->hwm.runtime_fd >= 0)
    close(j->hwm.runtime_fd);
  j->hwm.runtime_fd = -1;
  free(j->hwm.runtime_path);
  j->hwm.runtime_path = NULL;
}
