/*
 * journal_batch.c - the uplink's operations on the journal, run on the
 * writer thread: sealing unsent sales into batches, loading a sealed batch
 * to (re)send, acknowledging, unsealing after a 413, and retention.
 *
 * Invariants this file keeps (journal.h explains why they matter):
 *   - batch_seq is meta.last_batch_seq + 1 for every new batch, so numbers
 *     are contiguous and never reused, even after retention;
 *   - a batch covers a contiguous seq range, sealed in seq order, and is
 *     inserted together with its sales' batch_seq in one transaction;
 *   - a sealed batch's row never changes but for attempts and acked_ms;
 *   - acknowledged batches are the prefix 1..meta.acked_batch_seq, and only
 *     they (and their sales) are ever deleted, by retention.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal/journal_int.h"
#include "journal/journal_sql.h"
#include "platform/clock.h"
#include "platform/disk.h"
#include "platform/log.h"

/* ---- meta --------------------------------------------------------------- */

static int journal_get_meta_int(sqlite3 *db, const char *key, int64_t *value)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, JOURNAL_SQL_GET_META, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      *value = sqlite3_column_int64(stmt, 0);
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      *value = 0;
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(stmt);
  return rc;
}

int journal__set_meta_int(journal *j, const char *key, int64_t value)
{
  char text[32];
  snprintf(text, sizeof(text), "%" PRId64, value);
  sqlite3_bind_text(j->set_meta, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(j->set_meta, 2, text, -1, SQLITE_TRANSIENT);
  return journal__step_done(j, j->set_meta);
}

/* ---- the kept count of sales (JOURNAL_SQL_SALES_COUNTED) ------------------ */

/* The kept figure: *count sales rows at or below seq *upto, or *count = -1
 * when there is none to keep up to date (missing, or stale: the next start
 * counts). Inside the writer's transaction. SQLite's code. */
static int journal_counted_read(journal *j, int64_t *count, int64_t *upto)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_SALES_COUNTED, -1, &stmt, NULL);

  *count = -1;
  *upto = 0;
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW && sqlite3_column_int64(stmt, 2) == sqlite3_column_int64(stmt, 3) &&
        sqlite3_column_int64(stmt, 0) >= 0 && sqlite3_column_int64(stmt, 1) >= 0) {
      *count = sqlite3_column_int64(stmt, 0);
      *upto = sqlite3_column_int64(stmt, 1);
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* The kept figure read and moved forward to count up to seq `to` (the
 * rows between its seq and `to` counted: a rowid range, one batch, or the
 * rows since journal__counted_keep, at most), not yet written. Never back:
 * the writer keeps it at the newest row (journal__counted_keep), above the
 * sealing cursor, and back to the cursor would count the rows not sealed,
 * a million on a store offline for months; it is exact at its own seq, and
 * the rows deleted below it are taken off by their deleter. *count = -1:
 * none kept. */
static int journal_counted_move(journal *j, int64_t to, int64_t *count, int64_t *upto)
{
  int64_t rows = 0;
  int rc = journal_counted_read(j, count, upto);

  if (rc != SQLITE_OK || *count < 0 || to <= *upto)
    return rc;
  rc = journal__query_int(j, JOURNAL_SQL_SALES_IN_RANGE, *upto, to, &rows);
  if (rc == SQLITE_OK) {
    *count += rows;
    *upto = to;
  }
  return rc;
}

/* Writes the kept figure (meta sales_counted, sales_counted_seq and
 * sales_counted_min). SQLite's code. Writer thread, or the opening thread. */
int journal__counted_set(journal *j, int64_t count, int64_t upto, int64_t lowest)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_SALES_COUNTED_SET, -1, &stmt, NULL);

  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, count);
    sqlite3_bind_int64(stmt, 2, upto);
    sqlite3_bind_int64(stmt, 3, lowest);
    rc = sqlite3_step(stmt) == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* Writes the kept figure: `count` sales rows at or below `upto`, with the
 * lowest of them as they are now. Nothing when count < 0. */
static int journal_counted_write(journal *j, int64_t count, int64_t upto)
{
  int64_t lowest = 0;
  int rc;

  if (count < 0)
    return SQLITE_OK;
  rc = journal__query_int(j, JOURNAL_SQL_SALES_LOWEST, upto, 0, &lowest);
  if (rc == SQLITE_OK)
    rc = journal__counted_set(j, count, upto, lowest);
  return rc;
}

int journal__counted_keep(journal *j, int64_t upto)
{
  int64_t count, counted_upto;
  int rc = journal_counted_move(j, upto, &count, &counted_upto);
  if (rc == SQLITE_OK)
    rc = journal_counted_write(j, count, counted_upto);
  return rc;
}

int journal__count_unsent(journal *j, uint64_t *unsent)
{
  sqlite3_stmt *stmt = NULL;
  int64_t acked = j->stats.acked_last_seq, kept = -1, kept_seq = 0, kept_acked = 0;
  int64_t above = 0, acked_since = 0, lowest = 0;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_UNSENT_KEPT, -1, &stmt, NULL);

  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      kept = sqlite3_column_int64(stmt, 0);
      kept_seq = sqlite3_column_int64(stmt, 1);
      kept_acked = sqlite3_column_int64(stmt, 2);
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  /* Usable when the prefix only grew since, and the rows acknowledged
   * since are all still held (retention deletes the oldest first). */
  if (rc == SQLITE_OK && kept >= 0 && kept_acked < acked)
    rc = journal__query_int(j, JOURNAL_SQL_LOWEST_ROW_SEQ, 0, 0, &lowest);
  if (rc != SQLITE_OK)
    return rc;
  if (kept >= 0 && kept_seq >= kept_acked && kept_acked <= acked &&
      (kept_acked == acked || lowest <= kept_acked + 1)) {
    rc = journal__query_int(j, JOURNAL_SQL_SALES_IN_RANGE, kept_seq, INT64_MAX, &above);
    if (rc == SQLITE_OK && acked > kept_acked)
      rc = journal__query_int(j, JOURNAL_SQL_SALES_IN_RANGE, kept_acked, acked, &acked_since);
    if (rc != SQLITE_OK)
      return rc;
    if (kept + above - acked_since >= 0) {
      *unsent = (uint64_t)(kept + above - acked_since);
      return SQLITE_OK;
    }
  }
  /* None kept (an agent before it made the journal), or not usable: the
   * rows above the prefix counted, once (kept at the next keep). */
  rc = journal__query_int(j, JOURNAL_SQL_SALES_IN_RANGE, acked, INT64_MAX, &above);
  if (rc == SQLITE_OK)
    *unsent = (uint64_t)above;
  if (rc == SQLITE_OK && above >= JOURNAL_STOCK_KEEP_ROWS)
    j->stock_kept_moved += above; /* the writer keeps it after its first transaction */
  return rc;
}

/* received_ms of the oldest sale above `after_seq`, or 0. */
static int journal_oldest_after(journal *j, int64_t after_seq, int64_t *received_ms)
{
  int rc;
  sqlite3_bind_int64(j->oldest_unsent, 1, after_seq);
  rc = sqlite3_step(j->oldest_unsent);
  *received_ms = rc == SQLITE_ROW ? sqlite3_column_int64(j->oldest_unsent, 0) : 0;
  sqlite3_reset(j->oldest_unsent);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
}

