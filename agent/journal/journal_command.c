/*
 * journal_command.c - head-office commands and the replay lane's work on
 * the journal (schema v6), on the writer thread: recording a command before
 * it is acted on, its state, cutting replay batches of a resync by business
 * time and recording their seq ranges, and their acknowledgements.
 *
 * Invariants this file keeps:
 *   - a command_id is recorded once; a known one is never started again
 *     (only a cancel or its own finish change its row);
 *   - replay batch N of a resync always covers the rows of its recorded
 *     range (recorded in the transaction that cut it, before it can leave);
 *   - rows a running resync has yet to send are held from retention
 *     (j->replay_hold_seq).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journal/journal_int.h"
#include "journal/journal_sql.h"
#include "platform/clock.h"
#include "platform/log.h"

/* Finished commands are reported this long. */
#define JOURNAL_COMMAND_RECENT_MS (24 * 3600 * 1000LL)

int journal_command_finished(int state) { return state >= JOURNAL_COMMAND_DONE; }

const char *journal_command_state_name(int state)
{
  switch (state) {
  case JOURNAL_COMMAND_RUNNING:
    return "running";
  case JOURNAL_COMMAND_DONE:
    return "done";
  case JOURNAL_COMMAND_INCOMPLETE:
    return "incomplete";
  case JOURNAL_COMMAND_FAILED:
    return "failed";
  case JOURNAL_COMMAND_CANCELLED:
    return "cancelled";
  default:
    return "pending";
  }
}

size_t journal_get_commands(journal *j, struct journal_command **out)
{
  size_t n = 0;

  *out = NULL;
  pthread_mutex_lock(&j->lock);
  if (j->command_count && (*out = malloc(j->command_count * sizeof(**out))) != NULL) {
    n = j->command_count;
    memcpy(*out, j->commands, n * sizeof(**out));
  }
  pthread_mutex_unlock(&j->lock);
  return n;
}

int journal_find_command(journal *j, const char *command_id, struct journal_command *out)
{
  int found = 0;
  pthread_mutex_lock(&j->lock);
  for (size_t i = 0; i < j->command_count && !found; i++) {
    if (strcmp(j->commands[i].command_id, command_id) == 0) {
      *out = j->commands[i];
      found = 1;
    }
  }
  pthread_mutex_unlock(&j->lock);
  return found;
}

/* ---- rows ------------------------------------------------------------------- */

static void journal_command_text(sqlite3_stmt *stmt, int col, char *out, size_t out_size)
{
  const unsigned char *text = sqlite3_column_text(stmt, col);
  snprintf(out, out_size, "%s", text ? (const char *)text : "");
}

static void journal_command_read(sqlite3_stmt *stmt, struct journal_command *c)
{
  memset(c, 0, sizeof(*c));
  journal_command_text(stmt, 0, c->command_id, sizeof(c->command_id));
  c->kind = sqlite3_column_int(stmt, 1);
  c->state = sqlite3_column_int(stmt, 2);
  c->issued_ms = sqlite3_column_int64(stmt, 3);
  journal_command_text(stmt, 4, c->issued_by, sizeof(c->issued_by));
  c->recorded_ms = sqlite3_column_int64(stmt, 5);
  c->updated_ms = sqlite3_column_int64(stmt, 6);
  c->from_ms = sqlite3_column_int64(stmt, 7);
  c->to_ms = sqlite3_column_int64(stmt, 8);
  c->upto_seq = sqlite3_column_int64(stmt, 9);
  c->done_sales = (uint64_t)sqlite3_column_int64(stmt, 10);
  c->total_sales = (uint64_t)sqlite3_column_int64(stmt, 11);
  c->available_from_ms = sqlite3_column_int64(stmt, 12);
  journal_command_text(stmt, 13, c->incomplete, sizeof(c->incomplete));
  journal_command_text(stmt, 14, c->message, sizeof(c->message));
  c->replay_batch_seq = sqlite3_column_int64(stmt, 15);
  c->replay_acked_batch_seq = sqlite3_column_int64(stmt, 16);
  c->replay_cut_seq = sqlite3_column_int64(stmt, 17);
  c->replay_acked_seq = sqlite3_column_int64(stmt, 18);
}

