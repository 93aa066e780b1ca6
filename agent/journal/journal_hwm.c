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
    if (!found || slot.generation > j->hwm.generation) {
      j->hwm.generation = slot.generation;
      memcpy(j->hwm.journal_id, slot.journal_id, sizeof(slot.journal_id));
      j->hwm.reserved = slot.reserved;
      j->hwm.committed = slot.committed;
      j->hwm.acked_batch_seq = slot.acked_batch_seq;
      j->hwm.acked_last_seq = slot.acked_last_seq;
      j->hwm.sealed_batch_seq = slot.sealed_batch_seq;
    }
    found = 1;
  }
  if (!found && got > 0)
    *damaged = 1;
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
}
