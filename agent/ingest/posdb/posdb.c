/*
 * posdb.c - the POS database tailer on the agent's loop.
 *
 * One step at a time: a read (posdb_read.c, in libuv's thread pool: a
 * vendor holding its database may keep it waiting up to busy_wait), then
 * one journal write of the batch's sales with the batch's last watermark
 * as the progress of source "posdb", in the same transaction. Then at once
 * again when the batch was full, else after poll. The watermark is read
 * back from the journal at start, so a restart, kill -9 included, goes on
 * from the last committed batch: its sales are journaled exactly once.
 *
 * A row that is not a valid sale is logged (event=posdb_row_rejected) and
 * counted, and the watermark moves past it with the batch. A sale whose
 * sale_id the journal already holds with other content (a terminal posted
 * it through the API too) is the same: it is taken out of the write, which
 * is made again without it.
 */
#include "ingest/posdb/posdb.h"
#include "ingest/posdb/posdb_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/clock.h"
#include "platform/log.h"

#define POSDB_SOURCE "posdb"

enum posdb_state { POSDB_IDLE = 0, POSDB_READING = 1, POSDB_WRITING = 2 };

struct posdb {
  struct journal_write write; /* first: done() gets this pointer back */
  uv_loop_t *loop;
  journal *journal;
  struct posdb_options options; /* strings point into `strings` */
  char *strings;
  uv_timer_t timer;
  uv_work_t work;
  enum posdb_state state;
  int stopping;
  int closed;
  void (*stop_done)(void *arg);
  void *stop_arg;

  /* The worker's: touched by the loop only while no work is queued. */
  struct posdb_reader *reader;
  int64_t watermark; /* the last journaled; INT64_MIN: none yet */
  struct posdb_batch batch;
  int work_rc;
  char work_err[512];

  struct journal_item_result *results;
  char position[24];
  struct posdb_status status;
  char last_logged_error[256];
};

/* The watermark the journal holds for us (INT64_MIN when none yet): read
 * once, at start, on the loop thread (a small read of the journal's own). */
static int posdb_load_watermark(posdb *tailer, char *err, size_t err_size)
{
  journal_reader *reader = journal_reader_open(tailer->journal, err, err_size);
  char position[32];
  int found;

  if (!reader)
    return -1;
  found = journal_reader_progress(reader, POSDB_SOURCE, position, sizeof(position), err, err_size);
  journal_reader_close(reader);
  if (found < 0)
    return -1;
  tailer->watermark = INT64_MIN;
  if (found == 1) {
    char *end = NULL;
    long long value = strtoll(position, &end, 10);
    if (!end || *end != '\0' || end == position) {
      log_format(err, err_size,
                 "the journal's progress of source posdb is \"%s\", not a watermark; the "
                 "journal is damaged",
                 position);
      return -1;
    }
    tailer->watermark = value;
  }
  return 0;
}

/* ---- the worker's side ---------------------------------------------------- */

static void posdb_work(uv_work_t *work)
{
  posdb *tailer = work->data;

  tailer->work_rc = -1;
  tailer->work_err[0] = '\0';
  if (!tailer->reader) {
    tailer->reader =
        posdb_reader_open(&tailer->options, tailer->work_err, sizeof(tailer->work_err));
    if (!tailer->reader)
      return;
  }
  tailer->work_rc = posdb_reader_read(tailer->reader, tailer->watermark, &tailer->batch,
                                      tailer->work_err, sizeof(tailer->work_err));
  if (tailer->work_rc) {
    /* Opened again next time: the vendor may have changed the file. */
    posdb_reader_close(tailer->reader);
    tailer->reader = NULL;
  }
}

/* ---- the loop's side ------------------------------------------------------ */

static void posdb_schedule(posdb *tailer, int64_t delay_ms);

static void posdb_closed(uv_handle_t *handle)
{
  posdb *tailer = handle->data;

  tailer->closed = 1;
  if (tailer->stop_done)
    tailer->stop_done(tailer->stop_arg);
}

/* Stopping and nothing in flight: close the timer, then tell the caller. */
static void posdb_finish_stop(posdb *tailer)
{
  if (tailer->state != POSDB_IDLE || uv_is_closing((uv_handle_t *)&tailer->timer))
    return;
  uv_close((uv_handle_t *)&tailer->timer, posdb_closed);
}

static void posdb_report_error(posdb *tailer, const char *message)
{
  char quoted[600];

  log_format(tailer->status.last_error, sizeof(tailer->status.last_error), "%s", message);
  /* Logged when it changes, not at every poll. */
  if (strcmp(tailer->last_logged_error, tailer->status.last_error) != 0) {
    log_format(tailer->last_logged_error, sizeof(tailer->last_logged_error), "%s",
               tailer->status.last_error);
    log_warn("posdb", "posdb_read_failed", "reason=%s", log_quote(message, quoted, sizeof(quoted)));
  }
}

