/*
 * spool.c - the spool directory's driver, on the loop thread: which files
 * are there and settled (uv_fs_event, a rescan timer), one file at a time
 * through its steps, and the journal writes of its second pass.
 *
 * A file's steps (struct spool_job; each step is one piece of work in
 * flight, so a job always has exactly one thing pending):
 *
 *   VALIDATE (worker) --invalid--------------------------> MOVE to failed/
 *       | ok, journaled to its end already ---------------> MOVE to done/
 *       v ok
 *   READ a chunk (worker) --> WRITE it with its position (journal writer)
 *       ^                          | committed, not at the end: READ again
 *       +--------------------------+ committed, at the end: MOVE to done/
 *                                  | conflict: MOVE to failed/
 *   MOVE (worker) --> the next file
 *
 * Any step that cannot go on for the agent's own reasons (the journal full
 * or failing, a rename refused) keeps the file where it is and says why
 * (spool_stats.last_error); the next rescan takes it up again from its
 * committed position. A file that changed under a step settles again.
 */
#include "ingest/spool/spool.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/spool/spool_int.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "platform/metrics.h"

/* Events come in bursts (a file written in many pieces): one scan for a
 * burst, this long after its first event. */
#define SPOOL_EVENT_SCAN_DELAY_MS 100

enum spool_step { SPOOL_STEP_VALIDATE = 1, SPOOL_STEP_READ, SPOOL_STEP_WRITE, SPOOL_STEP_MOVE };

/* A file of the directory as the scans see it. */
struct spool_entry {
  char name[256];
  struct spool_identity id;
  uint64_t unchanged_since_ms; /* monotonic: when the scans first saw it as it is now */
};

struct spool {
  uv_loop_t *loop;
  journal *journal;
  char *dir;
  int64_t rescan_ms, settle_ms;
  size_t max_line;

  uv_fs_event_t watch;
  uv_timer_t scan_timer;   /* the next scan: after events, or when a file may have settled */
  uv_timer_t rescan_timer; /* the periodic scan */
  int watching;
  int handles_open;
  uint64_t scan_due_ms;    /* monotonic; 0 = none armed */

  struct spool_entry *entries; /* sorted by name */
  size_t entry_count, entry_cap;

  struct spool_job *job;   /* the file in progress; NULL = none */
  enum spool_step step;
  /* The file the journal's position names at start-up: finished first. */
  char resume_name[256];
  /* A step failed for the agent's own reasons: nothing new is started
   * before the next periodic rescan. */
  int holding;

  atomic_int stop;
  int closing;
  struct spool_stats stats;
  /* /metrics (the process's registry): the same figures as stats. */
  metrics_series *files_done_total, *files_failed_total, *sales_total, *duplicates_total;
  metrics_series *files_pending;
};

static void spool_maybe_start(spool *s);
static void spool_scan_in(spool *s, uint64_t delay_ms);

/* ---- lifetime -------------------------------------------------------------- */

static void spool_free_job(struct spool_job *job)
{
  if (!job)
    return;
  if (job->fd >= 0)
    close(job->fd);
  spool__clear_chunk(job);
  free(job->sales);
  free(job->sale_lines);
  if (job->format)
    spool__format_state_reset(job->format, job->format_state);
  free(job->format_state);
  spool__lines_free(&job->in);
  journal_reader_close(job->reader);
  free(job);
}

static void spool_maybe_free(spool *s)
{
  if (!s->closing || s->handles_open > 0 || s->job)
    return;
  free(s->entries);
  free(s->dir);
  free(s);
}

/* The current file is done with, however it ended. */
static void spool_end_job(spool *s)
{
  spool_free_job(s->job);
  s->job = NULL;
  s->step = 0;
  s->stats.current_file[0] = '\0';
  s->stats.current_phase = NULL;
  s->stats.current_line = 0;
  if (s->closing) {
    spool_maybe_free(s);
    return;
  }
  /* A fresh look at the directory picks the next file (or this one once
   * it settles again, if it changed). */
  spool_scan_in(s, 0);
}