int journal__load_batch_stats(journal *j)
{
  sqlite3_stmt *stmt = NULL;
  int rc;

  if (journal_get_meta_int(j->db, "acked_batch_seq", &j->stats.acked_batch_seq) ||
      journal_get_meta_int(j->db, "acked_last_seq", &j->stats.acked_last_seq) ||
      journal_get_meta_int(j->db, "last_batch_seq", &j->stats.last_batch_seq))
    return -1;
  if (journal_oldest_after(j, j->stats.acked_last_seq, &j->stats.oldest_unsent_ms))
    return -1;
  j->stats.last_ack_ms = 0;
  rc = sqlite3_prepare_v2(j->db, "SELECT acked_ms FROM batches WHERE batch_seq = ?1", -1, &stmt,
                          NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, j->stats.acked_batch_seq);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
      j->stats.last_ack_ms = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* ---- transactions --------------------------------------------------------- */

static int journal_begin(journal *j) { return journal__step_done(j, j->begin); }

static int journal_finish(journal *j, int rc)
{
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->commit);
  if (rc != SQLITE_OK && !sqlite3_get_autocommit(j->db))
    journal__step_done(j, j->rollback);
  /* Clock ranges of deleted rows: gone from memory once gone on disk. */
  journal__clock_forgotten(j, rc == SQLITE_OK);
  return rc;
}

static void journal_op_fail(journal *j, struct journal_op *op, int sqlite_rc, const char *what)
{
  op->error = journal__map_sqlite(sqlite_rc);
  snprintf(op->message, sizeof(op->message), "%s on %s: %s (%s)", what, j->path,
           journal_strerror(op->error), sqlite3_errstr(sqlite_rc));
}

/* ---- reading sales back ---------------------------------------------------- */

static int journal_kind_parse(const char *text, enum sale_kind *kind)
{
  if (strcmp(text, "sale") == 0)
    *kind = SALE_KIND_SALE;
  else if (strcmp(text, "refund") == 0)
    *kind = SALE_KIND_REFUND;
  else if (strcmp(text, "void") == 0)
    *kind = SALE_KIND_VOID;
  else
    return -1;
  return 0;
}

static int journal_channel_parse(const char *text, enum sale_channel *channel)
{
  if (strcmp(text, "pos") == 0)
    *channel = SALE_CHANNEL_POS;
  else if (strcmp(text, "online") == 0)
    *channel = SALE_CHANNEL_ONLINE;
  else if (strcmp(text, "delivery") == 0)
    *channel = SALE_CHANNEL_DELIVERY;
  else if (strcmp(text, "pickup") == 0)
    *channel = SALE_CHANNEL_PICKUP;
  else
    return -1;
  return 0;
}

/* Copies column `col` (text or NULL) into `out`; -1 if it does not fit. */
static int journal_column_text(sqlite3_stmt *stmt, int col, char *out, size_t out_size)
{
  const unsigned char *text = sqlite3_column_text(stmt, col);
  size_t len = text ? (size_t)sqlite3_column_bytes(stmt, col) : 0;
  if (len >= out_size)
    return -1;
  if (len)
    memcpy(out, text, len);
  out[len] = '\0';
  return 0;
}

static int journal_json_text(json_t *object, const char *key, char *out, size_t out_size,
                             int required)
{
  json_t *value = json_object_get(object, key);
  const char *text;
  size_t len;
  if (!value) {
    out[0] = '\0';
    return required ? -1 : 0;
  }
  if (!json_is_string(value))
    return -1;
  text = json_string_value(value);
  len = json_string_length(value);
  if (len >= out_size)
    return -1;
  memcpy(out, text, len + 1);
  return 0;
}

static int journal_json_int(json_t *object, const char *key, int64_t *out)
{
  json_t *value = json_object_get(object, key);
  if (!json_is_integer(value))
    return -1;
  *out = (int64_t)json_integer_value(value);
  return 0;
}

/* Lines and payments from the JSON text journal_lines_json wrote. */
static int journal_parse_items(struct sale *sale, const char *lines_text, const char *payments_text)
{
  json_t *lines = json_loads(lines_text, JSON_REJECT_DUPLICATES, NULL);
  json_t *payments = json_loads(payments_text, JSON_REJECT_DUPLICATES, NULL);
  int rc = -1;

  if (!json_is_array(lines) || !json_is_array(payments) || json_array_size(lines) == 0 ||
      json_array_size(lines) > SALE_LINES_MAX || json_array_size(payments) > SALE_PAYMENTS_MAX)
    goto out;
  sale->line_count = json_array_size(lines);
  sale->lines = calloc(sale->line_count, sizeof(*sale->lines));
  sale->payment_count = json_array_size(payments);
  sale->payments = calloc(sale->payment_count ? sale->payment_count : 1, sizeof(*sale->payments));
  if (!sale->lines || !sale->payments)
    goto out;
  for (size_t i = 0; i < sale->line_count; i++) {
    json_t *item = json_array_get(lines, i);
    struct sale_line *line = &sale->lines[i];
    if (journal_json_text(item, "sku", line->sku, sizeof(line->sku), 1) ||
        journal_json_text(item, "promo_id", line->promo_id, sizeof(line->promo_id), 0) ||
        journal_json_int(item, "qty", &line->qty) ||
        journal_json_int(item, "unit_price", &line->unit_price) ||
        journal_json_int(item, "discount", &line->discount) ||
        journal_json_int(item, "tax", &line->tax))
      goto out;
  }
  for (size_t i = 0; i < sale->payment_count; i++) {
    json_t *item = json_array_get(payments, i);
    struct sale_payment *payment = &sale->payments[i];
    if (journal_json_text(item, "method", payment->method, sizeof(payment->method), 1) ||
        journal_json_int(item, "amount", &payment->amount))
      goto out;
  }
  rc = 0;
out:
  json_decref(lines);
  json_decref(payments);
  return rc;
}

int journal__read_sale(sqlite3_stmt *stmt, struct journal_seal_sale *out)
{
  struct sale *sale = &out->sale;
  char kind[16], channel[16], stored_time[SALE_TIME_TEXT_MAX + 1];
  /* A compact row (schema 8) holds its items as a BLOB; a JSON row as text. */
  int compact = sqlite3_column_type(stmt, 14) == SQLITE_BLOB;
  const void *items = compact ? sqlite3_column_blob(stmt, 14) : NULL;
  const char *lines = compact ? NULL : (const char *)sqlite3_column_text(stmt, 14);
  const char *payments = compact ? NULL : (const char *)sqlite3_column_text(stmt, 15);

  memset(out, 0, sizeof(*out));
  out->seq = sqlite3_column_int64(stmt, 0);
  out->received_ms = sqlite3_column_int64(stmt, 16);
  if (journal_column_text(stmt, 1, sale->sale_id, sizeof(sale->sale_id)) ||
      journal_column_text(stmt, 2, kind, sizeof(kind)) || journal_kind_parse(kind, &sale->kind) ||
      journal_column_text(stmt, 3, sale->original_sale_id, sizeof(sale->original_sale_id)) ||
      journal_column_text(stmt, 4, sale->terminal_id, sizeof(sale->terminal_id)) ||
      journal_column_text(stmt, 5, sale->cashier_id, sizeof(sale->cashier_id)) ||
      journal_column_text(stmt, 6, channel, sizeof(channel)) ||
      journal_channel_parse(channel, &sale->channel) ||
      journal_column_text(stmt, 7, sale->delivery_partner, sizeof(sale->delivery_partner)) ||
      journal_column_text(stmt, 8, stored_time, sizeof(stored_time)) ||
      journal_column_text(stmt, 11, sale->currency, sizeof(sale->currency)))
    return -1;
  sale->business_time_ms = sqlite3_column_int64(stmt, 9);
  sale->utc_offset_minutes = sqlite3_column_int(stmt, 10);
  if (journal__sale_time(stored_time, sale->business_time_ms, sale->utc_offset_minutes,
                         sale->business_time, sizeof(sale->business_time)))
    return -1;
  sale->currency_exponent = (unsigned)sqlite3_column_int(stmt, 12);
  sale->total = sqlite3_column_int64(stmt, 13);
  if (compact)
    return items ? sale_items_unpack(items, (size_t)sqlite3_column_bytes(stmt, 14), sale) : -1;
  if (!lines || !payments || journal_parse_items(sale, lines, payments))
    return -1;
  return 0;
}