/* Stores `c` (new or replacing its row), inside the open transaction. */
static int journal_command_put(journal *j, const struct journal_command *c)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_PUT_COMMAND, -1, &stmt, NULL);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_text(stmt, 1, c->command_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(stmt, 2, c->kind);
  sqlite3_bind_int(stmt, 3, c->state);
  sqlite3_bind_int64(stmt, 4, c->issued_ms);
  sqlite3_bind_text(stmt, 5, c->issued_by, -1, SQLITE_STATIC);
  sqlite3_bind_int64(stmt, 6, c->recorded_ms);
  sqlite3_bind_int64(stmt, 7, c->updated_ms);
  sqlite3_bind_int64(stmt, 8, c->from_ms);
  sqlite3_bind_int64(stmt, 9, c->to_ms);
  sqlite3_bind_int64(stmt, 10, c->upto_seq);
  sqlite3_bind_int64(stmt, 11, (int64_t)c->done_sales);
  sqlite3_bind_int64(stmt, 12, (int64_t)c->total_sales);
  sqlite3_bind_int64(stmt, 13, c->available_from_ms);
  sqlite3_bind_text(stmt, 14, c->incomplete, -1, SQLITE_STATIC);
  sqlite3_bind_text(stmt, 15, c->message, -1, SQLITE_STATIC);
  sqlite3_bind_int64(stmt, 16, c->replay_batch_seq);
  sqlite3_bind_int64(stmt, 17, c->replay_acked_batch_seq);
  sqlite3_bind_int64(stmt, 18, c->replay_cut_seq);
  sqlite3_bind_int64(stmt, 19, c->replay_acked_seq);
  rc = sqlite3_step(stmt);
  rc = rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  sqlite3_finalize(stmt);
  return rc;
}

static int journal_command_get(journal *j, const char *command_id, struct journal_command *c,
                               int *found)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_COMMAND, -1, &stmt, NULL);
  *found = 0;
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_text(stmt, 1, command_id, -1, SQLITE_STATIC);
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    journal_command_read(stmt, c);
    *found = 1;
    rc = SQLITE_OK;
  } else {
    rc = rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* Every unfinished command and the recent finished ones into *list
 * (malloc'd, newest first; NULL when none), and the retention hold. */
static int journal_commands_read(journal *j, struct journal_command **list, size_t *count,
                                 int64_t *hold)
{
  sqlite3_stmt *stmt = NULL;
  int64_t since = (int64_t)time(NULL) * 1000 - JOURNAL_COMMAND_RECENT_MS;
  size_t cap = 0;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_RECENT_COMMANDS, -1, &stmt, NULL);

  *list = NULL;
  *count = 0;
  *hold = 0;
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_int64(stmt, 1, since);
  sqlite3_bind_int(stmt, 2, JOURNAL_FINISHED_COMMANDS_MAX);
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (*count == cap) {
      struct journal_command *grown;
      cap = cap ? cap * 2 : 32;
      grown = realloc(*list, cap * sizeof(**list));
      if (!grown) {
        rc = SQLITE_NOMEM;
        break;
      }
      *list = grown;
    }
    journal_command_read(stmt, &(*list)[(*count)++]);
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) {
    free(*list);
    *list = NULL;
    *count = 0;
    return rc;
  }
  /* Every running resync, not only the recent ones: the first row of its
   * last acknowledged replay batch (a collector that restarted may ask for
   * that batch again), else the first row it has yet to send. */
  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_REPLAY_HOLD, -1, &stmt, NULL);
  if (rc != SQLITE_OK)
    return rc;
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW)
    *hold = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* After a command's row changed (committed): the list others read. */
static void journal_commands_publish(journal *j)
{
  struct journal_command *list = NULL, *old;
  size_t count = 0;
  int64_t hold = 0;

  if (journal_commands_read(j, &list, &count, &hold) != SQLITE_OK)
    return;
  j->replay_hold_seq = hold;
  pthread_mutex_lock(&j->lock);
  old = j->commands;
  j->commands = list;
  j->command_count = count;
  pthread_mutex_unlock(&j->lock);
  free(old);
}

/* JOURNAL_SQL_OLDEST_SALE_TIME (a scan of every sale) or
 * JOURNAL_SQL_LOWEST_SALE_TIME (a lookup). */
static int64_t journal_oldest_sale_time(journal *j, const char *sql)
{
  sqlite3_stmt *stmt = NULL;
  int64_t value = 0;
  if (sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW)
    value = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return value;
}