static void posdb_reject(posdb *tailer, int64_t watermark, const char *sale_key, const char *field,
                         const char *message)
{
  char quoted[600];

  tailer->status.rows_rejected++;
  tailer->status.last_rejected_watermark = watermark;
  log_format(tailer->status.last_rejected, sizeof(tailer->status.last_rejected),
             "watermark %" PRId64 " (sale key %s): %s%s%s", watermark, sale_key, field,
             field[0] ? ": " : "", message);
  log_warn("posdb", "posdb_row_rejected", "table=%s watermark=%" PRId64 " key=%s field=%s %s",
           tailer->options.sales_table, watermark, sale_key, field[0] ? field : "-",
           log_quote(message, quoted, sizeof(quoted)));
}

static void posdb_journaled(struct journal_write *write);

/* Writes the batch's sales (possibly none) with its last watermark. */
static void posdb_submit(posdb *tailer)
{
  struct posdb_batch *batch = &tailer->batch;
  int rc;

  memset(&tailer->write, 0, sizeof(tailer->write));
  log_format(tailer->position, sizeof(tailer->position), "%" PRId64, batch->last_watermark);
  tailer->write.sales = batch->sales;
  tailer->write.count = batch->count;
  tailer->write.results = tailer->results;
  tailer->write.done = posdb_journaled;
  tailer->write.user = tailer;
  tailer->write.progress_source = POSDB_SOURCE;
  tailer->write.progress_position = tailer->position;
  tailer->state = POSDB_WRITING;
  rc = journal_submit(tailer->journal, &tailer->write);
  if (rc) {
    tailer->state = POSDB_IDLE;
    posdb_batch_clear(batch);
    posdb_report_error(tailer, "the journal is closed; the POS database is read again at start");
  }
}

static void posdb_journaled(struct journal_write *write)
{
  posdb *tailer = (posdb *)write;
  struct posdb_batch *batch = &tailer->batch;

  tailer->state = POSDB_IDLE;
  if (write->error == JOURNAL_ECONFLICT && write->conflict_index < batch->count) {
    /* That sale_id is journaled with other content: the row is refused like
     * a bad one, and the rest written again without it. */
    size_t i = write->conflict_index;
    posdb_reject(tailer, batch->sale_watermarks[i], batch->sales[i].sale_id, "sale_id",
                 write->message);
    sale_clear(&batch->sales[i]);
    memmove(&batch->sales[i], &batch->sales[i + 1],
            (batch->count - i - 1) * sizeof(batch->sales[0]));
    memmove(&batch->sale_watermarks[i], &batch->sale_watermarks[i + 1],
            (batch->count - i - 1) * sizeof(batch->sale_watermarks[0]));
    batch->count--;
    if (!tailer->stopping) {
      posdb_submit(tailer);
      return;
    }
  }
  if (write->error) {
    /* Not journaled, watermark included: read again from where it was. */
    posdb_report_error(tailer, write->message);
    posdb_batch_clear(batch);
    posdb_schedule(tailer, tailer->options.poll_ms);
    return;
  }
  tailer->watermark = batch->last_watermark;
  tailer->status.sales_read += batch->count;
  for (size_t i = 0; i < batch->count; i++)
    tailer->status.sales_stored += tailer->results[i].outcome == JOURNAL_STORED;
  tailer->status.last_error[0] = '\0';
  tailer->last_logged_error[0] = '\0';
  {
    int full = batch->full;
    posdb_batch_clear(batch);
    posdb_schedule(tailer, full ? 0 : tailer->options.poll_ms);
  }
}

static void posdb_read_done(uv_work_t *work, int status)
{
  posdb *tailer = work->data;
  struct posdb_batch *batch = &tailer->batch;

  tailer->state = POSDB_IDLE;
  tailer->status.last_poll_ms = clock_wall_ms();
  if (status == UV_ECANCELED || tailer->work_rc) {
    if (status != UV_ECANCELED)
      posdb_report_error(tailer, tailer->work_err);
    posdb_batch_clear(batch);
    posdb_schedule(tailer, tailer->options.poll_ms);
    return;
  }
  tailer->status.vendor_watermark = batch->newest_watermark;
  if (!batch->full)
    tailer->status.caught_up_ms = tailer->status.last_poll_ms;
  for (size_t i = 0; i < batch->rejected_count; i++)
    posdb_reject(tailer, batch->rejected[i].watermark, batch->rejected[i].sale_key,
                 batch->rejected[i].error.field, batch->rejected[i].error.message);
  if (batch->count == 0 && batch->rejected_count == 0) {
    /* Nothing new: unless the vendor's ids went back below ours (a database
     * replaced, a till reinstalled), which would hide every new sale. */
    if (tailer->watermark != INT64_MIN && batch->newest_watermark != INT64_MIN &&
        batch->newest_watermark < tailer->watermark) {
      char message[256];
      log_format(message, sizeof(message),
                 "the newest sale in %s has watermark %" PRId64 ", below the %" PRId64
                 " already taken: the POS database was replaced or its ids restarted, and its "
                 "sales are not read; ask support to reset the tail's position",
                 tailer->options.sales_table, batch->newest_watermark, tailer->watermark);
      posdb_report_error(tailer, message);
      posdb_batch_clear(batch);
      posdb_schedule(tailer, tailer->options.poll_ms);
      return;
    }
    tailer->status.last_error[0] = '\0';
    tailer->last_logged_error[0] = '\0';
    posdb_batch_clear(batch);
    posdb_schedule(tailer, tailer->options.poll_ms);
    return;
  }
  if (tailer->stopping) {
    posdb_batch_clear(batch);
    posdb_finish_stop(tailer);
    return;
  }
  posdb_submit(tailer);
}