void journal__free_seal_sales(struct journal_seal_sale *sales, size_t count)
{
  if (!sales)
    return;
  for (size_t i = 0; i < count; i++) {
    sale_clear(&sales[i].sale);
    free(sales[i].carried);
  }
  free(sales);
}

/* Where the carried-over rows of a batch other than sales were before. */
struct journal_row_origins {
  int64_t *seqs;
  struct journal_origin *from;
  size_t count, capacity;
};

static void journal_row_origins_free(struct journal_row_origins *o)
{
  free(o->seqs);
  free(o->from);
  memset(o, 0, sizeof(*o));
}

/* One earlier place of a row that is not a sale. SQLITE_OK or NOMEM. */
static int journal_row_origin_add(struct journal_row_origins *o, int64_t seq, const char *id,
                                  int64_t previous_seq)
{
  if (o->count == o->capacity) {
    size_t capacity = o->capacity ? 2 * o->capacity : 16;
    int64_t *seqs = realloc(o->seqs, capacity * sizeof(*seqs));
    struct journal_origin *from;
    if (!seqs)
      return SQLITE_NOMEM;
    o->seqs = seqs;
    from = realloc(o->from, capacity * sizeof(*from));
    if (!from)
      return SQLITE_NOMEM;
    o->from = from;
    o->capacity = capacity;
  }
  o->seqs[o->count] = seq;
  memcpy(o->from[o->count].journal_id, id, 33);
  o->from[o->count].seq = previous_seq;
  o->count++;
  return SQLITE_OK;
}

/* Where the rows first_seq..last_seq carried over from another journal
 * were before: a sale's places into its `carried` (sales: seq order), any
 * other row's into `others`. Rarely anything: the table is empty on almost
 * every device, so this is prepared here, not at open. */
static int journal_read_carried(journal *j, int64_t first_seq, int64_t last_seq,
                                struct journal_seal_sale *sales, size_t count,
                                struct journal_row_origins *others)
{
  sqlite3_stmt *stmt = NULL;
  size_t at = 0;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_CARRIED_RANGE, -1, &stmt, NULL);

  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_int64(stmt, 1, first_seq);
  sqlite3_bind_int64(stmt, 2, last_seq);
  sqlite3_bind_int(stmt, 3, JOURNAL_MAX_CARRIED);
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    int64_t seq = sqlite3_column_int64(stmt, 0);
    const char *id = (const char *)sqlite3_column_text(stmt, 1);
    struct journal_seal_sale *sale;
    if (!id || strlen(id) != 32)
      continue;
    while (at < count && sales[at].seq < seq)
      at++;
    if (at == count || sales[at].seq != seq) {
      rc = journal_row_origin_add(others, seq, id, sqlite3_column_int64(stmt, 2));
      if (rc != SQLITE_OK)
        break;
      continue;
    }
    sale = &sales[at];
    if (!sale->carried) {
      sale->carried = calloc(JOURNAL_MAX_CARRIED, sizeof(*sale->carried));
      if (!sale->carried) {
        rc = SQLITE_NOMEM;
        break;
      }
    }
    if (sale->carried_count < JOURNAL_MAX_CARRIED) {
      memcpy(sale->carried[sale->carried_count].journal_id, id, 33);
      sale->carried[sale->carried_count].seq = sqlite3_column_int64(stmt, 2);
      sale->carried_count++;
    }
  }
  sqlite3_finalize(stmt);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ---- NEXT_BATCH ------------------------------------------------------------ */

/* Loads batch op->batch_seq if it exists (found = 1). Reads only: the
 * attempt is counted afterwards, by journal_count_attempt. */
static int journal_load_batch(journal *j, struct journal_op *op, int *found)
{
  sqlite3_stmt *get = j->get_batch;
  int rc;

  *found = 0;
  sqlite3_bind_int64(get, 1, op->batch_seq);
  rc = sqlite3_step(get);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(get);
    return SQLITE_OK;
  }
  if (rc != SQLITE_ROW) {
    rc = sqlite3_extended_errcode(j->db);
    sqlite3_reset(get);
    return rc;
  }
  op->batch.batch_seq = op->batch_seq;
  op->batch.first_seq = sqlite3_column_int64(get, 0);
  op->batch.last_seq = sqlite3_column_int64(get, 1);
  op->batch.sale_count = (uint32_t)sqlite3_column_int64(get, 2);
  op->batch.body_len = (size_t)sqlite3_column_bytes(get, 3);
  op->batch.body = malloc(op->batch.body_len ? op->batch.body_len : 1);
  if (!op->batch.body) {
    sqlite3_reset(get);
    return SQLITE_NOMEM;
  }
  if (op->batch.body_len)
    memcpy(op->batch.body, sqlite3_column_blob(get, 3), op->batch.body_len);
  op->batch.created_ms = sqlite3_column_int64(get, 4);
  op->batch.attempts = sqlite3_column_int64(get, 5) + 1;
  op->batch.acked_ms = sqlite3_column_type(get, 6) == SQLITE_NULL ? 0 : sqlite3_column_int64(get, 6);
  sqlite3_reset(get);
  *found = 1;
  return SQLITE_OK;
}

/* Counts one more attempt of stored batch op->batch_seq, in a transaction
 * of its own, after the batch was read. Best effort: the counter is for
 * people, and on a full disk (SQLITE_FULL, the very case where the uplink
 * must drain the journal) or any other write failure the stored batch is
 * resent all the same rather than held back by its own bookkeeping. */
static void journal_count_attempt(journal *j, struct journal_op *op, int64_t now_ms)
{
  int rc;

  sqlite3_bind_int64(j->attempt_batch, 1, op->batch_seq);
  sqlite3_bind_int64(j->attempt_batch, 2, now_ms);
  rc = journal__step_done(j, j->attempt_batch);
  if (rc != SQLITE_OK) {
    /* An autocommit statement that failed rolled itself back; make sure
     * no transaction is left open behind it all the same. */
    if (!sqlite3_get_autocommit(j->db))
      journal__step_done(j, j->rollback);
    log_warn("journal", "attempt_not_counted",
             "batch_seq=%" PRId64 " error=%s reason=\"the batch is resent without counting "
             "the attempt (%s)\"",
             op->batch_seq, journal_strerror(journal__map_sqlite(rc)), sqlite3_errstr(rc));
  }
}

/* The most body bytes a new batch may have: op's cap, and what is left
 * below the sealing limit (journal.max_size), or a quarter of the free
 * disk and freed pages (no max_size), halved for the row and its overflow
 * pages: a full journal seals a smaller batch rather than none, and leaves
 * room to record its acknowledgement. */