int journal__commands_load(journal *j)
{
  sqlite3_stmt *stmt = NULL;
  struct journal_command *list = NULL;
  size_t count = 0;
  int rc;

  j->sales_deleted_why[0] = '\0';
  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_META, -1, &stmt, NULL) == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, "sales_deleted", -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW)
      journal_command_text(stmt, 0, j->sales_deleted_why, sizeof(j->sales_deleted_why));
  }
  sqlite3_finalize(stmt);
  /* Not a scan before the first sale is taken: the lowest seq's time, read
   * exactly (journal_oldest_refresh) after the next deletion and before a
   * resync starts from it. */
  j->stats.oldest_sale_business_ms = journal_oldest_sale_time(j, JOURNAL_SQL_LOWEST_SALE_TIME);
  j->oldest_stale = 1;
  j->stats.sales_deleted = j->sales_deleted_why[0] || j->stats.reset_ms;
  /* The opening thread, or the writer while it holds j->lock (a new
   * journal): the list is swapped without taking the lock. */
  rc = journal_commands_read(j, &list, &count, &j->replay_hold_seq);
  if (rc == SQLITE_OK) {
    free(j->commands);
    j->commands = list;
    j->command_count = count;
  }
  return rc == SQLITE_OK ? 0 : -1;
}

/* The oldest business time, read again: a scan of the sales, so after a
 * deletion at most once a minute (retention deletes in many small chunks);
 * a resync reads it afresh when it starts. */
static void journal_oldest_refresh(journal *j, int force)
{
  uint64_t now = clock_mono_ms();
  int64_t oldest;

  if (!force && now < j->oldest_checked_ms + 60000u) {
    j->oldest_stale = 1;
    return;
  }
  oldest = journal_oldest_sale_time(j, JOURNAL_SQL_OLDEST_SALE_TIME);
  j->oldest_checked_ms = now;
  j->oldest_stale = 0;
  pthread_mutex_lock(&j->lock);
  j->stats.oldest_sale_business_ms = oldest;
  pthread_mutex_unlock(&j->lock);
}

void journal__sales_deleted(journal *j)
{
  if (!j->sales_deleted_why[0]) {
    /* The reason just committed in meta ("retention" or "full"). */
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_META, -1, &stmt, NULL) == SQLITE_OK) {
      sqlite3_bind_text(stmt, 1, "sales_deleted", -1, SQLITE_STATIC);
      if (sqlite3_step(stmt) == SQLITE_ROW)
        journal_command_text(stmt, 0, j->sales_deleted_why, sizeof(j->sales_deleted_why));
    }
    sqlite3_finalize(stmt);
    if (!j->sales_deleted_why[0])
      snprintf(j->sales_deleted_why, sizeof(j->sales_deleted_why), "retention");
  }
  pthread_mutex_lock(&j->lock);
  j->stats.sales_deleted = 1;
  pthread_mutex_unlock(&j->lock);
  journal_oldest_refresh(j, 0);
}

/* ---- COMMAND and COMMAND_STATE ----------------------------------------------- */

static void journal_format_time(int64_t ms, char *out, size_t out_size)
{
  time_t seconds = (time_t)(ms / 1000);
  struct tm tm;
  if (ms <= 0 || !gmtime_r(&seconds, &tm) || !strftime(out, out_size, "%Y-%m-%dT%H:%M:%SZ", &tm))
    snprintf(out, out_size, "-");
}

/* Runs `sql` with text ?1 = `id` and, if `seq` >= 0, ?2 = `seq`. */
static int journal_command_exec(journal *j, const char *sql, const char *id, int64_t seq)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
  if (seq >= 0)
    sqlite3_bind_int64(stmt, 2, seq);
  rc = sqlite3_step(stmt);
  rc = rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  sqlite3_finalize(stmt);
  return rc;
}

static int journal_count_cursor_put(journal *j, const char *id, int64_t counted_seq)
{
  return journal_command_exec(j, JOURNAL_SQL_PUT_COUNT_CURSOR, id, counted_seq);
}

/* Inside the open transaction: counts the resync's sales in the next
 * window of at most JOURNAL_REPLAY_SCAN_ROWS seqs into c->total_sales (the
 * caller stores c); nothing once all are counted. Each replay operation
 * counts one window ahead of the rows it cuts (which advance a window at
 * most), so the total is complete before the last batch is cut. */
