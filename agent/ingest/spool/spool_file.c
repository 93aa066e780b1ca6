/*
 * spool_file.c - one file's work, off the loop thread: the first pass
 * (validation, and each sale against the journal and the file's earlier
 * lines), the second pass's chunks, and the move into done/ or failed/.
 */
#define _GNU_SOURCE /* renameat2 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/spool/spool_int.h"
#include "platform/log.h"

/* The first pass looks at the stop flag every this many records. */
#define SPOOL_STOP_CHECK_EVERY 256
/* A name in done/ or failed/ taken already gets ".1", ".2" ... up to this. */
#define SPOOL_MOVE_MAX_SUFFIX 9999

static const struct spool_format *const spool_formats[] = {&spool__ndjson, &spool__csv};

void spool__format_state_reset(const struct spool_format *format, void *state)
{
  if (!state)
    return;
  if (format->free_state)
    format->free_state(state);
  memset(state, 0, format->state_size);
}

const struct spool_format *spool__format_of(const char *name)
{
  size_t len = strlen(name);

  /* Being written: the POS renames it to its final name when complete. */
  if (name[0] == '.' || (len >= 4 && strcmp(name + len - 4, ".tmp") == 0) ||
      (len >= 5 && strcmp(name + len - 5, ".part") == 0))
    return NULL;
  for (size_t i = 0; i < sizeof(spool_formats) / sizeof(spool_formats[0]); i++) {
    size_t suffix = strlen(spool_formats[i]->suffix);
    if (len > suffix && strcmp(name + len - suffix, spool_formats[i]->suffix) == 0)
      return spool_formats[i];
  }
  return NULL;
}

/* ---- positions ------------------------------------------------------------- */

void spool__position_format(char *out, size_t size, const struct spool_identity *id,
                            int64_t offset, int64_t line, const char *name)
{
  snprintf(out, size, "v1 %" PRIu64 " %" PRIu64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
           " %s", id->dev, id->ino, id->size, id->mtime_ns, offset, line, name);
}

/* One decimal number and the space after it; -1 when there is none. */
static int spool_position_number(const char **text, int64_t *out)
{
  char *end;
  long long value;

  errno = 0;
  value = strtoll(*text, &end, 10);
  if (errno || end == *text || *end != ' ' || value < 0)
    return -1;
  *out = value;
  *text = end + 1;
  return 0;
}

int spool__position_parse(const char *text, struct spool_identity *id, int64_t *offset,
                          int64_t *line, char *name, size_t name_size)
{
  int64_t numbers[6];

  if (strncmp(text, "v1 ", 3) != 0)
    return -1;
  text += 3;
  for (size_t i = 0; i < 6; i++)
    if (spool_position_number(&text, &numbers[i]))
      return -1;
  if (!*text || strlen(text) >= name_size)
    return -1;
  id->dev = (uint64_t)numbers[0];
  id->ino = (uint64_t)numbers[1];
  id->size = numbers[2];
  id->mtime_ns = numbers[3];
  *offset = numbers[4];
  *line = numbers[5];
  snprintf(name, name_size, "%s", text);
  return 0;
}

static void spool_identity_of(const struct stat *st, struct spool_identity *id)
{
  id->dev = (uint64_t)st->st_dev;
  id->ino = (uint64_t)st->st_ino;
  id->size = (int64_t)st->st_size;
  id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int spool_identity_same(const struct spool_identity *a, const struct spool_identity *b)
{
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns;
}

/* ---- the file's own sale_ids (first pass) --------------------------------- */

/* A sale_id seen in the file: 16 bytes a slot, at most 4/3 slots per sale
 * (twice that while the table grows), the first pass's only memory that
 * grows with the file: a 100 MB file of 320,000 sales needs 8 MB. A
 * 64-bit hash of the id, 32 bits of the content's: two different ids taken
 * for one (about one chance in 10^8 for a file of a million sales) would
 * fail the file as a conflict it is not, never journal a wrong sale; a
 * changed sale under the same id is missed once in 4 billion, and then
 * the journal's own check at the write still refuses it. */
struct spool_seen_id {
  uint64_t id_hash; /* 0 = free slot */
  uint32_t content;
  uint32_t line;    /* its line (the highest a uint32_t holds past that) */
};

struct spool_id_table {
  struct spool_seen_id *slots;
  size_t cap, count;
};

static uint64_t spool_hash_id(const char *id)
{
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *id; id++) {
    h ^= (unsigned char)*id;
    h *= 1099511628211ull;
  }
  return h ? h : 1;
}