static size_t journal_seal_room(journal *j, size_t max_bytes)
{
  sqlite3_stmt *stmt = NULL;
  int64_t pages = -1, free_pages = -1, room;

  if (sqlite3_prepare_v2(j->db, "SELECT * FROM pragma_page_count(), pragma_freelist_count()",
                         -1, &stmt, NULL) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    pages = sqlite3_column_int64(stmt, 0);
    free_pages = sqlite3_column_int64(stmt, 1);
  }
  sqlite3_finalize(stmt);
  if (pages < 0 || free_pages < 0)
    return max_bytes;
  if (j->seal_max_pages > 0) {
    room = (j->seal_max_pages - pages + free_pages) * j->page_size / 2;
  } else {
    uint64_t disk_free = 0;
    if (disk_free_bytes(j->path, &disk_free) != 0 || disk_free > (uint64_t)INT64_MAX / 2)
      return max_bytes;
    room = ((int64_t)disk_free / 2 + free_pages * j->page_size) / 2;
  }
  if (room < 1)
    room = 1; /* the packer still takes one sale: the uplink's halving ends there */
  return (uint64_t)room < max_bytes ? (size_t)room : max_bytes;
}

/* See journal.h. Rows up to the seq before the first sale not taken are
 * covered: adjustments between two sales go with the earlier one. */
void journal_seal_covered(const struct journal_seal_input *in, size_t used, int64_t *last_seq,
                          size_t *row_count)
{
  int64_t last = used < in->count ? in->sales[used].seq - 1 : in->last_seq_all;
  size_t n = 0;

  while (n < in->row_count && in->rows[n].seq <= last)
    n++;
  /* The last row covered, not the boundary: ranges stay exact. */
  *last_seq = n ? in->rows[n - 1].seq : last;
  *row_count = n;
}

/* The oldest unsealed sales (up to op->max_sales) into *sales (caller
 * frees with journal_free_seal_sales, count entries). SQLITE_OK, or an
 * error (with op->error set for a row that does not read back). */
static int journal_seal_read_sales(journal *j, struct journal_op *op, int64_t sealed_last_seq,
                                   struct journal_seal_sale **out, size_t *out_count)
{
  struct journal_seal_sale *sales = calloc(op->max_sales, sizeof(*sales));
  size_t count = 0;
  int rc;

  *out = NULL;
  *out_count = 0;
  if (!sales)
    return SQLITE_NOMEM;
  sqlite3_bind_int64(j->unsealed, 1, (sqlite3_int64)op->max_sales);
  sqlite3_bind_int64(j->unsealed, 2, sealed_last_seq);
  while ((rc = sqlite3_step(j->unsealed)) == SQLITE_ROW && count < op->max_sales) {
    if (journal__read_sale(j->unsealed, &sales[count])) {
      int64_t seq = sales[count].seq;
      sale_clear(&sales[count].sale);
      sqlite3_reset(j->unsealed);
      /* A row that does not read back would block every later sale
       * forever; say which, loudly: a person must look at the file. */
      snprintf(op->message, sizeof(op->message),
               "journal %s: sale seq %" PRId64 " does not read back (edited or damaged "
               "row); nothing after it can be sent until it is repaired",
               j->path, seq);
      op->error = JOURNAL_ECORRUPT;
      journal__free_seal_sales(sales, count);
      return SQLITE_CORRUPT;
    }
    count++;
  }
  sqlite3_reset(j->unsealed);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    journal__free_seal_sales(sales, count);
    return sqlite3_extended_errcode(j->db);
  }
  *out = sales;
  *out_count = count;
  return SQLITE_OK;
}

/* Inside the seal's transaction: on-hand's stored base moves to the new
 * cursor (it is on-hand as of the cursor) by the deltas of the `covered`
 * rows the batch takes. */
static int journal_seal_base(journal *j, const struct journal_seal_row *rows, size_t covered)
{
  struct stock_deltas batch_deltas = {0};
  int rc = SQLITE_OK;

  for (size_t i = 0; rc == SQLITE_OK && i < covered; i++) {
    for (size_t k = 0; rc == SQLITE_OK && k < rows[i].deltas.count; k++) {
      const struct stock_delta *e = &rows[i].deltas.items[k];
      if (stock_deltas_add(&batch_deltas, e->material_id, e->unit, e->reason,
                           e->quantity_milli))
        rc = SQLITE_NOMEM;
    }
  }
  if (rc == SQLITE_OK)
    rc = journal__base_add(j, &batch_deltas, 1);
  /* Out of pending once the seal committed (journal_next_batch): the
   * figures in memory are what the kept ones are written from, so they
   * must never run ahead of the file. */
  stock_deltas_clear(&j->stock_moving);
  j->stock_moving = batch_deltas;
  return rc;
}

/* Inside the seal's transaction: the batch row and the cursors. */
static int journal_seal_store(journal *j, struct journal_op *op, const uint8_t *body,
                              size_t body_len, int64_t now_ms)
{
  int rc;
  /* The batch row and the sealing cursor in one transaction: a crash
   * leaves either both or neither. The sales themselves are not written
   * again: their batch is the one whose seq range holds them. */
  sqlite3_bind_int64(j->insert_batch, 1, op->batch.batch_seq);
  sqlite3_bind_int64(j->insert_batch, 2, op->batch.first_seq);
  sqlite3_bind_int64(j->insert_batch, 3, op->batch.last_seq);
  sqlite3_bind_int64(j->insert_batch, 4, op->batch.sale_count);
  sqlite3_bind_blob(j->insert_batch, 5, body, (int)body_len, SQLITE_STATIC);
  sqlite3_bind_int64(j->insert_batch, 6, now_ms);
  rc = journal__step_done(j, j->insert_batch);
  sqlite3_clear_bindings(j->insert_batch);
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "sealed_last_seq", op->batch.last_seq);
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "last_batch_seq", op->batch.batch_seq);
  /* The kept count of sales follows the cursor: the start-up adds only the
   * rows above it, never counts the journal. */
  if (rc == SQLITE_OK) {
    int64_t count, upto;
    rc = journal_counted_move(j, op->batch.last_seq, &count, &upto);
    if (rc == SQLITE_OK)
      rc = journal_counted_write(j, count, upto);
  }
  return rc;
}

/* Seals a new batch op->batch_seq from the oldest unsealed rows (sales
 * and adjustments), inside the open transaction. sealed = 0 when there is
 * nothing to seal. */