static void posdb_on_timer(uv_timer_t *timer)
{
  posdb *tailer = timer->data;

  if (tailer->stopping || tailer->state != POSDB_IDLE)
    return;
  tailer->state = POSDB_READING;
  if (uv_queue_work(tailer->loop, &tailer->work, posdb_work, posdb_read_done)) {
    tailer->state = POSDB_IDLE;
    posdb_schedule(tailer, tailer->options.poll_ms);
  }
}

static void posdb_schedule(posdb *tailer, int64_t delay_ms)
{
  if (tailer->stopping) {
    posdb_finish_stop(tailer);
    return;
  }
  uv_timer_start(&tailer->timer, posdb_on_timer, (uint64_t)(delay_ms > 0 ? delay_ms : 0), 0);
}

/* Copies the option strings into one allocation. */
static int posdb_copy_options(posdb *tailer, const struct posdb_options *in)
{
  const char **fields[] = {&tailer->options.path,
                           &tailer->options.sales_table,
                           &tailer->options.watermark,
                           &tailer->options.sale_key,
                           &tailer->options.lines_table,
                           &tailer->options.lines_sale_key,
                           &tailer->options.lines_order,
                           &tailer->options.payments_table,
                           &tailer->options.payments_sale_key};
  size_t total = 0, used = 0;

  tailer->options = *in;
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
    total += strlen(*fields[i] ? *fields[i] : "") + 1;
  for (int f = 0; f < POSDB_FIELD_COUNT; f++)
    total += strlen(in->map[f] ? in->map[f] : "") + 1;
  tailer->strings = malloc(total);
  if (!tailer->strings)
    return -1;
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
    const char *value = *fields[i] ? *fields[i] : "";
    size_t length = strlen(value) + 1;
    memcpy(tailer->strings + used, value, length);
    *fields[i] = tailer->strings + used;
    used += length;
  }
  for (int f = 0; f < POSDB_FIELD_COUNT; f++) {
    const char *value = in->map[f] ? in->map[f] : "";
    size_t length = strlen(value) + 1;
    memcpy(tailer->strings + used, value, length);
    tailer->options.map[f] = tailer->strings + used;
    used += length;
  }
  return 0;
}

posdb *posdb_start(uv_loop_t *loop, journal *j, const struct posdb_options *options, char *err,
                   size_t err_size)
{
  posdb *tailer = calloc(1, sizeof(*tailer));

  if (!tailer || posdb_copy_options(tailer, options)) {
    log_format(err, err_size, "out of memory starting the POS database tailer");
    goto fail;
  }
  if (posdb_options_check(&tailer->options, err, err_size))
    goto fail;
  if (tailer->options.batch_sales == 0)
    tailer->options.batch_sales = 1;
  tailer->results = calloc(tailer->options.batch_sales, sizeof(*tailer->results));
  if (!tailer->results) {
    log_format(err, err_size, "out of memory starting the POS database tailer");
    goto fail;
  }
  tailer->loop = loop;
  tailer->journal = j;
  if (posdb_load_watermark(tailer, err, err_size))
    goto fail;
  tailer->work.data = tailer;
  tailer->status.enabled = 1;
  uv_timer_init(loop, &tailer->timer);
  tailer->timer.data = tailer;
  log_info("posdb", "posdb_started", "path=%s table=%s watermark=%s poll_ms=%" PRId64,
           tailer->options.path, tailer->options.sales_table, tailer->options.watermark,
           tailer->options.poll_ms);
  posdb_schedule(tailer, 0);
  return tailer;
fail:
  if (tailer) {
    free(tailer->results);
    free(tailer->strings);
    free(tailer);
  }
  return NULL;
}

void posdb_get_status(posdb *tailer, struct posdb_status *status)
{
  memset(status, 0, sizeof(*status));
  if (!tailer)
    return;
  *status = tailer->status;
  status->state = (int)tailer->state;
  if (tailer->watermark != INT64_MIN)
    status->watermark = tailer->watermark;
}

void posdb_stop(posdb *tailer, void (*done)(void *arg), void *arg)
{
  tailer->stop_done = done;
  tailer->stop_arg = arg;
  if (tailer->stopping)
    return;
  tailer->stopping = 1;
  uv_timer_stop(&tailer->timer);
  if (tailer->state == POSDB_READING)
    uv_cancel((uv_req_t *)&tailer->work); /* if not started yet; else it finishes */
  posdb_finish_stop(tailer);
}

void posdb_destroy(posdb *tailer)
{
  if (!tailer)
    return;
  posdb_batch_clear(&tailer->batch);
  posdb_reader_close(tailer->reader);
  free(tailer->results);
  free(tailer->strings);
  free(tailer);
}