static void spool_on_handle_closed(uv_handle_t *handle)
{
  spool *s = handle->data;
  s->handles_open--;
  spool_maybe_free(s);
}

void spool_close(spool *s)
{
  if (!s || s->closing)
    return;
  s->closing = 1;
  atomic_store(&s->stop, 1);
  log_info("spool", "stopping", "file=%s", s->job ? s->job->name : "-");
  if (s->watching)
    uv_close((uv_handle_t *)&s->watch, spool_on_handle_closed);
  uv_close((uv_handle_t *)&s->scan_timer, spool_on_handle_closed);
  uv_close((uv_handle_t *)&s->rescan_timer, spool_on_handle_closed);
  /* Work not started yet is dropped (its after-work sees UV_ECANCELED);
   * running work sees the stop flag; a write in flight is finished by
   * journal_close, which calls spool_on_written. */
  if (s->job && s->step != SPOOL_STEP_WRITE)
    uv_cancel((uv_req_t *)&s->job->work);
}

/* ---- scans ------------------------------------------------------------------- */

static int spool_entry_cmp(const void *a, const void *b)
{
  return strcmp(((const struct spool_entry *)a)->name, ((const struct spool_entry *)b)->name);
}

static const struct spool_entry *spool_find_entry(const spool *s, const char *name)
{
  struct spool_entry key;

  if (!s->entries)
    return NULL;
  snprintf(key.name, sizeof(key.name), "%s", name);
  return bsearch(&key, s->entries, s->entry_count, sizeof(key), spool_entry_cmp);
}

static void spool_scan(spool *s);

static void spool_on_scan_timer(uv_timer_t *timer) { spool_scan(timer->data); }

static void spool_scan_in(spool *s, uint64_t delay_ms)
{
  uint64_t due = clock_mono_ms() + delay_ms;

  if (s->closing || (s->scan_due_ms && s->scan_due_ms <= due))
    return;
  s->scan_due_ms = due;
  uv_timer_start(&s->scan_timer, spool_on_scan_timer, delay_ms, 0);
}

/* Reads the directory into s->entries, keeping when each file was first
 * seen as it is now. Loop thread: a readdir and an fstatat per file. */
static int spool_read_dir(spool *s, uint64_t now)
{
  DIR *dir = opendir(s->dir);
  struct spool_entry *next = NULL;
  size_t count = 0, cap = 0;
  struct dirent *ent;

  if (!dir) {
    log_format(s->stats.last_error, sizeof(s->stats.last_error), "cannot read spool.dir %s: %s",
             s->dir, strerror(errno));
    return -1;
  }
  while ((ent = readdir(dir)) != NULL) {
    struct stat st;
    struct spool_entry *entry;
    const struct spool_entry *before;

    if (!spool__format_of(ent->d_name) || strlen(ent->d_name) >= sizeof(entry->name) ||
        fstatat(dirfd(dir), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode))
      continue;
    if (count == cap) {
      size_t grown = cap ? cap * 2 : 16;
      struct spool_entry *more = realloc(next, grown * sizeof(*more));
      if (!more)
        break;
      next = more;
      cap = grown;
    }
    entry = &next[count++];
    snprintf(entry->name, sizeof(entry->name), "%s", ent->d_name);
    entry->id.dev = (uint64_t)st.st_dev;
    entry->id.ino = (uint64_t)st.st_ino;
    entry->id.size = (int64_t)st.st_size;
    entry->id.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    before = spool_find_entry(s, entry->name);
    entry->unchanged_since_ms =
        before && memcmp(&before->id, &entry->id, sizeof(entry->id)) == 0
            ? before->unchanged_since_ms
            : now;
  }
  closedir(dir);
  if (count > 1)
    qsort(next, count, sizeof(*next), spool_entry_cmp);
  free(s->entries);
  s->entries = next;
  s->entry_count = count;
  s->entry_cap = cap;
  return 0;
}