static int journal_seal(journal *j, struct journal_op *op, int64_t now_ms, int *sealed)
{
  struct journal_seal_sale *sales = NULL;
  struct journal_seal_row *rows = NULL;
  struct journal_row_origins origins = {0};
  size_t count = 0, used = 0, row_count = 0, covered = 0;
  uint8_t *body = NULL;
  size_t body_len = 0;
  int64_t sealed_last_seq = 0, carried_last_seq = 0, upto, clock_limit;
  int rc;

  *sealed = 0;
  rc = journal_get_meta_int(j->db, "sealed_last_seq", &sealed_last_seq);
  if (rc != SQLITE_OK)
    return rc;
  /* Rows of this boot whose times wait for the clock to be set are held
   * back (a while: see JOURNAL_CLOCK_HOLD_MS), and so is all after them:
   * batches cover contiguous ranges. */
  clock_limit = journal__clock_seal_limit(j);
  sqlite3_bind_int64(j->has_unsealed, 1,
                     op->seal_upto_seq < clock_limit ? op->seal_upto_seq : clock_limit);
  sqlite3_bind_int64(j->has_unsealed, 2, sealed_last_seq);
  rc = sqlite3_step(j->has_unsealed);
  sqlite3_reset(j->has_unsealed);
  if (rc == SQLITE_DONE)
    return SQLITE_OK;
  if (rc != SQLITE_ROW)
    return sqlite3_extended_errcode(j->db);

  rc = journal_seal_read_sales(j, op, sealed_last_seq, &sales, &count);
  if (rc == SQLITE_OK)
    rc = journal_get_meta_int(j->db, "carried_last_seq", &carried_last_seq);
  /* Every row up to the last sale read (all of them when the sales ran
   * out before max_sales): adjustments between and after the sales. */
  upto = count == op->max_sales ? sales[count - 1].seq : INT64_MAX;
  if (rc == SQLITE_OK && carried_last_seq > sealed_last_seq) {
    /* Rows carried over from an earlier journal go in batches of their
     * own: the collector decides per batch whether that journal had their
     * deltas produced, and a later row must not share that fate. */
    while (count && sales[count - 1].seq > carried_last_seq) {
      count--;
      sale_clear(&sales[count].sale);
      free(sales[count].carried);
      sales[count].carried = NULL;
    }
    if (upto > carried_last_seq)
      upto = carried_last_seq;
  }
  if (rc == SQLITE_OK && clock_limit < INT64_MAX) {
    while (count && sales[count - 1].seq > clock_limit) {
      count--;
      sale_clear(&sales[count].sale);
      free(sales[count].carried);
      sales[count].carried = NULL;
    }
    if (upto > clock_limit)
      upto = clock_limit;
  }
  for (size_t i = 0; rc == SQLITE_OK && i < count; i++)
    sales[i].received_untrusted = journal__clock_untrusted(j, sales[i].seq);
  if (rc == SQLITE_OK)
    rc = journal__read_rows(j, sealed_last_seq, upto, &rows, &row_count);
  if (rc == SQLITE_OK && row_count)
    rc = journal_read_carried(j, rows[0].seq, rows[row_count - 1].seq, sales, count, &origins);
  if (rc == SQLITE_OK && row_count) {
    struct journal_seal_input in = {.journal_id = j->stats.journal_id,
                                    .batch_seq = op->batch_seq,
                                    .created_ms = now_ms,
                                    .sales = sales,
                                    .count = count,
                                    .rows = rows,
                                    .row_count = row_count,
                                    .last_seq_all = rows[row_count - 1].seq,
                                    .row_origin_seqs = origins.seqs,
                                    .row_origins = origins.from,
                                    .row_origin_count = origins.count,
                                    .max_bytes = journal_seal_room(j, op->max_bytes),
                                    .max_decoded_bytes = op->max_decoded_bytes};
    int pack_rc = op->pack(op->pack_arg, &in, &body, &body_len, &used);
    if (pack_rc || (count && used == 0) || used > count) {
      op->error = pack_rc ? pack_rc : JOURNAL_EINVAL;
      snprintf(op->message, sizeof(op->message), "sealing batch %" PRId64 " of %s: %s",
               op->batch_seq, j->path,
               pack_rc ? journal_strerror(pack_rc) : "the packer used no sales");
      rc = SQLITE_ERROR;
    } else {
      journal_seal_covered(&in, used, &op->batch.last_seq, &covered);
      op->batch.batch_seq = op->batch_seq;
      op->batch.first_seq = rows[0].seq;
      op->batch.sale_count = (uint32_t)used;
      op->batch.created_ms = now_ms;
      op->batch.attempts = 1;
      op->batch.acked_ms = 0;
      rc = journal_seal_base(j, rows, covered);
      if (rc == SQLITE_OK)
        rc = journal_seal_store(j, op, body, body_len, now_ms);
      if (rc == SQLITE_OK) {
        op->batch.body = body;
        op->batch.body_len = body_len;
        body = NULL;
        *sealed = 1;
      }
    }
  }
  if (!*sealed)
    memset(&op->batch, 0, sizeof(op->batch));
  free(body);
  journal__free_seal_sales(sales, count);
  journal__free_rows(rows, row_count);
  journal_row_origins_free(&origins);
  return rc;
}

/* The oldest batch stored, or 0 (also when it cannot be read: the caller
 * then knows less, never something wrong). Rarely run: prepared here. */
static void journal_oldest_batch(journal *j, int64_t *batch_seq)
{
  sqlite3_stmt *stmt = NULL;

  *batch_seq = 0;
  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_OLDEST_BATCH, -1, &stmt, NULL) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW)
    *batch_seq = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
}

static void journal_next_batch(journal *j, struct journal_op *op, int64_t now_ms)
{
  int64_t last_batch_seq;
  int found = 0, sealed = 0;
  int rc;

  pthread_mutex_lock(&j->lock);
  last_batch_seq = j->stats.last_batch_seq;
  pthread_mutex_unlock(&j->lock);

  if (op->batch_seq <= 0 || op->batch_seq > last_batch_seq + 1) {
    op->error = JOURNAL_ENOTFOUND;
    snprintf(op->message, sizeof(op->message),
             "batch %" PRId64 " asked for, but journal %s has sealed batches up to %" PRId64
             " only",
             op->batch_seq, j->path, last_batch_seq);
    return;
  }
  if (op->seal_upto_seq > 0 && op->batch_seq == last_batch_seq + 1 &&
      (j->full || !journal__has_room(j))) {
    /* A full journal: what was acknowledged makes room for this seal. */
    journal__prune_acked(j, "a batch is to be sealed");
    journal__set_page_limit(j, j->seal_max_pages);
  }
  rc = journal_begin(j);
  if (rc == SQLITE_OK)
    rc = journal_load_batch(j, op, &found);
  if (rc == SQLITE_OK && !found) {
    if (op->batch_seq <= last_batch_seq) {
      journal_oldest_batch(j, &op->oldest_batch_seq);
      rc = journal_finish(j, SQLITE_OK);
      op->error = JOURNAL_ENOTFOUND;
      snprintf(op->message, sizeof(op->message),
               "batch %" PRId64 " is no longer in journal %s: it was acknowledged and deleted "
               "after retention",
               op->batch_seq, j->path);
      return;
    }
    if (op->seal_upto_seq > 0)
      rc = journal_seal(j, op, now_ms, &sealed);
  }
  rc = journal_finish(j, rc);
  if (rc != SQLITE_OK)
    stock_deltas_clear(&j->stock_moving);
  if (rc != SQLITE_OK) {
    journal_op_clear(op);
    memset(&op->batch, 0, sizeof(op->batch));
    if (!op->error)
      journal_op_fail(j, op, rc, sealed ? "sealing a batch" : "reading a batch");
    return;
  }
  op->sealed = sealed;
  if (found)
    journal_count_attempt(j, op, now_ms);
  if (sealed) {
    /* The status page's "consumed in the last batch" and pending. */
    stock_sealed(&j->stock, &j->stock_moving);
    journal__unmapped_pending_add(j, &j->stock_moving, -1);
    stock_deltas_clear(&j->stock_moving);
    j->stock_kept_moved += op->batch.last_seq - op->batch.first_seq + 1;
    pthread_mutex_lock(&j->lock);
    j->stats.last_batch_seq = op->batch.batch_seq;
    pthread_mutex_unlock(&j->lock);
    /* Before the batch can leave: if the WAL later loses this seal, the
     * open finds the database short of a batch the collector may hold. */
    j->hwm.sealed_batch_seq = op->batch.batch_seq;
    journal__hwm_write(j, 1);
    log_info("journal", "batch_sealed",
             "batch_seq=%" PRId64 " first_seq=%" PRId64 " last_seq=%" PRId64
             " sales=%u bytes=%zu",
             op->batch.batch_seq, op->batch.first_seq, op->batch.last_seq, op->batch.sale_count,
             op->batch.body_len);
  }
}

/* What an acknowledgement changed, for the counters once it committed. */
struct journal_ack_result {
  int64_t newly_sent;     /* sales taken off "unsent" */
  int64_t acked_last_seq; /* last seq of the acknowledged prefix */
  int64_t oldest;         /* received_ms of the oldest sale still unsent */
  uint64_t pruned_sales, pruned_batches;
};

static int journal_delete_acked(journal *j, int64_t before_ms, int64_t upto, uint64_t *sales,
                                uint64_t *batches);