static int spool_id_table_grow(struct spool_id_table *t)
{
  size_t cap = t->cap ? t->cap * 2 : 1024;
  struct spool_seen_id *slots = calloc(cap, sizeof(*slots));

  if (!slots)
    return -1;
  for (size_t i = 0; i < t->cap; i++) {
    size_t at;
    if (!t->slots[i].id_hash)
      continue;
    at = (size_t)(t->slots[i].id_hash & (cap - 1));
    while (slots[at].id_hash)
      at = (at + 1) & (cap - 1);
    slots[at] = t->slots[i];
  }
  free(t->slots);
  t->slots = slots;
  t->cap = cap;
  return 0;
}

/* Adds the id, or finds it: returns the entry already there (NULL when it
 * was added), or sets *failed when memory ran out. */
static const struct spool_seen_id *spool_id_table_put(struct spool_id_table *t,
                                                      uint64_t id_hash, uint32_t content,
                                                      int64_t line, int *failed)
{
  size_t at;

  if ((t->count + 1) * 4 > t->cap * 3 && spool_id_table_grow(t)) {
    *failed = 1;
    return NULL;
  }
  at = (size_t)(id_hash & (t->cap - 1));
  while (t->slots[at].id_hash) {
    if (t->slots[at].id_hash == id_hash)
      return &t->slots[at];
    at = (at + 1) & (t->cap - 1);
  }
  t->slots[at].id_hash = id_hash;
  t->slots[at].content = content;
  t->slots[at].line = line > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)line;
  t->count++;
  return NULL;
}

/* ---- the first pass ------------------------------------------------------------ */

static void spool_invalid(struct spool_job *job, int64_t line, const char *field,
                          const char *message)
{
  job->outcome = SPOOL_OUT_INVALID;
  job->error.line = line;
  snprintf(job->error.field, sizeof(job->error.field), "%s", field);
  snprintf(job->error.message, sizeof(job->error.message), "%s", message);
}

/* Opens the file and checks it is the one the scan saw settle. */
static int spool_open_file(struct spool_job *job)
{
  char path[4352];
  struct stat st;
  struct spool_identity now;

  log_format(path, sizeof(path), "%s/%s", job->dir, job->name);
  job->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (job->fd < 0) {
    job->outcome = errno == ENOENT ? SPOOL_OUT_CHANGED : SPOOL_OUT_RETRY;
    log_format(job->reason, sizeof(job->reason), "cannot open %s: %s (the agent's user must be "
             "able to read the files of spool.dir)", path, strerror(errno));
    return -1;
  }
  if (fstat(job->fd, &st) || !S_ISREG(st.st_mode)) {
    job->outcome = SPOOL_OUT_CHANGED;
    log_format(job->reason, sizeof(job->reason), "%s is not a regular file", path);
    return -1;
  }
  spool_identity_of(&st, &now);
  if (!spool_identity_same(&now, &job->seen)) {
    job->outcome = SPOOL_OUT_CHANGED;
    log_format(job->reason, sizeof(job->reason), "%s changed since it settled", path);
    return -1;
  }
  return 0;
}

/* Where the journal says this file's ingestion got to (0/0: nowhere). */
static int spool_find_resume(struct spool_job *job)
{
  char text[SPOOL_POSITION_MAX], name[256], err[512];
  struct spool_identity id;
  int64_t offset, line;
  int rc = journal_reader_progress(job->reader, SPOOL_PROGRESS_SOURCE, text, sizeof(text), err,
                                   sizeof(err));

  job->resume_offset = job->resume_line = 0;
  if (rc < 0) {
    job->outcome = SPOOL_OUT_RETRY;
    log_format(job->reason, sizeof(job->reason), "%s", err);
    return -1;
  }
  /* Another file's position, or this name's earlier file (replaced since:
   * another inode, size or mtime): this file starts from its first line. */
  if (rc == 1 && spool__position_parse(text, &id, &offset, &line, name, sizeof(name)) == 0 &&
      strcmp(name, job->name) == 0 && spool_identity_same(&id, &job->seen) && offset >= 0 &&
      offset <= job->seen.size) {
    job->resume_offset = offset;
    job->resume_line = line;
  }
  return 0;
}