static void spool_scan(spool *s)
{
  uint64_t now = clock_mono_ms(), wake = 0;

  s->scan_due_ms = 0;
  if (s->closing)
    return;
  if (spool_read_dir(s, now))
    return;
  s->stats.files_pending = s->entry_count;
  metrics_set(s->files_pending, (double)s->entry_count);
  /* A file not settled yet is looked at again when it may have. */
  for (size_t i = 0; i < s->entry_count; i++) {
    uint64_t ready = s->entries[i].unchanged_since_ms + (uint64_t)s->settle_ms;
    if (ready > now && (!wake || ready < wake))
      wake = ready;
  }
  if (wake)
    spool_scan_in(s, wake - now);
  spool_maybe_start(s);
}

static void spool_on_rescan(uv_timer_t *timer)
{
  spool *s = timer->data;
  s->holding = 0;
  spool_scan(s);
}

static void spool_on_event(uv_fs_event_t *handle, const char *filename, int events, int status)
{
  spool *s = handle->data;
  (void)filename;
  (void)events;
  if (status < 0) {
    log_warn("spool", "watch_failed", "dir=%s reason=\"%s\" action=\"files are still found by "
             "the rescan every %lld ms\"", s->dir, uv_strerror(status), (long long)s->rescan_ms);
    return;
  }
  spool_scan_in(s, SPOOL_EVENT_SCAN_DELAY_MS);
}

/* ---- a file's steps --------------------------------------------------------------- */

static void spool_after_work(uv_work_t *work, int status);

static void spool_on_work(uv_work_t *work)
{
  struct spool_job *job = work->data;
  spool *s = job->spool;

  switch (s->step) {
  case SPOOL_STEP_VALIDATE:
    spool__validate(job);
    break;
  case SPOOL_STEP_READ:
    spool__read_chunk(job);
    break;
  case SPOOL_STEP_MOVE:
    spool__move(job);
    break;
  default:
    assert(!"no work in this step");
  }
}

static void spool_queue(spool *s, enum spool_step step)
{
  int rc;

  s->step = step;
  s->stats.current_phase = step == SPOOL_STEP_VALIDATE ? "validating"
                           : step == SPOOL_STEP_MOVE   ? "moving"
                                                       : "journaling";
  s->job->work.data = s->job;
  rc = uv_queue_work(s->loop, &s->job->work, spool_on_work, spool_after_work);
  if (rc) {
    log_error("spool", "work_failed", "file=%s reason=\"%s\"", s->job->name, uv_strerror(rc));
    s->holding = 1;
    spool_end_job(s);
  }
}

/* The agent could not go on with the file: kept, taken up again later. */
static void spool_hold(spool *s, const char *why)
{
  char quoted[1200];
  log_format(s->stats.last_error, sizeof(s->stats.last_error), "%s", why);
  log_warn("spool", "file_kept", "file=%s reason=%s action=\"the file stays in the spool "
           "directory and is taken up again at the next rescan\"", s->job->name,
           log_quote(why, quoted, sizeof(quoted)));
  s->holding = 1;
  spool_end_job(s);
}

/* The file fails: to failed/ with `reason`. */
static void spool_fail(spool *s, const char *reason)
{
  snprintf(s->job->reason, sizeof(s->job->reason), "%s", reason);
  s->job->to_failed = 1;
  spool_queue(s, SPOOL_STEP_MOVE);
}