static int journal_replay_count_step(journal *j, struct journal_command *c, int *changed)
{
  sqlite3_stmt *stmt = NULL;
  int64_t counted = -1, upto;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_COUNT_CURSOR, -1, &stmt, NULL);

  *changed = 0;
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_text(stmt, 1, c->command_id, -1, SQLITE_STATIC);
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW)
    counted = sqlite3_column_int64(stmt, 0);
  rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_OK || counted < 0)
    return rc;
  upto = c->upto_seq - counted > JOURNAL_REPLAY_SCAN_ROWS ? counted + JOURNAL_REPLAY_SCAN_ROWS
                                                          : c->upto_seq;
  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_REPLAY_COUNT, -1, &stmt, NULL);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_int64(stmt, 1, counted);
  sqlite3_bind_int64(stmt, 2, upto);
  sqlite3_bind_int64(stmt, 3, c->from_ms);
  sqlite3_bind_int64(stmt, 4, c->to_ms > 0 ? c->to_ms : INT64_MAX);
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW)
    c->total_sales += (uint64_t)sqlite3_column_int64(stmt, 0);
  rc = rc == SQLITE_ROW ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_OK)
    return rc;
  *changed = 1;
  if (upto >= c->upto_seq)
    return journal_command_exec(j, JOURNAL_SQL_DELETE_COUNT_CURSOR, c->command_id, -1);
  return journal_count_cursor_put(j, c->command_id, upto);
}

/* A new resync's bounds: the newest row now, the sales it will replay, and
 * whether the history it asks for was deleted (then what it finishes with). */
static int journal_resync_bounds(journal *j, struct journal_command *c, const char *device_id)
{
  int64_t oldest;
  int deleted, counted = 0, rc;

  if (j->oldest_stale)
    journal_oldest_refresh(j, 1);
  pthread_mutex_lock(&j->lock);
  c->upto_seq = j->stats.last_seq;
  oldest = j->stats.oldest_sale_business_ms;
  deleted = j->stats.sales_deleted;
  pthread_mutex_unlock(&j->lock);
  /* Its sales are counted a window at a time (journal_replay_count_step):
   * the first window now, the rest by the replay operations, never in one
   * scan of the journal. */
  c->total_sales = 0;
  rc = c->upto_seq > 0 ? journal_count_cursor_put(j, c->command_id, 0) : SQLITE_OK;
  if (rc == SQLITE_OK)
    rc = journal_replay_count_step(j, c, &counted);
  if (rc == SQLITE_OK && deleted && (oldest == 0 || c->from_ms < oldest)) {
    char from_text[32], oldest_text[32], to_text[32], why[96];
    journal_format_time(c->from_ms, from_text, sizeof(from_text));
    journal_format_time(oldest, oldest_text, sizeof(oldest_text));
    if (c->to_ms > 0)
      journal_format_time(c->to_ms, to_text, sizeof(to_text));
    else
      snprintf(to_text, sizeof(to_text), "the newest sale");
    if (strcmp(j->sales_deleted_why, "full") == 0)
      snprintf(why, sizeof(why), "deleted to make room on a full disk");
    else if (j->sales_deleted_why[0] && (j->retention_ms > 0 || j->retention_used_ms > 0))
      snprintf(why, sizeof(why), "deleted after %lld days' retention",
               (long long)((j->retention_ms > 0 ? j->retention_ms : j->retention_used_ms) /
                           (24 * 3600 * 1000LL)));
    else if (j->sales_deleted_why[0])
      snprintf(why, sizeof(why), "deleted after the retention period");
    else
      snprintf(why, sizeof(why), "the journal was started anew");
    c->available_from_ms = oldest > 0 ? oldest : (int64_t)time(NULL) * 1000;
    if (oldest > 0)
      snprintf(c->incomplete, sizeof(c->incomplete),
               "sales before %s are no longer on device %s (%s); asked from %s, replayed %s "
               "to %s",
               oldest_text, device_id && device_id[0] ? device_id : "-", why, from_text,
               oldest_text, to_text);
    else
      snprintf(c->incomplete, sizeof(c->incomplete),
               "no sales are on device %s any more (%s); asked from %s, replayed nothing",
               device_id && device_id[0] ? device_id : "-", why, from_text);
  }
  return rc;
}

/* The last seq a row holds: a push-now is DONE once the collector
 * acknowledged it. Not j->stats.last_seq: after an unclean stop that is the
 * skip target, which no row has and no acknowledgement reaches. */