static void journal_count_deleted(journal *j, uint64_t sales);

/* ---- ACK ------------------------------------------------------------------------ */

/* The writes of an acknowledgement, inside the open transaction: batches
 * up to `target` acknowledged, the cursor moved, and on a full journal the
 * oldest acknowledged batches and their sales deleted (*pruned_*), so that
 * each acknowledgement makes room for the next seal and for new sales. */
static int journal_ack_write(journal *j, struct journal_op *op, int64_t now_ms, int64_t acked,
                             int64_t target, int prune, struct journal_ack_result *out)
{
  int rc;

  sqlite3_bind_int64(j->ack_batches, 1, target);
  sqlite3_bind_int64(j->ack_batches, 2, now_ms);
  rc = journal__step_done(j, j->ack_batches);
  op->batches_changed = rc == SQLITE_OK ? (uint64_t)sqlite3_changes(j->db) : 0;
  if (rc != SQLITE_OK || target <= acked)
    return rc;
  sqlite3_bind_int64(j->sales_in_batches, 1, acked);
  sqlite3_bind_int64(j->sales_in_batches, 2, target);
  rc = sqlite3_step(j->sales_in_batches);
  out->newly_sent = rc == SQLITE_ROW ? sqlite3_column_int64(j->sales_in_batches, 0) : 0;
  rc = rc == SQLITE_ROW ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  sqlite3_reset(j->sales_in_batches);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(j->get_batch, 1, target);
    rc = sqlite3_step(j->get_batch);
    if (rc == SQLITE_ROW) {
      out->acked_last_seq = sqlite3_column_int64(j->get_batch, 1);
      rc = SQLITE_OK;
    } else {
      rc = rc == SQLITE_DONE ? SQLITE_CORRUPT : sqlite3_extended_errcode(j->db);
    }
    sqlite3_reset(j->get_batch);
  }
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "acked_batch_seq", target);
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "acked_last_seq", out->acked_last_seq);
  if (rc == SQLITE_OK)
    rc = journal_oldest_after(j, out->acked_last_seq, &out->oldest);
  if (rc == SQLITE_OK && prune && (j->full || !journal__has_room(j)))
    rc = journal_delete_acked(j, INT64_MAX, target, &out->pruned_sales, &out->pruned_batches);
  return rc;
}

static void journal_ack(journal *j, struct journal_op *op, int64_t now_ms)
{
  int64_t acked, last_batch_seq, target;
  struct journal_ack_result out;
  int rc;

  memset(&out, 0, sizeof(out));
  pthread_mutex_lock(&j->lock);
  acked = j->stats.acked_batch_seq;
  last_batch_seq = j->stats.last_batch_seq;
  out.acked_last_seq = j->stats.acked_last_seq;
  pthread_mutex_unlock(&j->lock);

  /* The collector cannot have acknowledged a batch this journal never
   * sealed; clamp rather than invent one. */
  target = op->batch_seq < last_batch_seq ? op->batch_seq : last_batch_seq;
  rc = journal_begin(j);
  if (rc == SQLITE_OK)
    rc = journal_ack_write(j, op, now_ms, acked, target, 1, &out);
  rc = journal_finish(j, rc);
  if ((rc & 0xff) == SQLITE_FULL) {
    /* The acknowledgement alone, with the WAL checkpointed: a few pages,
     * which the WAL the failed attempt already grew has room for. The
     * pruning follows in transactions of its own, as far as they fit. */
    struct journal_ack_result again;
    memset(&again, 0, sizeof(again));
    again.acked_last_seq = out.acked_last_seq;
    out = again;
    journal__make_room(j);
    rc = journal_begin(j);
    if (rc == SQLITE_OK)
      rc = journal_ack_write(j, op, now_ms, acked, target, 0, &out);
    rc = journal_finish(j, rc);
  }
  if (rc != SQLITE_OK) {
    journal_op_fail(j, op, rc, "acknowledging a batch");
    return;
  }
  if (out.pruned_batches || out.pruned_sales) {
    journal_count_deleted(j, out.pruned_sales);
    log_warn("journal", "acked_pruned",
             "path=%s batches=%llu sales=%llu reason=\"the journal is full: acknowledged sales "
             "(already in Kafka) are deleted before retention_days to make room; a resync "
             "cannot replay them from this device\"",
             j->path, (unsigned long long)out.pruned_batches,
             (unsigned long long)out.pruned_sales);
  }
  if (target > acked) {
    /* The kept count of unsent sales follows, JOURNAL_STOCK_KEEP_ROWS on. */
    j->stock_kept_moved += out.newly_sent;
    pthread_mutex_lock(&j->lock);
    j->stats.acked_batch_seq = target;
    j->stats.acked_last_seq = out.acked_last_seq;
    j->stats.sales_unsent = j->stats.sales_unsent > (uint64_t)out.newly_sent
                                ? j->stats.sales_unsent - (uint64_t)out.newly_sent
                                : 0;
    j->stats.oldest_unsent_ms = out.oldest;
    j->stats.last_ack_ms = now_ms;
    pthread_mutex_unlock(&j->lock);
    /* Outside the WAL too, after it is committed there: if the WAL later
     * loses this acknowledgement, the next open sees that it did. A failed
     * write only weakens that check (logged); the ack stands. */
    j->hwm.acked_batch_seq = target;
    j->hwm.acked_last_seq = out.acked_last_seq;
    if (j->hwm.sealed_batch_seq < target)
      j->hwm.sealed_batch_seq = target;
    journal__hwm_write(j, 1);
  }
  /* This acknowledgement may have made the room a full journal waits for:
   * take sales again now, not at the latch's next look. */
  journal__full_recheck(j);
}

/* ---- UNSEAL ---------------------------------------------------------------------- */

/* Inside the unseal's transaction: the deltas of rows (after, upto] taken
 * off the stored base, and kept in j->stock_moving, to go back into
 * pending once the unseal committed (journal_unseal). */
static int journal_unseal_base(journal *j, int64_t after, int64_t upto)
{
  struct journal_seal_row *rows = NULL;
  size_t count = 0;
  int rc = journal__read_rows(j, after, upto, &rows, &count);
  stock_deltas_clear(&j->stock_moving);
  for (size_t i = 0; rc == SQLITE_OK && i < count; i++) {
    rc = journal__base_add(j, &rows[i].deltas, -1);
    for (size_t k = 0; rc == SQLITE_OK && k < rows[i].deltas.count; k++) {
      const struct stock_delta *e = &rows[i].deltas.items[k];
      if ((e->reason == STOCK_REASON_SALES || e->reason == STOCK_REASON_UNMAPPED) &&
          stock_deltas_add(&j->stock_moving, e->material_id, e->unit, e->reason,
                           e->quantity_milli))
        rc = SQLITE_NOMEM;
    }
  }
  journal__free_rows(rows, count);
  return rc;
}