static void spool_fail_invalid(spool *s)
{
  struct spool_job *job = s->job;
  char reason[2048];

  if (job->error.field[0])
    log_format(reason, sizeof(reason), "line %lld, field %s: %s\nNothing of %s was journaled. "
             "Correct that line (or the till's export) and drop the file into %s again.\n",
             (long long)job->error.line, job->error.field, job->error.message, job->name, s->dir);
  else
    log_format(reason, sizeof(reason), "line %lld: %s\nNothing of %s was journaled. Correct that "
             "line (or the till's export) and drop the file into %s again.\n",
             (long long)job->error.line, job->error.message, job->name, s->dir);
  spool_fail(s, reason);
}

static void spool_start_pass2(spool *s)
{
  struct spool_job *job = s->job;

  if (spool__lines_init(&job->in, job->fd, job->max_line, job->resume_offset,
                        job->resume_line)) {
    spool_hold(s, "out of memory");
    return;
  }
  spool__format_state_reset(job->format, job->format_state);
  job->committed_offset = job->resume_offset;
  job->committed_line = job->first_line_this_run = job->resume_line;
  s->stats.current_line = job->committed_line;
  log_info("spool", "file_valid", "file=%s sales=%llu new=%llu duplicates=%llu resume_line=%lld",
           job->name, (unsigned long long)job->file_sales, (unsigned long long)job->file_new,
           (unsigned long long)job->file_duplicates, (long long)job->resume_line);
  spool_queue(s, SPOOL_STEP_READ);
}

static void spool_after_validate(spool *s)
{
  struct spool_job *job = s->job;

  journal_reader_close(job->reader);
  job->reader = NULL;
  switch (job->outcome) {
  case SPOOL_OUT_OK:
    if (job->resume_offset == job->seen.size) {
      job->committed_line = job->resume_line;
      log_info("spool", "file_complete", "file=%s reason=\"journaled to its end before the "
               "last stop: only moved\"", job->name);
      spool_queue(s, SPOOL_STEP_MOVE);
    } else {
      spool_start_pass2(s);
    }
    return;
  case SPOOL_OUT_INVALID:
    spool_fail_invalid(s);
    return;
  case SPOOL_OUT_CHANGED:
    spool_end_job(s);
    return;
  case SPOOL_OUT_RETRY:
    spool_hold(s, job->reason);
    return;
  default:
    spool_end_job(s);
  }
}

static void spool_on_written(struct journal_write *write);

static void spool_after_read(spool *s)
{
  struct spool_job *job = s->job;
  int rc;

  if (job->outcome == SPOOL_OUT_CHANGED) {
    char quoted[2100];
    log_warn("spool", "file_changed", "file=%s reason=%s action=\"taken again once it settles, "
             "from the last line journaled\"", job->name,
             log_quote(job->reason, quoted, sizeof(quoted)));
    spool_end_job(s);
    return;
  }
  if (job->outcome != SPOOL_OUT_OK) {
    spool_hold(s, job->reason);
    return;
  }
  if (job->count == 0 && job->chunk_offset == job->committed_offset) {
    spool_queue(s, SPOOL_STEP_MOVE);
    return;
  }
  spool__position_format(job->position, sizeof(job->position), &job->seen, job->chunk_offset,
                         job->chunk_line, job->name);
  memset(&job->write, 0, sizeof(job->write));
  job->write.sales = job->sales;
  job->write.count = job->count;
  job->write.results = job->results;
  job->write.done = spool_on_written;
  job->write.user = job;
  job->write.progress_source = SPOOL_PROGRESS_SOURCE;
  job->write.progress_position = job->position;
  s->step = SPOOL_STEP_WRITE;
  rc = journal_submit(s->journal, &job->write);
  if (rc)
    spool_hold(s, journal_strerror(rc));
}