static int journal_last_row_seq(journal *j, int64_t *seq)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_LAST_ROW_SEQ, -1, &stmt, NULL);

  *seq = 0;
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      *seq = sqlite3_column_int64(stmt, 0);
      rc = SQLITE_OK;
    } else {
      rc = sqlite3_extended_errcode(j->db);
    }
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* Inside the open transaction: records op->command unless known. */
static int journal_command_record(journal *j, struct journal_op *op, int64_t now_ms)
{
  struct journal_command *in = op->command, stored;
  int found = 0;
  int rc = journal_command_get(j, in->command_id, &stored, &found);

  if (rc != SQLITE_OK)
    return rc;
  if (found) {
    if (in->state == JOURNAL_COMMAND_CANCELLED && !journal_command_finished(stored.state)) {
      stored.state = JOURNAL_COMMAND_CANCELLED;
      stored.updated_ms = now_ms;
      snprintf(stored.message, sizeof(stored.message), "cancelled by head office");
      rc = journal_command_put(j, &stored);
      op->command_changed = 1;
    }
    *in = stored;
    return rc;
  }
  in->recorded_ms = in->updated_ms = now_ms;
  in->done_sales = in->total_sales = 0;
  in->available_from_ms = 0;
  in->incomplete[0] = in->message[0] = '\0';
  in->replay_batch_seq = in->replay_acked_batch_seq = 0;
  in->replay_cut_seq = in->replay_acked_seq = 0;
  if (in->state == JOURNAL_COMMAND_CANCELLED) {
    /* Cancelled before this device ever saw it: recorded, never run. */
    snprintf(in->message, sizeof(in->message), "cancelled by head office before it started");
  } else {
    in->state = JOURNAL_COMMAND_RUNNING;
    if (in->kind == JOURNAL_COMMAND_RESYNC)
      rc = journal_resync_bounds(j, in, op->reason);
    else
      rc = journal_last_row_seq(j, &in->upto_seq);
  }
  if (rc == SQLITE_OK)
    rc = journal_command_put(j, in);
  op->command_changed = 1;
  return rc;
}

/* Inside the open transaction: a command's new state, unless finished. */
static int journal_command_set_state(journal *j, struct journal_op *op, int64_t now_ms)
{
  struct journal_command *in = op->command, stored;
  int found = 0;
  int rc = journal_command_get(j, in->command_id, &stored, &found);

  if (rc != SQLITE_OK)
    return rc;
  if (!found) {
    op->error = JOURNAL_ENOTFOUND;
    snprintf(op->message, sizeof(op->message), "command %s is not recorded in journal %s",
             in->command_id, j->path);
    return SQLITE_NOTFOUND;
  }
  if (!journal_command_finished(stored.state)) {
    stored.state = in->state;
    snprintf(stored.message, sizeof(stored.message), "%s", in->message);
    if (stored.state == JOURNAL_COMMAND_DONE && stored.incomplete[0]) {
      stored.state = JOURNAL_COMMAND_INCOMPLETE;
      snprintf(stored.message, sizeof(stored.message), "%s", stored.incomplete);
    }
    stored.updated_ms = now_ms;
    rc = journal_command_put(j, &stored);
    op->command_changed = 1;
  }
  *in = stored;
  return rc;
}

/* ---- REPLAY_BATCH and REPLAY_ACK ---------------------------------------------- */

/* The sales and rows of a resync in (after, upto], at most max_sales sales:
 * rows up to the last sale read when there may be more. */
static int journal_replay_read(journal *j, const struct journal_command *c, int64_t after,
                               int64_t upto, size_t max_sales, struct journal_seal_sale **sales,
                               size_t *count, struct journal_seal_row **rows, size_t *row_count,
                               struct journal_op *op)
{
  int64_t to = c->to_ms > 0 ? c->to_ms : INT64_MAX, rows_upto = upto;
  sqlite3_stmt *stmt = NULL;
  int rc;