/* Checks one valid sale against the file's earlier lines and the journal. */
static int spool_check_sale(struct spool_job *job, struct spool_id_table *ids,
                            const struct sale *sale, int64_t line)
{
  uint8_t hash[32];
  uint32_t content;
  const struct spool_seen_id *earlier;
  int failed = 0, state;
  int64_t seq = 0;
  char message[512], err[512];

  if (sale_content_hash(sale, hash)) {
    job->outcome = SPOOL_OUT_RETRY;
    log_format(job->reason, sizeof(job->reason), "out of memory checking line %lld",
             (long long)line);
    return -1;
  }
  memcpy(&content, hash, sizeof(content));
  earlier = spool_id_table_put(ids, spool_hash_id(sale->sale_id), content, line, &failed);
  if (failed) {
    job->outcome = SPOOL_OUT_RETRY;
    log_format(job->reason, sizeof(job->reason), "out of memory for the sale_ids of the file at "
             "line %lld", (long long)line);
    return -1;
  }
  if (earlier) {
    if (earlier->content == content)
      return 0; /* the same sale twice in the file: journaled once */
    log_format(message, sizeof(message), "sale_id %s is also on line %lld of this file with "
             "different content; a new sale needs a new sale_id", sale->sale_id,
             (long long)earlier->line);
    spool_invalid(job, line, "sale_id", message);
    return -1;
  }
  state = journal_reader_find_sale(job->reader, sale, &seq, err, sizeof(err));
  if (state < 0) {
    job->outcome = SPOOL_OUT_RETRY;
    log_format(job->reason, sizeof(job->reason), "%s", err);
    return -1;
  }
  if (state == JOURNAL_SALE_DIFFERENT) {
    /* The words POST /v1/sales answers a conflict with (journal.c). */
    log_format(message, sizeof(message), "sale_id %s was already journaled as seq %lld with "
             "different content; a retry must resend the same sale, a new sale needs a new "
             "sale_id", sale->sale_id, (long long)seq);
    spool_invalid(job, line, "sale_id", message);
    return -1;
  }
  job->file_sales++;
  if (state == JOURNAL_SALE_SAME)
    job->file_duplicates++;
  else
    job->file_new++;
  return 0;
}

void spool__validate(struct spool_job *job)
{
  struct spool_id_table ids = {0};
  struct sale sale;
  struct stat st;
  struct spool_identity after;
  uint64_t records = 0;

  job->outcome = SPOOL_OUT_OK;
  job->reason[0] = '\0';
  memset(&job->error, 0, sizeof(job->error));
  job->file_sales = job->file_new = job->file_duplicates = 0;
  atomic_store(&job->validated_line, 0);
  if (spool_open_file(job) || spool_find_resume(job))
    return;
  /* Journaled to its end already (a stop between the last commit and the
   * move): only the move is left. */
  if (job->resume_offset == job->seen.size)
    return;
  spool__format_state_reset(job->format, job->format_state);
  if (spool__lines_init(&job->in, job->fd, job->max_line, 0, 0) ||
      (job->format->state_size && !job->format_state &&
       !(job->format_state = calloc(1, job->format->state_size)))) {
    job->outcome = SPOOL_OUT_RETRY;
    log_format(job->reason, sizeof(job->reason), "out of memory reading %s", job->name);
    return;
  }
  for (;;) {
    int64_t line = 0;
    int rc;

    if (++records % SPOOL_STOP_CHECK_EVERY == 0) {
      if (atomic_load(job->stop)) {
        job->outcome = SPOOL_OUT_STOPPED;
        break;
      }
      atomic_store(&job->validated_line, (long long)job->in.line_no);
    }
    rc = job->format->next(job->format_state, &job->in, &sale, &line, &job->error);
    if (rc == 0)
      break;
    if (rc < 0) {
      job->outcome = SPOOL_OUT_INVALID;
      break;
    }
    rc = spool_check_sale(job, &ids, &sale, line);
    sale_clear(&sale);
    if (rc)
      break;
  }
  free(ids.slots);
  atomic_store(&job->validated_line, (long long)job->in.line_no);
  if (job->outcome != SPOOL_OUT_OK && job->outcome != SPOOL_OUT_INVALID)
    return;
  /* Written to while it was read: what was validated is not the file. */
  if (fstat(job->fd, &st) == 0) {
    spool_identity_of(&st, &after);
    if (!spool_identity_same(&after, &job->seen)) {
      job->outcome = SPOOL_OUT_CHANGED;
      log_format(job->reason, sizeof(job->reason), "%s changed while it was read", job->name);
    }
  }
}

/* ---- the second pass -------------------------------------------------------- */

void spool__clear_chunk(struct spool_job *job)
{
  for (size_t i = 0; i < job->count; i++)
    sale_clear(&job->sales[i]);
  job->count = 0;
}