static void spool_fail_conflict(spool *s)
{
  struct spool_job *job = s->job;
  char reason[2048], journaled[512];
  int64_t line = job->sale_lines[job->write.conflict_index];

  if (job->committed_line > 0)
    log_format(journaled, sizeof(journaled), "Lines 1 to %lld of %s were journaled before it "
             "(their sales are kept and will be sent); line %lld and every line after it were "
             "not.", (long long)job->committed_line, job->name, (long long)job->committed_line + 1);
  else
    log_format(journaled, sizeof(journaled), "Nothing of %s was journaled.", job->name);
  log_format(reason, sizeof(reason), "line %lld, field sale_id: %s\nThe sale_id was journaled by "
           "another source (a POS posting it) after this file was checked. %s Correct the "
           "file, keep only the lines not journaled, and drop it into %s again.\n",
           (long long)line, job->write.message, journaled, s->dir);
  spool_fail(s, reason);
}

static void spool_on_written(struct journal_write *write)
{
  struct spool_job *job = write->user;
  spool *s = job->spool;

  if (write->error == JOURNAL_OK) {
    uint64_t stored = 0;
    for (size_t i = 0; i < job->count; i++)
      stored += job->results[i].outcome == JOURNAL_STORED;
    s->stats.sales_ingested += stored;
    s->stats.sales_duplicate += job->count - stored;
    job->journaled_new += stored;
    metrics_add(s->sales_total, (double)stored);
    metrics_add(s->duplicates_total, (double)(job->count - stored));
    job->journaled_sales += job->count;
    job->committed_offset = job->chunk_offset;
    job->committed_line = job->chunk_line;
    s->stats.current_line = job->committed_line;
    spool__clear_chunk(job);
    if (s->closing) {
      spool_end_job(s);
      return;
    }
    if (job->committed_offset >= job->seen.size)
      spool_queue(s, SPOOL_STEP_MOVE);
    else
      spool_queue(s, SPOOL_STEP_READ);
    return;
  }
  if (write->error == JOURNAL_ECONFLICT && !s->closing) {
    spool_fail_conflict(s);
    return;
  }
  if (s->closing) {
    spool_end_job(s);
    return;
  }
  spool_hold(s, write->message[0] ? write->message : journal_strerror(write->error));
}

static void spool_after_move(spool *s)
{
  struct spool_job *job = s->job;
  char quoted[2100];

  if (job->outcome != SPOOL_OUT_OK) {
    spool_hold(s, job->reason);
    return;
  }
  s->stats.last_error[0] = '\0';
  if (job->to_failed) {
    s->stats.files_failed++;
    metrics_inc(s->files_failed_total);
    snprintf(s->stats.last_failure_file, sizeof(s->stats.last_failure_file), "%s", job->name);
    log_format(s->stats.last_failure, sizeof(s->stats.last_failure), "%s", job->reason);
    /* The reason's first line is what is wrong; the rest says what to do. */
    {
      char *end = strchr(s->stats.last_failure, '\n');
      if (end)
        *end = '\0';
    }
    s->stats.last_failure_ms = clock_wall_ms();
    log_warn("spool", "file_failed", "file=%s moved_to=%s reason=%s", job->name, job->moved_to,
             log_quote(s->stats.last_failure, quoted, sizeof(quoted)));
  } else {
    s->stats.files_done++;
    metrics_inc(s->files_done_total);
    log_info("spool", "file_done", "file=%s moved_to=%s lines=%lld sales_this_run=%llu "
             "new=%llu", job->name, job->moved_to, (long long)job->committed_line,
             (unsigned long long)job->journaled_sales, (unsigned long long)job->journaled_new);
  }
  if (strcmp(s->resume_name, job->name) == 0)
    s->resume_name[0] = '\0';
  spool_end_job(s);
}

static void spool_after_work(uv_work_t *work, int status)
{
  struct spool_job *job = work->data;
  spool *s = job->spool;

  if (status == UV_ECANCELED || s->closing || job->outcome == SPOOL_OUT_STOPPED) {
    spool_end_job(s);
    return;
  }
  switch (s->step) {
  case SPOOL_STEP_VALIDATE:
    spool_after_validate(s);
    break;
  case SPOOL_STEP_READ:
    spool_after_read(s);
    break;
  case SPOOL_STEP_MOVE:
    spool_after_move(s);
    break;
  default:
    assert(!"no work in this step");
  }
}