  *sales = calloc(max_sales ? max_sales : 1, sizeof(**sales));
  *count = 0;
  if (!*sales)
    return SQLITE_NOMEM;
  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_REPLAY_SALES, -1, &stmt, NULL);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_int64(stmt, 1, after);
  sqlite3_bind_int64(stmt, 2, upto);
  sqlite3_bind_int64(stmt, 3, c->from_ms);
  sqlite3_bind_int64(stmt, 4, to);
  sqlite3_bind_int64(stmt, 5, (int64_t)max_sales);
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && *count < max_sales) {
    if (journal__read_sale(stmt, &(*sales)[*count])) {
      snprintf(op->message, sizeof(op->message),
               "journal %s: sale seq %" PRId64 " does not read back (edited or damaged row); "
               "the resync cannot replay it",
               j->path, (*sales)[*count].seq);
      sale_clear(&(*sales)[*count].sale);
      op->error = JOURNAL_ECORRUPT;
      sqlite3_finalize(stmt);
      return SQLITE_CORRUPT;
    }
    /* A replayed row read off a wrong clock and never corrected says so,
     * as its live batch did. */
    (*sales)[*count].received_untrusted = journal__clock_untrusted(j, (*sales)[*count].seq);
    (*count)++;
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW)
    return rc;
  if (*count == max_sales && max_sales)
    rows_upto = (*sales)[*count - 1].seq;
  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_REPLAY_ROWS, -1, &stmt, NULL);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_int64(stmt, 1, after);
  sqlite3_bind_int64(stmt, 2, rows_upto);
  sqlite3_bind_int64(stmt, 3, c->from_ms);
  sqlite3_bind_int64(stmt, 4, to);
  rc = journal__read_rows_stmt(j, stmt, rows, row_count);
  sqlite3_finalize(stmt);
  return rc;
}

/* Packs replay batch `batch_seq` from rows (after, upto]. On success with
 * rows, op->batch holds it (*covered_last its last row); *row_count 0 =
 * no row left in the range. `exact`: a batch made again must hold exactly
 * `expect_sales` sales, whatever the caps. */
static int journal_replay_pack(journal *j, struct journal_op *op, struct journal_command *c,
                               int64_t batch_seq, int64_t after, int64_t upto, int64_t created_ms,
                               int exact, uint32_t expect_sales, size_t *row_count)
{
  struct journal_seal_sale *sales = NULL;
  struct journal_seal_row *rows = NULL;
  size_t count = 0, used = 0, covered = 0;
  uint8_t *body = NULL;
  size_t body_len = 0;
  size_t max_sales = exact ? (size_t)expect_sales + 1 : op->max_sales;
  int rc = journal_replay_read(j, c, after, upto, max_sales, &sales, &count, &rows, row_count, op);

  if (rc == SQLITE_OK && *row_count) {
    struct journal_seal_input in = {.journal_id = j->stats.journal_id,
                                    .batch_seq = batch_seq,
                                    .created_ms = created_ms,
                                    .sales = sales,
                                    .count = count,
                                    .rows = rows,
                                    .row_count = *row_count,
                                    .last_seq_all = rows[*row_count - 1].seq,
                                    .max_bytes = exact ? SIZE_MAX / 2 : op->max_bytes,
                                    .max_decoded_bytes = exact ? 0 : op->max_decoded_bytes,
                                    .resync_id = c->command_id};
    int pack_rc = op->pack(op->pack_arg, &in, &body, &body_len, &used);
    if (pack_rc == 0 && count && used == 0 && !exact) {
      /* Not a row that changed: its first sale alone is over the caps. No
       * retry packs it: an error the replay lane FAILS the resync with. */
      op->error = JOURNAL_ECORRUPT;
      snprintf(op->message, sizeof(op->message),
               "replay batch %" PRId64 " of resync %s: sale seq %" PRId64 " alone is larger "
               "than a replay batch may be (%zu bytes); it cannot be replayed until the "
               "collector's limits allow it",
               batch_seq, c->command_id, sales[0].seq, op->max_bytes);
      rc = SQLITE_ERROR;
    } else if (pack_rc || (count && used == 0) || used > count ||
               (exact && used != expect_sales)) {
      op->error = pack_rc ? pack_rc : JOURNAL_ECORRUPT;
      snprintf(op->message, sizeof(op->message),
               "replay batch %" PRId64 " of resync %s on %s: %s", batch_seq, c->command_id,
               j->path,
               pack_rc ? journal_strerror(pack_rc)
                       : "its rows are no longer what was recorded (edited or deleted)");
      rc = SQLITE_ERROR;
    } else {
      journal_seal_covered(&in, used, &op->batch.last_seq, &covered);
      op->batch.batch_seq = batch_seq;
      op->batch.first_seq = rows[0].seq;
      op->batch.sale_count = (uint32_t)used;
      op->batch.created_ms = created_ms;
      op->batch.body = body;
      op->batch.body_len = body_len;
      body = NULL;
    }
  } else if (rc == SQLITE_OK && exact) {
    op->error = JOURNAL_ECORRUPT;
    snprintf(op->message, sizeof(op->message),
             "replay batch %" PRId64 " of resync %s on %s: its rows are gone", batch_seq,
             c->command_id, j->path);
    rc = SQLITE_ERROR;
  }
  free(body);
  journal__free_seal_sales(sales, count);
  journal__free_rows(rows, *row_count);
  return rc;
}