static void journal_unseal(journal *j, struct journal_op *op)
{
  int64_t first_seq = 0, acked_ms = 0, batches = 0, acked_above = 0, sealed_last_seq = 0;
  int found = 0;
  int rc = journal_begin(j);

  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(j->get_batch, 1, op->batch_seq);
    rc = sqlite3_step(j->get_batch);
    if (rc == SQLITE_ROW) {
      found = 1;
      first_seq = sqlite3_column_int64(j->get_batch, 0);
      acked_ms = sqlite3_column_type(j->get_batch, 6) == SQLITE_NULL
                     ? 0
                     : sqlite3_column_int64(j->get_batch, 6);
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      rc = SQLITE_OK;
    } else {
      rc = sqlite3_extended_errcode(j->db);
    }
    sqlite3_reset(j->get_batch);
  }
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(j->acked_above, 1, op->batch_seq);
    rc = sqlite3_step(j->acked_above);
    acked_above = rc == SQLITE_ROW ? sqlite3_column_int64(j->acked_above, 0) : 0;
    rc = rc == SQLITE_ROW ? SQLITE_OK : sqlite3_extended_errcode(j->db);
    sqlite3_reset(j->acked_above);
  }
  if (rc == SQLITE_OK && (!found || acked_ms || acked_above)) {
    journal_finish(j, SQLITE_ABORT);
    op->error = found ? JOURNAL_EINVAL : JOURNAL_ENOTFOUND;
    snprintf(op->message, sizeof(op->message),
             found ? "batch %" PRId64 " of %s was acknowledged by the collector and cannot be "
                     "sealed again"
                   : "batch %" PRId64 " is not in journal %s",
             op->batch_seq, j->path);
    return;
  }
  if (rc == SQLITE_OK)
    rc = journal_get_meta_int(j->db, "sealed_last_seq", &sealed_last_seq);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(j->count_from_seq, 1, first_seq);
    sqlite3_bind_int64(j->count_from_seq, 2, sealed_last_seq);
    rc = sqlite3_step(j->count_from_seq);
    op->sales_changed = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(j->count_from_seq, 0)
                                         : 0;
    rc = rc == SQLITE_ROW ? SQLITE_OK : sqlite3_extended_errcode(j->db);
    sqlite3_reset(j->count_from_seq);
  }
  /* The stored base goes back with the cursor: on-hand as of first_seq - 1. */
  if (rc == SQLITE_OK)
    rc = journal_unseal_base(j, first_seq - 1, sealed_last_seq);
  /* Moving the cursor back unseals every sale from batch N's first on. */
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "sealed_last_seq", first_seq - 1);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(j->delete_unacked_from, 1, op->batch_seq);
    rc = journal__step_done(j, j->delete_unacked_from);
    batches = rc == SQLITE_OK ? sqlite3_changes(j->db) : 0;
  }
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "last_batch_seq", op->batch_seq - 1);
  if (rc == SQLITE_OK && j->hwm.sealed_batch_seq > op->batch_seq - 1) {
    /* Lowered before the commit: a crash between the two leaves the mark
     * saying less than the database, never more. These batches were never
     * accepted (413), so their numbers may be sealed again. */
    j->hwm.sealed_batch_seq = op->batch_seq - 1;
    if (journal__hwm_write(j, 1))
      rc = SQLITE_IOERR;
  }
  rc = journal_finish(j, rc);
  if (rc != SQLITE_OK) {
    stock_deltas_clear(&j->stock_moving);
    op->sales_changed = 0;
    journal_op_fail(j, op, rc, "unsealing batches");
    return;
  }
  /* Those rows' consumption is pending again (before, only a restart
   * counted it back). */
  stock_pending_add(&j->stock, &j->stock_moving, 1);
  journal__unmapped_pending_add(j, &j->stock_moving, 1);
  stock_deltas_clear(&j->stock_moving);
  if (sealed_last_seq >= first_seq)
    j->stock_kept_moved += sealed_last_seq - first_seq + 1;
  op->batches_changed = (uint64_t)batches;
  pthread_mutex_lock(&j->lock);
  j->stats.last_batch_seq = op->batch_seq - 1;
  pthread_mutex_unlock(&j->lock);
  log_warn("journal", "batches_unsealed", "from_batch_seq=%" PRId64 " batches=%" PRId64
           " sales=%llu", op->batch_seq, batches, (unsigned long long)op->sales_changed);
}

/* ---- RETENTION --------------------------------------------------------------------- */

/*
 * Inside the open transaction: deletes the oldest acknowledged batches
 * acknowledged before `before_ms`, never above batch `upto` (the
 * acknowledged prefix), at most JOURNAL_RETENTION_CHUNK of them and
 * JOURNAL_PRUNE_SALES of their sales: every deleted row rewrites its pages
 * into the WAL, so on a full disk one big batch deleted at once would not
 * fit (seen: 819 sales, 225 KiB of WAL). A batch's row goes with its last
 * sale. SQLITE_OK with the counts added to *sales and *batches; *more = 1
 * when the sales' bound stopped it.
 */
static int journal_delete_acked_some(journal *j, int64_t before_ms, int64_t upto,
                                     uint64_t *sales, uint64_t *batches, int *more)
{
  int64_t seqs[JOURNAL_RETENTION_CHUNK][3];
  int64_t budget = JOURNAL_PRUNE_SALES, counted = -1, counted_upto = 0, sealed = 0;
  size_t count = 0, deleted = 0;
  int rc;

  /* The kept count of sales moved to the sealing cursor first: every row
   * deleted below is at or under it (only acknowledged batches go), so the
   * figure is that less the rows deleted. */
  rc = journal_get_meta_int(j->db, "sealed_last_seq", &sealed);
  if (rc == SQLITE_OK)
    rc = journal_counted_move(j, sealed, &counted, &counted_upto);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_int64(j->expired_batches, 1, before_ms);
  sqlite3_bind_int64(j->expired_batches, 2, upto);
  sqlite3_bind_int64(j->expired_batches, 3, JOURNAL_RETENTION_CHUNK);
  /* A running resync's rows stay until its replay batches are acknowledged. */
  sqlite3_bind_int64(j->expired_batches, 4, j->replay_hold_seq > 0 ? j->replay_hold_seq
                                                                   : INT64_MAX);
  while ((rc = sqlite3_step(j->expired_batches)) == SQLITE_ROW &&
         count < JOURNAL_RETENTION_CHUNK) {
    for (int c = 0; c < 3; c++)
      seqs[count][c] = sqlite3_column_int64(j->expired_batches, c);
    count++;
  }
  rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  sqlite3_reset(j->expired_batches);
  *more = 0;
  for (size_t i = 0; rc == SQLITE_OK && i < count; i++) {
    int64_t changed;
    sqlite3_bind_int64(j->delete_batch_sales, 1, seqs[i][1]);
    sqlite3_bind_int64(j->delete_batch_sales, 2, seqs[i][2]);
    sqlite3_bind_int64(j->delete_batch_sales, 3, budget);
    rc = journal__step_done(j, j->delete_batch_sales);
    if (rc != SQLITE_OK)
      break;
    changed = sqlite3_changes(j->db);
    *sales += (uint64_t)changed;
    counted -= counted >= 0 ? changed : 0;
    budget -= changed;
    if (budget <= 0) {
      *more = 1; /* the batch's row waits for the next call */
      break;
    }
    /* The batch's adjustments go with its last sale (a few rows at most). */
    sqlite3_bind_int64(j->delete_batch_adjustments, 1, seqs[i][1]);
    sqlite3_bind_int64(j->delete_batch_adjustments, 2, seqs[i][2]);
    rc = journal__step_done(j, j->delete_batch_adjustments);
    if (rc != SQLITE_OK)
      break;
    sqlite3_bind_int64(j->delete_batch, 1, seqs[i][0]);
    rc = journal__step_done(j, j->delete_batch);
    deleted++;
  }
  if (rc == SQLITE_OK)
    *batches += deleted;
  if (rc == SQLITE_OK && budget < JOURNAL_PRUNE_SALES)
    rc = journal_counted_write(j, counted, counted_upto);
  if (rc == SQLITE_OK && *sales)
    rc = journal__clock_forget_deleted(j);
  if (rc == SQLITE_OK && *sales && !j->sales_deleted_why[0]) {
    /* Said in the journal for good: a resync from before the oldest sale
     * left must report that history is gone, after restarts too. The first
     * reason stays (j->sales_deleted_why mirrors what is committed): later
     * chunks, of retention or of a full disk, do not overwrite it. */
    sqlite3_bind_text(j->set_meta, 1, "sales_deleted", -1, SQLITE_STATIC);
    sqlite3_bind_text(j->set_meta, 2, before_ms == INT64_MAX ? "full" : "retention", -1,
                      SQLITE_STATIC);
    rc = journal__step_done(j, j->set_meta);
  }
  return rc;
}