void spool__read_chunk(struct spool_job *job)
{
  job->outcome = SPOOL_OUT_OK;
  job->reason[0] = '\0';
  spool__clear_chunk(job);
  if (!job->sales) {
    job->sales = calloc(SPOOL_CHUNK_SALES, sizeof(*job->sales));
    job->sale_lines = calloc(SPOOL_CHUNK_SALES, sizeof(*job->sale_lines));
    if (!job->sales || !job->sale_lines) {
      job->outcome = SPOOL_OUT_RETRY;
      log_format(job->reason, sizeof(job->reason), "out of memory for a chunk of %s", job->name);
      return;
    }
  }
  while (job->count < SPOOL_CHUNK_SALES) {
    int64_t line = 0;
    int rc = job->format->next(job->format_state, &job->in, &job->sales[job->count], &line,
                               &job->error);
    if (rc == 0)
      break;
    if (rc < 0) {
      /* The first pass read this line as valid: the file changed since. */
      job->outcome = SPOOL_OUT_CHANGED;
      log_format(job->reason, sizeof(job->reason), "line %lld of %s changed after it was "
               "validated: %s", (long long)job->error.line, job->name, job->error.message);
      return;
    }
    job->sale_lines[job->count++] = line;
  }
  if (job->format->resume_point) {
    job->format->resume_point(job->format_state, &job->in, &job->chunk_offset, &job->chunk_line);
  } else {
    job->chunk_offset = job->in.offset;
    job->chunk_line = job->in.line_no;
  }
}

/* ---- the move -------------------------------------------------------------------- */

/* fsync of a directory, so that a rename in it survives a power cut. */
static int spool_fsync_dir(const char *path)
{
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc;

  if (fd < 0)
    return -1;
  rc = fsync(fd);
  close(fd);
  return rc;
}

/* Writes `text` to `path` durably (a temporary file, fsync, rename). */
static int spool_write_file(const char *path, const char *text)
{
  char tmp[4400];
  size_t len = strlen(text), done = 0;
  int fd, rc = -1;

  log_format(tmp, sizeof(tmp), "%s.tmp", path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0)
    return -1;
  while (done < len) {
    ssize_t put = write(fd, text + done, len - done);
    if (put < 0 && errno == EINTR)
      continue;
    if (put <= 0)
      goto out;
    done += (size_t)put;
  }
  if (fsync(fd))
    goto out;
  rc = 0;
out:
  close(fd);
  if (rc == 0)
    rc = rename(tmp, path);
  if (rc)
    unlink(tmp);
  return rc;
}

/* Renames `from` to `to` unless `to` exists: 0, 1 when it exists, or -1. */
static int spool_rename_new(const char *from, const char *to)
{
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno == EEXIST)
    return 1;
  if (errno != EINVAL && errno != ENOSYS)
    return -1;
  /* A file system without RENAME_NOREPLACE: link refuses an existing name too. */
  if (link(from, to) == 0)
    return unlink(from) == 0 ? 0 : -1;
  return errno == EEXIST ? 1 : -1;
}

void spool__move(struct spool_job *job)
{
  const char *sub = job->to_failed ? "failed" : "done";
  char from[4352], target_dir[4200], reason_path[4400];
  int rc = 1;

  job->outcome = SPOOL_OUT_OK;
  if (job->fd >= 0) {
    close(job->fd);
    job->fd = -1;
  }
  log_format(from, sizeof(from), "%s/%s", job->dir, job->name);
  log_format(target_dir, sizeof(target_dir), "%s/%s", job->dir, sub);
  /* A name dropped before keeps its file: this one gets NAME.1, NAME.2 ... */
  for (int n = 0; n <= SPOOL_MOVE_MAX_SUFFIX && rc == 1; n++) {
    if (n == 0)
      log_format(job->moved_to, sizeof(job->moved_to), "%s/%s", target_dir, job->name);
    else
      log_format(job->moved_to, sizeof(job->moved_to), "%s/%s.%d", target_dir, job->name, n);
    if (job->to_failed) {
      /* The reason first: a stop before the rename leaves the file in the
       * spool, failed again at the next start, never in failed/ unexplained. */
      log_format(reason_path, sizeof(reason_path), "%s.reason", job->moved_to);
      if (access(job->moved_to, F_OK) == 0 || access(reason_path, F_OK) == 0)
        continue;
      if (spool_write_file(reason_path, job->reason)) {
        rc = -1;
        break;
      }
    }
    rc = spool_rename_new(from, job->moved_to);
  }
  if (rc == 0 && (spool_fsync_dir(target_dir) || spool_fsync_dir(job->dir)))
    rc = -1;
  if (rc != 0) {
    int saved = errno;
    job->outcome = SPOOL_OUT_RETRY;
    log_format(job->reason, sizeof(job->reason), "cannot move %s into %s: %s (the agent's user "
             "must be able to write %s and %s)", from, target_dir,
             rc == 1 ? "too many files of that name there" : strerror(saved), job->dir,
             target_dir);
  }
}