/* The file to take now: the one a stop interrupted, else the first
 * settled one in name order. NULL = none. */
static const struct spool_entry *spool_pick(const spool *s, uint64_t now)
{
  const struct spool_entry *resume = s->resume_name[0] ? spool_find_entry(s, s->resume_name) : NULL;

  if (resume)
    return resume->unchanged_since_ms + (uint64_t)s->settle_ms <= now ? resume : NULL;
  for (size_t i = 0; i < s->entry_count; i++)
    if (s->entries[i].unchanged_since_ms + (uint64_t)s->settle_ms <= now)
      return &s->entries[i];
  return NULL;
}

static void spool_maybe_start(spool *s)
{
  const struct spool_entry *entry;
  struct spool_job *job;
  char err[512];

  if (s->job || s->closing || s->holding)
    return;
  entry = spool_pick(s, clock_mono_ms());
  if (!entry)
    return;
  job = calloc(1, sizeof(*job));
  if (!job) {
    s->holding = 1;
    return;
  }
  job->spool = s;
  job->stop = &s->stop;
  job->fd = -1;
  job->in.fd = -1;
  job->max_line = s->max_line;
  job->seen = entry->id;
  job->format = spool__format_of(entry->name);
  snprintf(job->name, sizeof(job->name), "%s", entry->name);
  snprintf(job->dir, sizeof(job->dir), "%s", s->dir);
  /* Opened here, not on the worker: the journal is the loop's to close. */
  job->reader = journal_reader_open(s->journal, err, sizeof(err));
  s->job = job;
  snprintf(s->stats.current_file, sizeof(s->stats.current_file), "%s", job->name);
  if (!job->reader) {
    spool_hold(s, err);
    return;
  }
  log_info("spool", "file_taken", "file=%s bytes=%lld format=%s", job->name,
           (long long)job->seen.size, job->format->name);
  spool_queue(s, SPOOL_STEP_VALIDATE);
}

/* ---- start -------------------------------------------------------------------- */

/* The directory and its done/ and failed/: usable, or `err` says why. */
static int spool_check_dirs(const char *dir, char *err, size_t err_size)
{
  static const char *const subs[] = {"done", "failed"};
  struct stat st;
  char path[4200];

  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    const char *why = "not a directory";
    if (stat(dir, &st) != 0)
      why = strerror(errno);
    log_format(err, err_size, "spool.dir %s cannot be used: %s (create the directory, writable "
             "by the agent's user, or set [spool] dir empty to turn the spool off)", dir, why);
    return -1;
  }
  if (access(dir, R_OK | W_OK | X_OK)) {
    log_format(err, err_size, "spool.dir %s cannot be used: %s (the agent's user must be able "
             "to read it and move files out of it: chown or chmod it, or set [spool] dir empty "
             "to turn the spool off)", dir, strerror(errno));
    return -1;
  }
  for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
    log_format(path, sizeof(path), "%s/%s", dir, subs[i]);
    if (mkdir(path, 0750) && errno != EEXIST) {
      log_format(err, err_size, "spool.dir %s cannot be used: cannot create %s: %s (create it, "
               "writable by the agent's user)", dir, path, strerror(errno));
      return -1;
    }
    if (stat(path, &st) || !S_ISDIR(st.st_mode) || access(path, W_OK | X_OK)) {
      log_format(err, err_size, "spool.dir %s cannot be used: %s is not a directory the agent "
               "may write (make it one, writable by the agent's user)", dir, path);
      return -1;
    }
  }
  return 0;
}