static int journal_delete_acked(journal *j, int64_t before_ms, int64_t upto, uint64_t *sales,
                                uint64_t *batches)
{
  int more;
  return journal_delete_acked_some(j, before_ms, upto, sales, batches, &more);
}

/* After a committed deletion of `sales` rows: the counters. */
static void journal_count_deleted(journal *j, uint64_t sales)
{
  pthread_mutex_lock(&j->lock);
  j->stats.sales_journaled = j->stats.sales_journaled > sales ? j->stats.sales_journaled - sales
                                                              : 0;
  pthread_mutex_unlock(&j->lock);
  if (sales)
    journal__sales_deleted(j);
}

int journal__retention_chunk(journal *j, int64_t now_ms, int64_t retention_ms,
                             uint64_t *sales_deleted, uint64_t *batches_deleted,
                             char *message, size_t message_size)
{
  int64_t acked;
  uint64_t sales = 0, batches = 0;
  int rc, more = 0;

  if (retention_ms <= 0)
    return 0;
  j->retention_used_ms = retention_ms;
  pthread_mutex_lock(&j->lock);
  acked = j->stats.acked_batch_seq;
  pthread_mutex_unlock(&j->lock);

  rc = journal_begin(j);
  if (rc == SQLITE_OK)
    rc = journal_delete_acked_some(j, now_ms - retention_ms, acked, &sales, &batches, &more);
  rc = journal_finish(j, rc);
  if (rc != SQLITE_OK) {
    snprintf(message, message_size, "retention on %s: %s (%s)", j->path,
             journal_strerror(journal__map_sqlite(rc)), sqlite3_errstr(rc));
    return journal__map_sqlite(rc);
  }
  *sales_deleted += sales;
  *batches_deleted += batches;
  if (sales)
    journal_count_deleted(j, sales);
  return batches == JOURNAL_RETENTION_CHUNK || more ? 1 : 0;
}

int journal__prune_acked(journal *j, const char *why)
{
  int64_t acked;
  uint64_t sales = 0, batches = 0;
  int rc;

  pthread_mutex_lock(&j->lock);
  acked = j->stats.acked_batch_seq;
  pthread_mutex_unlock(&j->lock);
  /* Deleting needs no room; with journal.max_size the whole limit is
   * usable for it. */
  journal__set_page_limit(j, j->max_pages);
  rc = journal_begin(j);
  if (rc == SQLITE_OK)
    rc = journal_delete_acked(j, INT64_MAX, acked, &sales, &batches);
  rc = journal_finish(j, rc);
  if (rc != SQLITE_OK) {
    log_error("journal", "prune_failed", "path=%s error=\"%s\" sqlite=\"%s\"", j->path,
              journal_strerror(journal__map_sqlite(rc)), sqlite3_errstr(rc));
    return journal__map_sqlite(rc);
  }
  if (batches || sales) {
    journal_count_deleted(j, sales);
    log_warn("journal", "acked_pruned",
             "path=%s batches=%llu sales=%llu reason=\"the journal is full and %s: "
             "acknowledged sales (already in Kafka) are deleted before retention_days to make "
             "room; a resync cannot replay them from this device\"",
             j->path, (unsigned long long)batches, (unsigned long long)sales, why);
  }
  return batches || sales ? (int)(batches + sales) : 0;
}

static void journal_retention(journal *j, struct journal_op *op, int64_t now_ms)
{
  int64_t retention_ms = op->retention_ms > 0 ? op->retention_ms : j->retention_ms;
  int rc;
  do {
    rc = journal__retention_chunk(j, now_ms, retention_ms, &op->sales_changed,
                                  &op->batches_changed, op->message, sizeof(op->message));
  } while (rc == 1);
  if (rc < 0)
    op->error = rc;
}

static void journal_run_op_once(journal *j, struct journal_op *op, int64_t now_ms)
{
  switch (op->kind) {
  case JOURNAL_OP_NEXT_BATCH:
    journal_next_batch(j, op, now_ms);
    break;
  case JOURNAL_OP_ACK:
    journal_ack(j, op, now_ms);
    break;
  case JOURNAL_OP_UNSEAL:
    journal_unseal(j, op);
    break;
  case JOURNAL_OP_RETENTION:
    journal_retention(j, op, now_ms);
    break;
  case JOURNAL_OP_NEW_JOURNAL:
    journal__new_journal(j, op);
    break;
  case JOURNAL_OP_RECIPES:
    journal__recipes_op(j, op);
    break;
  case JOURNAL_OP_COMMAND:
  case JOURNAL_OP_COMMAND_STATE:
  case JOURNAL_OP_REPLAY_BATCH:
  case JOURNAL_OP_REPLAY_ACK:
    journal__command_op(j, op, now_ms);
    break;
  }
}

void journal__run_op(journal *j, struct journal_op *op)
{
  /* Retention counts on the best time known, as the hourly pass does. */
  int64_t now_ms = op->now_ms                        ? op->now_ms
                   : op->kind == JOURNAL_OP_RETENTION ? journal__clock_now(j)
                                                      : clock_wall_ms();
  double started = journal__seconds();

  /* The uplink may use the reserve that sales may not: sealing half of it,
   * acknowledging (which frees room) and deleting all of it. */
  journal__set_page_limit(j, op->kind == JOURNAL_OP_NEXT_BATCH ? j->seal_max_pages
                                                               : j->max_pages);
  journal_run_op_once(j, op, now_ms);
  if (op->error == JOURNAL_EFULL && journal__make_room(j)) {
    /* The disk is 100% full: with the reserve given back and the WAL
     * checkpointed, once more. */
    journal_op_clear(op);
    memset(&op->batch, 0, sizeof(op->batch));
    op->error = JOURNAL_OK;
    op->message[0] = '\0';
    op->sealed = 0;
    op->sales_changed = op->batches_changed = 0;
    journal_run_op_once(j, op, now_ms);
  }
  if (op->kind == JOURNAL_OP_NEXT_BATCH && op->sealed && !op->error) {
    metrics_observe(j->metrics.seal_seconds, journal__seconds() - started);
    metrics_observe(j->metrics.seal_sales, (double)op->batch.sale_count);
  }
  if (op->error) {
    char quoted[300];
    log_error("journal", "op_failed", "kind=%d batch_seq=%" PRId64 " error=%s reason=%s",
              (int)op->kind, op->batch_seq, journal_strerror(op->error),
              log_quote(op->message, quoted, sizeof(quoted)));
  }
}

int journal__time_is_canonical(const struct sale *sale)
{
  char text[SALE_TIME_TEXT_MAX + 1];

  return sale->business_time[0] &&
         sale_time_format(sale->business_time_ms, sale->utc_offset_minutes, text,
                          sizeof(text)) > 0 &&
         strcmp(text, sale->business_time) == 0;
}

int journal__sale_time(const char *stored, int64_t ms, int32_t offset_min, char *out,
                       size_t size)
{
  if (stored && stored[0]) {
    if (strlen(stored) >= size)
      return -1;
    memcpy(out, stored, strlen(stored) + 1);
    return 0;
  }
  return sale_time_format(ms, offset_min, out, size) > 0 ? 0 : -1;
}