/* A replay batch cut before: its recorded range, made again. */
static int journal_replay_again(journal *j, struct journal_op *op, struct journal_command *c)
{
  sqlite3_stmt *stmt = NULL;
  int64_t first_seq, last_seq, created_ms;
  uint32_t sales;
  size_t row_count = 0;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_REPLAY_BATCH, -1, &stmt, NULL);

  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_text(stmt, 1, c->command_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(stmt, 2, op->batch_seq);
  rc = sqlite3_step(stmt);
  if (rc != SQLITE_ROW) {
    sqlite3_finalize(stmt);
    op->error = JOURNAL_ENOTFOUND;
    snprintf(op->message, sizeof(op->message),
             "replay batch %" PRId64 " of resync %s is not recorded in %s", op->batch_seq,
             c->command_id, j->path);
    return SQLITE_NOTFOUND;
  }
  first_seq = sqlite3_column_int64(stmt, 0);
  last_seq = sqlite3_column_int64(stmt, 1);
  sales = (uint32_t)sqlite3_column_int64(stmt, 2);
  created_ms = sqlite3_column_int64(stmt, 3);
  sqlite3_finalize(stmt);
  rc = journal_replay_pack(j, op, c, op->batch_seq, first_seq - 1, last_seq, created_ms, 1,
                           sales, &row_count);
  if (rc == SQLITE_OK && op->batch.last_seq != last_seq) {
    journal_op_clear(op);
    memset(&op->batch, 0, sizeof(op->batch));
    op->error = JOURNAL_ECORRUPT;
    snprintf(op->message, sizeof(op->message),
             "replay batch %" PRId64 " of resync %s on %s: its rows are no longer what was "
             "recorded (edited or deleted)",
             op->batch_seq, c->command_id, j->path);
    rc = SQLITE_ERROR;
  }
  return rc;
}

/* The next replay batch, cut now from the next window of at most
 * JOURNAL_REPLAY_SCAN_ROWS seqs and its range recorded in the open
 * transaction. None when that window holds no row of the resync: the
 * cursor moves past it (the caller asks again while replay_cut_seq <
 * upto_seq), so one operation never scans the whole journal. */
static int journal_replay_cut(journal *j, struct journal_op *op, struct journal_command *c,
                              int64_t now_ms)
{
  size_t row_count = 0;
  sqlite3_stmt *stmt = NULL;
  int64_t window_end;
  int rc;

  if (c->replay_cut_seq >= c->upto_seq)
    return SQLITE_OK;
  window_end = c->upto_seq - c->replay_cut_seq > JOURNAL_REPLAY_SCAN_ROWS
                   ? c->replay_cut_seq + JOURNAL_REPLAY_SCAN_ROWS
                   : c->upto_seq;
  rc = journal_replay_pack(j, op, c, op->batch_seq, c->replay_cut_seq, window_end, now_ms, 0,
                           0, &row_count);
  if (rc != SQLITE_OK)
    return rc;
  if (row_count == 0) {
    /* Nothing in this window: the cursor says so for good. */
    c->replay_cut_seq = window_end;
    return journal_command_put(j, c);
  }
  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_PUT_REPLAY_BATCH, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, c->command_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, op->batch_seq);
    sqlite3_bind_int64(stmt, 3, op->batch.first_seq);
    sqlite3_bind_int64(stmt, 4, op->batch.last_seq);
    sqlite3_bind_int64(stmt, 5, op->batch.sale_count);
    sqlite3_bind_int64(stmt, 6, now_ms);
    rc = sqlite3_step(stmt);
    rc = rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  if (rc == SQLITE_OK) {
    c->replay_batch_seq = op->batch_seq;
    c->replay_cut_seq = op->batch.last_seq;
    rc = journal_command_put(j, c);
  }
  return rc;
}