/* The file the journal's spool position names (finished first). */
static void spool_load_resume(spool *s)
{
  char err[512], text[SPOOL_POSITION_MAX];
  struct spool_identity id;
  int64_t offset, line;
  journal_reader *reader = journal_reader_open(s->journal, err, sizeof(err));

  if (reader && journal_reader_progress(reader, SPOOL_PROGRESS_SOURCE, text, sizeof(text), err,
                                        sizeof(err)) == 1 &&
      spool__position_parse(text, &id, &offset, &line, s->resume_name,
                            sizeof(s->resume_name)) == 0)
    log_info("spool", "resume", "file=%s line=%lld", s->resume_name, (long long)line);
  else
    s->resume_name[0] = '\0';
  journal_reader_close(reader);
}

/* Registers the spool's series in the process's registry (NULL series,
 * when that fails, are ignored by the metrics calls). */
static void spool_metrics_init(spool *s)
{
  metrics_registry *r = metrics_global();

  s->files_done_total = metrics_series1(
      metrics_counter(r, "pos_agent_spool_files_done_total",
                      "Spool files journaled whole and moved to done/ since the start.", NULL),
      NULL);
  s->files_failed_total = metrics_series1(
      metrics_counter(r, "pos_agent_spool_files_failed_total",
                      "Spool files moved to failed/ (NAME.reason says why) since the start.",
                      NULL),
      NULL);
  s->sales_total = metrics_series1(
      metrics_counter(r, "pos_agent_spool_sales_total",
                      "Sales journaled from spool files since the start (new rows).", NULL),
      NULL);
  s->duplicates_total = metrics_series1(
      metrics_counter(r, "pos_agent_spool_duplicate_sales_total",
                      "Sales of spool files that were journaled already (not again).", NULL),
      NULL);
  s->files_pending = metrics_series1(
      metrics_gauge(r, "pos_agent_spool_files_pending",
                    "Spool files waiting in the directory, the one in progress included.", NULL),
      NULL);
}

spool *spool_create(uv_loop_t *loop, journal *j, const struct spool_options *options, char *err,
                    size_t err_size)
{
  spool *s;
  int rc;

  if (spool_check_dirs(options->dir, err, err_size))
    return NULL;
  s = calloc(1, sizeof(*s));
  if (!s || !(s->dir = strdup(options->dir))) {
    free(s);
    log_format(err, err_size, "spool.dir %s: out of memory", options->dir);
    return NULL;
  }
  s->loop = loop;
  s->journal = j;
  s->rescan_ms = options->rescan_ms;
  s->settle_ms = options->settle_ms;
  s->max_line = options->max_line_bytes;
  s->stats.dir = s->dir;
  spool_metrics_init(s);
  spool_load_resume(s);
  uv_timer_init(loop, &s->scan_timer);
  uv_timer_init(loop, &s->rescan_timer);
  s->scan_timer.data = s->rescan_timer.data = s;
  s->handles_open = 2;
  rc = uv_fs_event_init(loop, &s->watch);
  if (rc == 0) {
    s->watch.data = s;
    s->watching = 1;
    s->handles_open++;
    rc = uv_fs_event_start(&s->watch, spool_on_event, s->dir, 0);
  }
  if (rc)
    log_warn("spool", "watch_failed", "dir=%s reason=\"%s\" action=\"files are found by the "
             "rescan every %lld ms only\"", s->dir, uv_strerror(rc), (long long)s->rescan_ms);
  uv_timer_start(&s->rescan_timer, spool_on_rescan, (uint64_t)s->rescan_ms,
                 (uint64_t)s->rescan_ms);
  spool_scan_in(s, 0);
  log_info("spool", "started", "dir=%s rescan_ms=%lld settle_ms=%lld max_line=%zu", s->dir,
           (long long)s->rescan_ms, (long long)s->settle_ms, s->max_line);
  return s;
}

void spool_get_stats(const spool *s, struct spool_stats *out)
{
  *out = s->stats;
  if (s->job && s->step == SPOOL_STEP_VALIDATE)
    out->current_line = (int64_t)atomic_load(&s->job->validated_line);
}