static int journal_replay_batch(journal *j, struct journal_op *op, int64_t now_ms)
{
  struct journal_command c;
  int found = 0, counted = 0;
  int rc = journal_command_get(j, op->command->command_id, &c, &found);

  if (rc != SQLITE_OK)
    return rc;
  if (!found || c.kind != JOURNAL_COMMAND_RESYNC || c.state != JOURNAL_COMMAND_RUNNING) {
    op->error = JOURNAL_EINVAL;
    snprintf(op->message, sizeof(op->message), "resync %s is not running in journal %s",
             op->command->command_id, j->path);
    return SQLITE_MISUSE;
  }
  if (op->batch_seq < 1 || op->batch_seq > c.replay_batch_seq + 1) {
    op->error = JOURNAL_ENOTFOUND;
    snprintf(op->message, sizeof(op->message),
             "replay batch %" PRId64 " of resync %s asked for, but %" PRId64 " were cut",
             op->batch_seq, c.command_id, c.replay_batch_seq);
    return SQLITE_NOTFOUND;
  }
  rc = journal_replay_count_step(j, &c, &counted);
  if (rc == SQLITE_OK && counted)
    rc = journal_command_put(j, &c);
  if (rc != SQLITE_OK)
    return rc;
  if (op->batch_seq <= c.replay_batch_seq)
    rc = journal_replay_again(j, op, &c);
  else
    rc = journal_replay_cut(j, op, &c, now_ms);
  *op->command = c;
  return rc;
}

static int journal_replay_ack(journal *j, struct journal_op *op)
{
  struct journal_command c;
  sqlite3_stmt *stmt = NULL;
  int found = 0;
  int rc = journal_command_get(j, op->command->command_id, &c, &found);

  if (rc != SQLITE_OK)
    return rc;
  if (!found) {
    op->error = JOURNAL_ENOTFOUND;
    snprintf(op->message, sizeof(op->message), "resync %s is not recorded in journal %s",
             op->command->command_id, j->path);
    return SQLITE_NOTFOUND;
  }
  if (op->batch_seq > c.replay_batch_seq)
    op->batch_seq = c.replay_batch_seq; /* never more than was cut */
  if (op->batch_seq > c.replay_acked_batch_seq) {
    rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_REPLAY_SALES_ACKED, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(stmt, 1, c.command_id, -1, SQLITE_STATIC);
      sqlite3_bind_int64(stmt, 2, c.replay_acked_batch_seq);
      sqlite3_bind_int64(stmt, 3, op->batch_seq);
      rc = sqlite3_step(stmt);
      if (rc == SQLITE_ROW) {
        c.done_sales += (uint64_t)sqlite3_column_int64(stmt, 0);
        if (sqlite3_column_int64(stmt, 1) > c.replay_acked_seq)
          c.replay_acked_seq = sqlite3_column_int64(stmt, 1);
        rc = SQLITE_OK;
      } else {
        rc = sqlite3_extended_errcode(j->db);
      }
    }
    sqlite3_finalize(stmt);
    c.replay_acked_batch_seq = op->batch_seq;
    if (rc == SQLITE_OK)
      rc = journal_command_put(j, &c);
    op->command_changed = 1;
  }
  *op->command = c;
  return rc;
}

void journal__command_op(journal *j, struct journal_op *op, int64_t now_ms)
{
  int rc;

  if (!op->command || !op->command->command_id[0]) {
    op->error = JOURNAL_EINVAL;
    snprintf(op->message, sizeof(op->message), "a command operation without a command_id");
    return;
  }
  rc = journal__step_done(j, j->begin);
  if (rc == SQLITE_OK) {
    switch (op->kind) {
    case JOURNAL_OP_COMMAND:
      rc = journal_command_record(j, op, now_ms);
      break;
    case JOURNAL_OP_COMMAND_STATE:
      rc = journal_command_set_state(j, op, now_ms);
      break;
    case JOURNAL_OP_REPLAY_BATCH:
      rc = journal_replay_batch(j, op, now_ms);
      break;
    default:
      rc = journal_replay_ack(j, op);
      break;
    }
  }
  /* synchronous=FULL: the commit fsyncs the WAL, so a command is on flash
   * before done() lets the uplink act on it. */
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->commit);
  if (rc != SQLITE_OK) {
    if (!sqlite3_get_autocommit(j->db))
      journal__step_done(j, j->rollback);
    journal_op_clear(op);
    memset(&op->batch, 0, sizeof(op->batch));
    op->command_changed = 0;
    if (!op->error) {
      op->error = journal__map_sqlite(rc);
      snprintf(op->message, sizeof(op->message), "command %s on %s: %s (%s)",
               op->command->command_id, j->path, journal_strerror(op->error),
               sqlite3_errstr(rc));
    }
    return;
  }
  if (op->command_changed || op->kind == JOURNAL_OP_REPLAY_BATCH)
    journal_commands_publish(j);
}
