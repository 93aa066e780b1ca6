/*
 * journal_stock.c - inventory in the journal (schema v5): adjustments
 * journaled like sales, each row's deltas computed once in the transaction
 * that journals it, on-hand kept on the writer thread and rebuilt at open.
 *
 * On-hand = stock_base (written by the seal transaction, as of the sealing
 * cursor) + the deltas of every row above the cursor. Between seals it
 * lives in memory, so a sale costs no write beyond its own row; every 1024
 * rows and at a clean stop the writer keeps the figures in meta, and an
 * open reads those and the rows since, not every row above the cursor
 * ("the kept figures" below).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal/journal_int.h"
#include "journal/journal_sql.h"
#include "platform/clock.h"
#include "platform/log.h"

/* ---- staging: deltas of the open transaction ------------------------------ */

int journal__stage(journal *j, struct stock_deltas *deltas)
{
  if (j->staged_count == j->staged_capacity) {
    size_t capacity = j->staged_capacity ? j->staged_capacity * 2 : 64;
    struct journal_staged *grown = realloc(j->staged, capacity * sizeof(*grown));
    if (!grown)
      return SQLITE_NOMEM;
    j->staged = grown;
    j->staged_capacity = capacity;
  }
  if (stock_apply(&j->stock, deltas, 1)) {
    stock_apply(&j->stock, deltas, -1);
    return SQLITE_NOMEM;
  }
  journal__unmapped_pending_add(j, deltas, 1);
  j->staged[j->staged_count++].deltas = *deltas;
  memset(deltas, 0, sizeof(*deltas));
  return SQLITE_OK;
}

void journal__unstage(journal *j, size_t from)
{
  while (j->staged_count > from) {
    struct stock_deltas *d = &j->staged[--j->staged_count].deltas;
    stock_apply(&j->stock, d, -1);
    journal__unmapped_pending_add(j, d, -1);
    stock_deltas_clear(d);
  }
}

void journal__unmapped_pending_add(journal *j, const struct stock_deltas *d, int sign)
{
  struct stock_deltas *pending = &j->unmapped_pending;

  for (size_t i = 0; i < d->count; i++) {
    const struct stock_delta *e = &d->items[i];
    size_t k = 0;
    if (e->reason != STOCK_REASON_UNMAPPED)
      continue;
    while (k < pending->count && strcmp(pending->items[k].material_id, e->material_id) != 0)
      k++;
    if (k == pending->count) {
      /* As the status page's table: the first SKUs seen, no more (the
       * total of every SKU is kept apart, in the stock table). */
      if (sign < 0 || pending->count >= STOCK_UNMAPPED_SKUS_MAX)
        continue;
      if (stock_deltas_add(pending, e->material_id, "", STOCK_REASON_UNMAPPED, 0))
        continue; /* out of memory: one SKU fewer listed after a restart */
    }
    pending->items[k].quantity_milli += sign * e->quantity_milli;
    if (pending->items[k].quantity_milli <= 0) {
      /* All of them sealed (or taken back): its place is free again. */
      memmove(&pending->items[k], &pending->items[k + 1],
              (pending->count - k - 1) * sizeof(pending->items[0]));
      pending->count--;
    }
  }
}

void journal__staged_commit(journal *j)
{
  for (size_t i = 0; i < j->staged_count; i++)
    stock_deltas_clear(&j->staged[i].deltas);
  j->staged_count = 0;
}

/* ---- computing a row's deltas ----------------------------------------------- */

int journal__sale_deltas(journal *j, const struct sale *sale, struct stock_deltas *deltas,
                         const uint8_t **blob, size_t *blob_len)
{
  int64_t recipe_time_ms = sale->business_time_ms;

  *blob = NULL;
  *blob_len = 0;
  deltas->count = 0;
  /* No recipe set at all (a store not tracking stock): nothing to record;
   * every line would be "unmapped", which says nothing and costs bytes
   * on flash in every row. */
  if (j->stock_broken || !j->explode ||
      (j->recipes_from_db && recipes_version_count(j->recipes_owned) == 0))
    return SQLITE_OK;
  if (sale->kind != SALE_KIND_SALE && j->refunds_restock && sale->original_sale_id[0]) {
    /* What goes back is what the original consumed: its recipe versions.
     * An original this journal does not hold (sold elsewhere, deleted by
     * retention) is reversed at the refund's own time. */
    sqlite3_bind_text(j->original_time, 1, sale->original_sale_id, -1, SQLITE_STATIC);
    if (sqlite3_step(j->original_time) == SQLITE_ROW)
      recipe_time_ms = sqlite3_column_int64(j->original_time, 0);
    sqlite3_reset(j->original_time);
    sqlite3_clear_bindings(j->original_time);
  }
  if (stock_sale_deltas(sale, recipe_time_ms, j->explode, j->recipes, j->refunds_restock,
                        deltas))
    return SQLITE_NOMEM;
  return journal__encode_deltas(j, deltas, blob, blob_len);
}

int journal__encode_deltas(journal *j, const struct stock_deltas *deltas, const uint8_t **blob,
                           size_t *blob_len)
{
  size_t need;
  int rc = SQLITE_OK;

  *blob = NULL;
  *blob_len = 0;
  for (size_t i = 0; rc == SQLITE_OK && i < deltas->count; i++) {
    const struct stock_delta *e = &deltas->items[i];
    if (e->reason == STOCK_REASON_UNMAPPED ||
        stock_names_find(&j->names, e->material_id, e->unit))
      continue;
    /* A material's first use: its number, in this row's transaction (a
     * rollback takes both back: see journal_apply_write). */
    if (stock_names_add(&j->names, e->material_id, e->unit))
      return SQLITE_NOMEM;
    sqlite3_bind_int64(j->insert_name, 1, (int64_t)j->names.count);
    sqlite3_bind_text(j->insert_name, 2, e->material_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(j->insert_name, 3, e->unit, -1, SQLITE_STATIC);
    rc = journal__step_done(j, j->insert_name);
    sqlite3_clear_bindings(j->insert_name);
    if (rc != SQLITE_OK)
      stock_names_truncate(&j->names, j->names.count - 1);
  }
  if (rc != SQLITE_OK || deltas->count == 0)
    return rc; /* none: the column stays NULL, as it always was */
  need = stock_deltas_encoded_max(deltas->count);
  if (need > j->deltas_cap) {
    /* Grown, never shrunk: a row's deltas are a few dozen bytes. */
    size_t cap = j->deltas_cap ? j->deltas_cap : 256;
    uint8_t *grown;
    while (cap < need)
      cap *= 2;
    grown = realloc(j->deltas_buf, cap);
    if (!grown)
      return SQLITE_NOMEM;
    j->deltas_buf = grown;
    j->deltas_cap = cap;
  }
  if (stock_deltas_encode_to(deltas, &j->names, j->deltas_buf, blob_len))
    return SQLITE_NOMEM;
  *blob = j->deltas_buf;
  return SQLITE_OK;
}

int journal__names_load(journal *j)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_NAMES, -1, &stmt, NULL);

  stock_names_truncate(&j->names, 0);
  while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(stmt, 1);
    const char *unit = (const char *)sqlite3_column_text(stmt, 2);
    /* Numbers are dense from 1: the id is the position. */
    if (sqlite3_column_int64(stmt, 0) != (int64_t)j->names.count + 1 || !name || !unit)
      rc = SQLITE_CORRUPT;
    else if (stock_names_add(&j->names, name, unit))
      rc = SQLITE_NOMEM;
    else
      rc = SQLITE_OK;
  }
  sqlite3_finalize(stmt);
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  j->names_committed = j->names.count;
  return rc;
}

/* An adjustment's deltas: a delivery adds, waste takes away, a count
 * corrects on-hand to what was counted (its variance against what the
 * agent expected at this row, earlier rows of the open transaction
 * included). */
static int journal_adjustment_deltas(journal *j, const struct stock_adjustment *a,
                                     struct stock_deltas *deltas)
{
  char unit[STOCK_UNIT_MAX + 1];
  int64_t quantity = a->quantity_milli;
  enum stock_reason reason = STOCK_REASON_DELIVERY;

  deltas->count = 0;
  if (a->kind == STOCK_ADJUSTMENT_WASTE) {
    reason = STOCK_REASON_WASTE;
    quantity = -quantity;
  } else if (a->kind == STOCK_ADJUSTMENT_COUNT) {
    reason = STOCK_REASON_COUNT;
    /* The variance against on-hand, held at int64's ends (an on-hand that
     * far out is wrong either way; wrapping would be undefined). */
    int64_t on_hand = stock_on_hand(&j->stock, a->material_id, unit);
    if (__builtin_sub_overflow(a->quantity_milli, on_hand, &quantity))
      quantity = on_hand < 0 ? INT64_MAX : INT64_MIN + 1;
  }
  return stock_deltas_add(deltas, a->material_id, a->unit, reason, quantity) ? SQLITE_NOMEM
                                                                             : SQLITE_OK;
}

static void journal_bind_text_or_null(sqlite3_stmt *stmt, int index, const char *text)
{
  if (text[0])
    sqlite3_bind_text(stmt, index, text, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(stmt, index);
}

/* Whether the adjustment_id is taken: SQLITE_DONE when not; SQLITE_OK
 * for a retry (same hash, `result` filled); SQLITE_CONSTRAINT for a
 * conflict; or an error. */
static int journal_adjustment_taken(journal *j, const struct stock_adjustment *a,
                                    const uint8_t hash[32], struct journal_item_result *result,
                                    int64_t *conflict_seq)
{
  int rc;
  sqlite3_bind_text(j->find_adjustment, 1, a->adjustment_id, -1, SQLITE_STATIC);
  rc = sqlite3_step(j->find_adjustment);
  if (rc == SQLITE_DONE) {
    rc = SQLITE_DONE; /* not taken */
  } else if (rc != SQLITE_ROW) {
    rc = sqlite3_extended_errcode(j->db);
  } else {
    int64_t seq = sqlite3_column_int64(j->find_adjustment, 0);
    int same = sqlite3_column_bytes(j->find_adjustment, 1) == 32 &&
               memcmp(sqlite3_column_blob(j->find_adjustment, 1), hash, 32) == 0;
    if (same) {
      result->seq = seq;
      result->outcome = JOURNAL_DUPLICATE;
      rc = SQLITE_OK;
    } else {
      *conflict_seq = seq;
      rc = SQLITE_CONSTRAINT;
    }
  }
  sqlite3_reset(j->find_adjustment);
  sqlite3_clear_bindings(j->find_adjustment);
  return rc;
}

int journal__insert_adjustment(journal *j, const struct stock_adjustment *a, int64_t received_ms,
                               struct journal_item_result *result, int64_t *conflict_seq)
{
  struct stock_deltas deltas = {0};
  sqlite3_stmt *ins = j->insert_adjustment;
  uint8_t hash[32];
  const uint8_t *blob = NULL;
  size_t blob_len = 0;
  int64_t seq = 0;
  int rc;

  if (stock_adjustment_hash(a, hash))
    return SQLITE_NOMEM;
  /* A retry is answered before anything is computed or written. */
  rc = journal_adjustment_taken(j, a, hash, result, conflict_seq);
  if (rc != SQLITE_DONE)
    goto out;
  rc = journal_adjustment_deltas(j, a, &deltas);
  if (rc == SQLITE_OK)
    rc = journal__encode_deltas(j, &deltas, &blob, &blob_len);
  if (rc != SQLITE_OK)
    goto out;
  seq = j->seq_next;
  sqlite3_bind_int64(ins, 1, seq);
  sqlite3_bind_text(ins, 2, a->adjustment_id, -1, SQLITE_STATIC);
  sqlite3_bind_blob(ins, 3, hash, sizeof(hash), SQLITE_STATIC);
  sqlite3_bind_text(ins, 4, stock_adjustment_kind_name(a->kind), -1, SQLITE_STATIC);
  sqlite3_bind_text(ins, 5, a->material_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(ins, 6, a->unit, -1, SQLITE_STATIC);
  sqlite3_bind_int64(ins, 7, a->quantity_milli);
  sqlite3_bind_text(ins, 8, a->business_time, -1, SQLITE_STATIC);
  sqlite3_bind_int64(ins, 9, a->business_time_ms);
  sqlite3_bind_int(ins, 10, a->utc_offset_minutes);
  journal_bind_text_or_null(ins, 11, a->reason);
  journal_bind_text_or_null(ins, 12, a->note);
  sqlite3_bind_int64(ins, 13, received_ms);
  sqlite3_bind_blob(ins, 14, blob, (int)blob_len, SQLITE_STATIC);
  rc = journal__step_done(j, ins);
  sqlite3_clear_bindings(ins);
  if (rc == SQLITE_OK)
    rc = journal__stage(j, &deltas);
  if (rc == SQLITE_OK) {
    result->seq = journal__take_seq(j);
    result->outcome = JOURNAL_STORED;
  }
out:
  stock_deltas_clear(&deltas);
  return rc;
}

/* ---- reading rows back ------------------------------------------------------- */

void journal__free_rows(struct journal_seal_row *rows, size_t count)
{
  if (!rows)
    return;
  for (size_t i = 0; i < count; i++)
    stock_deltas_clear(&rows[i].deltas);
  free(rows);
}

int journal__read_rows(journal *j, int64_t after_seq, int64_t upto_seq,
                       struct journal_seal_row **rows, size_t *count)
{
  sqlite3_bind_int64(j->row_deltas, 1, after_seq);
  sqlite3_bind_int64(j->row_deltas, 2, upto_seq);
  return journal__read_rows_stmt(j, j->row_deltas, rows, count);
}

int journal__read_rows_stmt(journal *j, sqlite3_stmt *stmt, struct journal_seal_row **rows,
                            size_t *count)
{
  struct journal_seal_row *out = NULL;
  size_t n = 0, capacity = 0;
  int rc;

  *rows = NULL;
  *count = 0;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    struct journal_seal_row *row;
    if (n == capacity) {
      size_t grown_capacity = capacity ? capacity * 2 : 64;
      struct journal_seal_row *grown = realloc(out, grown_capacity * sizeof(*grown));
      if (!grown) {
        rc = SQLITE_NOMEM;
        break;
      }
      out = grown;
      capacity = grown_capacity;
    }
    row = &out[n];
    memset(row, 0, sizeof(*row));
    row->seq = sqlite3_column_int64(stmt, 0);
    row->business_time_ms = sqlite3_column_int64(stmt, 1);
    n++;
    if (stock_deltas_decode(sqlite3_column_blob(stmt, 2),
                            (size_t)sqlite3_column_bytes(stmt, 2), &j->names,
                            &row->deltas)) {
      log_error("journal", "deltas_damaged",
                "path=%s seq=%" PRId64 " reason=\"the row's stored deltas do not read back; "
                "the row is sent without them and on-hand is short of them\"",
                j->path, row->seq);
      stock_deltas_clear(&row->deltas);
    }
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  else if (rc != SQLITE_NOMEM)
    rc = sqlite3_extended_errcode(j->db);
  sqlite3_reset(stmt);
  if (rc != SQLITE_OK) {
    journal__free_rows(out, n);
    return rc;
  }
  *rows = out;
  *count = n;
  return SQLITE_OK;
}

/* ---- the stored base ------------------------------------------------------------ */

int journal__base_add(journal *j, const struct stock_deltas *d, int sign)
{
  int rc = SQLITE_OK;
  for (size_t i = 0; rc == SQLITE_OK && i < d->count; i++) {
    const struct stock_delta *e = &d->items[i];
    char key[STOCK_ID_MAX + 2];
    if (e->quantity_milli == 0)
      continue;
    /* Unmapped items are kept beside the materials as one total (key
     * "#*"), not per SKU: a row per SKU seen would grow the base without
     * bound and cost the seal a write per SKU, which a full journal, that
     * must seal to drain, cannot afford. */
    snprintf(key, sizeof(key), "%s", e->reason == STOCK_REASON_UNMAPPED ? "#*" : e->material_id);
    sqlite3_bind_text(j->base_add, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(j->base_add, 2, e->unit, -1, SQLITE_STATIC);
    sqlite3_bind_int64(j->base_add, 3, sign * e->quantity_milli);
    rc = journal__step_done(j, j->base_add);
  }
  sqlite3_clear_bindings(j->base_add);
  return rc;
}

/* A stored base row into `base`: a material's on-hand, or (prefixed) a
 * SKU's unmapped items. 0 or -1. */
static int journal_base_entry(struct stock_deltas *base, const char *key, const char *unit,
                              int64_t quantity_milli)
{
  if (key[0] == STOCK_UNMAPPED_PREFIX)
    return stock_deltas_add(base, key + 1, unit, STOCK_REASON_UNMAPPED, quantity_milli);
  /* Anything else is a material's on-hand. */
  return stock_deltas_add(base, key, unit, STOCK_REASON_DELIVERY, quantity_milli);
}

static int journal_load_base(journal *j, struct stock_deltas *base)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_BASE, -1, &stmt, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const char *material = (const char *)sqlite3_column_text(stmt, 0);
    const char *unit = (const char *)sqlite3_column_text(stmt, 1);
    rc = material && unit && journal_base_entry(base, material, unit,
                                                sqlite3_column_int64(stmt, 2)) == 0
             ? SQLITE_OK
             : SQLITE_CORRUPT;
  }
  sqlite3_finalize(stmt);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ---- the kept figures ---------------------------------------------------------------- */

/*
 * On-hand and the consumption not yet in a batch are kept in meta, so that
 * an open reads a few keys, not every row above the sealing cursor (a store
 * offline for months, or an agent without an uplink, holds a million of
 * them: 7.5 s to start and their memory, issue 12 item 4):
 *   stock_kept         the figures, in stock_deltas_encode's form: per
 *                      material its pending consumption (reason sales,
 *                      negated) and the rest of on-hand (reason delivery);
 *                      the unmapped items of the SKUs listed, the rest as "*"
 *   stock_kept_seq     the last row they count (each row at or below it)
 *   stock_kept_sealed  the sealing cursor when they were written
 * The writer writes them in a transaction of its own every
 * JOURNAL_STOCK_KEEP_ROWS rows journaled, sealed or unsealed, and at a
 * clean stop; never in a sale's transaction, which would write a page more
 * per commit (bytes to flash per sale, issue 12 item 3). An open brings
 * them to the journal as it is: the deltas of the rows above
 * stock_kept_seq applied, then those of the rows between stock_kept_sealed
 * and the cursor moved out of pending or back in (the stored base moves
 * with the cursor, so on-hand does not). After kill -9 that reads at most
 * about JOURNAL_STOCK_KEEP_ROWS rows and a group or a batch. An agent of a
 * release before these keys (rolled back to) leaves them as they are: its
 * rows and seals are read the same way, once, however many. What cannot
 * be followed is a row deleted in those ranges (retention of rows sealed
 * since, e.g. by such an agent) or a base changed otherwise (a new journal
 * importing the previous one's forgets the keys): then on-hand is rebuilt
 * from the base and every row above the cursor, once, and kept again.
 * The same transaction keeps the counts the open reads for the status
 * page, for the same reason: the sales held (meta sales_counted, moved
 * forward to the newest row) and those not acknowledged
 * (journal__count_unsent).
 */

/* The figures of `stock` as stored (see above) into `image`. SQLITE_OK,
 * SQLITE_NOMEM, or SQLITE_RANGE when a figure cannot be stored (a material
 * without a number, a sum beyond int64: then none is written, and the
 * figures stored before stay right for an open, which reads more rows). */
static int journal_stock_image(journal *j, struct stock_deltas *image)
{
  struct stock_material *materials = NULL;
  struct stock_unmapped *unmapped = NULL;
  size_t count = 0, unmapped_count = 0;
  int64_t unmapped_total = 0, listed = 0, rest;
  int rc = SQLITE_OK;

  if (stock_snapshot(&j->stock, &materials, &count, &unmapped, &unmapped_count,
                     &unmapped_total))
    rc = SQLITE_NOMEM;
  for (size_t i = 0; rc == SQLITE_OK && i < count; i++) {
    const struct stock_material *m = &materials[i];
    int64_t rest_of_on_hand;
    if (!stock_names_find(&j->names, m->material_id, m->unit)) {
      /* Only in memory (the recipes' materials, the thresholds'): the open
       * makes them again. Never moved, or the figures say what cannot be. */
      if (m->on_hand_milli || m->consumed_pending_milli)
        rc = SQLITE_RANGE;
      continue;
    }
    if (m->consumed_pending_milli == INT64_MIN ||
        __builtin_add_overflow(m->on_hand_milli, m->consumed_pending_milli, &rest_of_on_hand))
      rc = SQLITE_RANGE;
    else if (stock_deltas_add(image, m->material_id, m->unit, STOCK_REASON_DELIVERY,
                              rest_of_on_hand) ||
             (m->consumed_pending_milli &&
              stock_deltas_add(image, m->material_id, m->unit, STOCK_REASON_SALES,
                               -m->consumed_pending_milli)))
      rc = SQLITE_RANGE;
  }
  /* Per SKU, those of the rows not sealed: what an open that read them
   * would list. */
  for (size_t i = 0; rc == SQLITE_OK && i < j->unmapped_pending.count; i++) {
    const struct stock_delta *e = &j->unmapped_pending.items[i];
    if (__builtin_add_overflow(listed, e->quantity_milli, &listed) ||
        stock_deltas_add(image, e->material_id, "", STOCK_REASON_UNMAPPED, e->quantity_milli))
      rc = SQLITE_RANGE;
  }
  /* "*": the items of the SKUs not listed, as the stored base keeps them. */
  if (rc == SQLITE_OK && (__builtin_sub_overflow(unmapped_total, listed, &rest) ||
                          (rest && stock_deltas_add(image, "*", "", STOCK_REASON_UNMAPPED,
                                                    rest))))
    rc = SQLITE_RANGE;
  free(materials);
  free(unmapped);
  return rc;
}

/* The first column of `sql`'s first row (0 when none), ?1 = `key` when
 * not NULL. SQLite's code. */
static int journal_stock_query(journal *j, const char *sql, const char *key, int64_t *value)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL);

  *value = 0;
  if (rc == SQLITE_OK && key)
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
      *value = sqlite3_column_int64(stmt, 0);
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* Inside an open transaction: the figures in memory stored as the kept
 * ones (they count every row committed: no write of a group is open). */
static int journal_stock_keep_write(journal *j)
{
  struct stock_deltas image = {0};
  uint8_t *blob = NULL;
  size_t blob_len = 0;
  int64_t sealed = 0, last_row = 0;
  int rc = journal_stock_image(j, &image);

  if (rc == SQLITE_OK && stock_deltas_encode(&image, &j->names, &blob, &blob_len))
    rc = SQLITE_RANGE;
  if (rc == SQLITE_OK)
    rc = journal_stock_query(j, JOURNAL_SQL_GET_META, "sealed_last_seq", &sealed);
  if (rc == SQLITE_OK)
    rc = journal_stock_query(j, JOURNAL_SQL_LAST_ROW_SEQ, NULL, &last_row);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(j->set_meta, 1, "stock_kept", -1, SQLITE_STATIC);
    /* meta.value is NOT NULL: no figure at all is an empty BLOB. */
    if (blob_len)
      sqlite3_bind_blob(j->set_meta, 2, blob, (int)blob_len, SQLITE_STATIC);
    else
      sqlite3_bind_zeroblob(j->set_meta, 2, 0);
    rc = journal__step_done(j, j->set_meta);
    sqlite3_clear_bindings(j->set_meta);
  }
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "stock_kept_seq", last_row);
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "stock_kept_sealed", sealed);
  /* The kept counts of sales held and not acknowledged too: the open
   * counts the rows above them. */
  if (rc == SQLITE_OK)
    rc = journal__counted_keep(j, last_row);
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "sales_unsent_kept", (int64_t)j->stats.sales_unsent);
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "sales_unsent_seq", last_row);
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "sales_unsent_acked", j->stats.acked_last_seq);
  free(blob);
  stock_deltas_clear(&image);
  return rc;
}

/* At open, in a savepoint (inside the caller's transaction, if any): the
 * figures kept, after an open that read `rows` rows to make them. A
 * failure (a full or read-only journal) only means the next open reads
 * them again: logged, not returned. */
static void journal_stock_keep_now(journal *j, int64_t rows)
{
  int rc = sqlite3_exec(j->db, "SAVEPOINT stock_kept", NULL, NULL, NULL);

  if (rc == SQLITE_OK)
    rc = journal_stock_keep_write(j);
  if (rc != SQLITE_OK) {
    log_warn("journal", "stock_not_kept", "path=%s rows=%" PRId64 " sqlite=%d reason=\"%s\" "
             "action=\"the next start reads these rows again\"",
             j->path, rows, rc, sqlite3_errstr(rc));
    sqlite3_exec(j->db, "ROLLBACK TO stock_kept", NULL, NULL, NULL);
  }
  sqlite3_exec(j->db, "RELEASE stock_kept", NULL, NULL, NULL);
  j->stock_kept_stale = rc != SQLITE_OK;
}

void journal__stock_keep_due(journal *j, int force)
{
  /* stats.last_seq is written by this thread only (under the lock, for
   * the readers): reading it here needs none. */
  int64_t since = j->stats.last_seq - j->stock_kept_at + j->stock_kept_moved;
  int rc;

  if (j->stock_broken || !j->db)
    return;
  if (force ? since == 0 && !j->stock_kept_stale : since < JOURNAL_STOCK_KEEP_ROWS)
    return;
  rc = journal__set_page_limit(j, j->sale_max_pages);
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->begin);
  if (rc == SQLITE_OK)
    rc = journal_stock_keep_write(j);
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->commit);
  if (rc != SQLITE_OK && !sqlite3_get_autocommit(j->db))
    journal__step_done(j, j->rollback);
  /* Failed or not, the next try is JOURNAL_STOCK_KEEP_ROWS rows on: a full
   * journal is not written to at every group for figures it can do without. */
  j->stock_kept_at = j->stats.last_seq;
  j->stock_kept_moved = 0;
  j->stock_kept_stale = rc != SQLITE_OK;
  if (rc != SQLITE_OK && !j->stock_keep_failing)
    log_warn("journal", "stock_not_kept", "path=%s sqlite=%d reason=\"%s\" action=\"sales "
             "are taken; the next start reads more rows to count stock\"",
             j->path, rc, sqlite3_errstr(rc));
  else if (rc == SQLITE_OK && j->stock_keep_failing)
    log_info("journal", "stock_kept", "path=%s reason=\"written again\"", j->path);
  j->stock_keep_failing = rc != SQLITE_OK;
}

/* The deltas of each row in (after_seq, upto_seq], a row at a time (never
 * all of them in memory): applied to on-hand as rows above the cursor
 * (pending_sign 0), or their sales consumption only moved into pending
 * (1: rows unsealed since) or out of it (-1: sealed since). *rows counts
 * the rows read. SQLITE_OK or an error. Opening thread. */
static int journal_stock_apply_rows(journal *j, int64_t after_seq, int64_t upto_seq,
                                    int pending_sign, int64_t *rows)
{
  struct stock_deltas row = {0};
  int rc;

  sqlite3_bind_int64(j->row_deltas, 1, after_seq);
  sqlite3_bind_int64(j->row_deltas, 2, upto_seq);
  while ((rc = sqlite3_step(j->row_deltas)) == SQLITE_ROW) {
    row.count = 0;
    (*rows)++;
    if (stock_deltas_decode(sqlite3_column_blob(j->row_deltas, 2),
                            (size_t)sqlite3_column_bytes(j->row_deltas, 2), &j->names, &row)) {
      log_error("journal", "deltas_damaged",
                "path=%s seq=%" PRId64 " reason=\"the row's stored deltas do not read back; "
                "the row is sent without them and on-hand is short of them\"",
                j->path, (int64_t)sqlite3_column_int64(j->row_deltas, 0));
      continue;
    }
    journal__unmapped_pending_add(j, &row, pending_sign ? pending_sign : 1);
    if (pending_sign)
      stock_pending_add(&j->stock, &row, pending_sign);
    else if (stock_apply(&j->stock, &row, 1)) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  else if (rc != SQLITE_NOMEM)
    rc = sqlite3_extended_errcode(j->db);
  sqlite3_reset(j->row_deltas);
  stock_deltas_clear(&row);
  return rc;
}

/* What the kept figures say: *usable = 0 when there are none, they do not
 * read back, or the journal lost rows they would need (see above); else
 * `image` holds them, and *kept_seq, *kept_sealed where they stand. */
static int journal_stock_kept_read(journal *j, int64_t sealed, struct stock_deltas *image,
                                   int64_t *kept_seq, int64_t *kept_sealed, int *usable)
{
  sqlite3_stmt *stmt = NULL;
  int64_t lowest = 0;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_STOCK_KEPT, -1, &stmt, NULL);

  *usable = 0;
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      *kept_seq = sqlite3_column_int64(stmt, 1);
      *kept_sealed = sqlite3_column_int64(stmt, 2);
      *usable = *kept_seq >= 0 && *kept_sealed >= 0 &&
                stock_deltas_decode(sqlite3_column_blob(stmt, 0),
                                    (size_t)sqlite3_column_bytes(stmt, 0), &j->names,
                                    image) == 0;
      if (!*usable)
        log_warn("journal", "stock_kept_unreadable", "path=%s action=\"on-hand is counted "
                 "from every row above the sealing cursor, once\"", j->path);
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  /* The rows between the two cursors must all be held: retention deletes
   * the oldest rows, so the lowest held must be at or below the first of
   * them. (A gap in the seqs there, rows never written, reads as deleted:
   * counted in full once, never wrong.) */
  if (rc == SQLITE_OK && *usable && *kept_sealed != sealed) {
    int64_t from = (*kept_sealed < sealed ? *kept_sealed : sealed) + 1;
    rc = journal_stock_query(j, JOURNAL_SQL_LOWEST_ROW_SEQ, NULL, &lowest);
    if (rc == SQLITE_OK && lowest > from)
      *usable = 0;
  }
  if (!*usable)
    image->count = 0;
  return rc;
}

int journal__stock_rebuild(journal *j)
{
  struct stock_deltas image = {0};
  int64_t sealed_last_seq = 0, kept_seq = 0, kept_sealed = 0, rows = 0, moved = 0;
  int usable = 0;
  int rc;

  rc = journal__names_load(j);
  if (rc != SQLITE_OK)
    return rc;
  /* Thresholds stay (configuration); the figures come from the file. */
  pthread_mutex_lock(&j->stock.lock);
  for (size_t i = 0; i < j->stock.count; i++) {
    j->stock.materials[i].on_hand_milli = 0;
    j->stock.materials[i].consumed_pending_milli = 0;
    j->stock.materials[i].consumed_last_batch_milli = 0;
  }
  j->stock.unmapped_count = 0;
  j->stock.unmapped_items_milli = 0;
  pthread_mutex_unlock(&j->stock.lock);
  j->unmapped_pending.count = 0;

  rc = journal_stock_query(j, JOURNAL_SQL_GET_META, "sealed_last_seq", &sealed_last_seq);
  if (rc == SQLITE_OK)
    rc = journal_stock_kept_read(j, sealed_last_seq, &image, &kept_seq, &kept_sealed,
                                 &usable);
  if (rc == SQLITE_OK && usable) {
    /* The figures, the rows journaled since, then the cursor's moves. */
    if (stock_apply(&j->stock, &image, 1))
      rc = SQLITE_NOMEM;
    /* The SKUs listed ("*" is the rest of the total, not one). */
    for (size_t i = 0; i < image.count; i++) {
      if (image.items[i].reason == STOCK_REASON_UNMAPPED &&
          strcmp(image.items[i].material_id, "*") == 0)
        image.items[i].quantity_milli = 0;
    }
    journal__unmapped_pending_add(j, &image, 1);
    if (rc == SQLITE_OK)
      rc = journal_stock_apply_rows(j, kept_seq, INT64_MAX, 0, &rows);
    if (rc == SQLITE_OK && sealed_last_seq > kept_sealed)
      rc = journal_stock_apply_rows(j, kept_sealed, sealed_last_seq, -1, &moved);
    else if (rc == SQLITE_OK && sealed_last_seq < kept_sealed)
      rc = journal_stock_apply_rows(j, sealed_last_seq, kept_sealed, 1, &moved);
  } else if (rc == SQLITE_OK) {
    rc = journal_load_base(j, &image);
    if (rc == SQLITE_OK && stock_apply(&j->stock, &image, 1))
      rc = SQLITE_NOMEM;
    if (rc == SQLITE_OK)
      rc = journal_stock_apply_rows(j, sealed_last_seq, INT64_MAX, 0, &rows);
  }
  stock_deltas_clear(&image);
  if (rc != SQLITE_OK)
    return rc;
  /* The writer keeps them again JOURNAL_STOCK_KEEP_ROWS rows on, and at a
   * clean stop; an open that read that many keeps them now, so that a kill
   * before then does not read the same rows again. */
  j->stock_kept_at = j->stats.last_seq - rows;
  j->stock_kept_moved += moved; /* the open's count of unsent sales may have added */
  j->stock_kept_stale |= !usable || rows || moved;
  if (rows + moved >= JOURNAL_STOCK_KEEP_ROWS) {
    log_info("journal", "stock_counted", "path=%s rows=%" PRId64 " reason=\"%s\"", j->path,
             rows + moved, usable ? "rows journaled or sealed since the kept figures"
                                  : "no kept figures that cover this journal");
    journal_stock_keep_now(j, rows + moved);
    if (!j->stock_kept_stale) {
      j->stock_kept_at = j->stats.last_seq;
      j->stock_kept_moved = 0;
    }
  }
  return SQLITE_OK;
}

/* ---- recipes ---------------------------------------------------------------------- */

/* recipes_explode as a stock_explode_fn (the same call, the set untyped). */
static int journal_recipes_explode(const void *recipes, const char *sku, int64_t qty,
                                   int64_t business_time_ms, stock_emit_fn emit, void *arg)
{
  return recipes_explode(recipes, sku, qty, business_time_ms, emit, arg);
}

/* Every material of `r` gets an on-hand entry with its unit, so that the
 * status page lists what the recipes use before it first moves, and an
 * adjustment in another unit is refused from the first one. */
static void journal_seed_units(journal *j, const struct recipes *r)
{
  struct stock_deltas units = {0};
  size_t count = recipes_material_count(r);

  for (size_t i = 0; i < count; i++) {
    const char *material_id, *unit;
    if (recipes_material_at(r, i, &material_id, &unit) == 0)
      stock_deltas_add(&units, material_id, unit, STOCK_REASON_DELIVERY, 0);
  }
  stock_apply(&j->stock, &units, 1); /* zero quantities: units only */
  stock_deltas_clear(&units);
}

/* Takes `r` as the set in force (the old one is freed) and counts it. */
static void journal_use_recipes(journal *j, struct recipes *r, int64_t now_ms)
{
  recipes_free(j->recipes_owned);
  j->recipes_owned = r;
  j->recipes = r;
  journal_seed_units(j, r);
  pthread_mutex_lock(&j->lock);
  j->stats.recipes_in_force = recipes_count(r);
  j->stats.recipe_versions = recipes_version_count(r);
  j->stats.recipes_loaded_ms = now_ms;
  pthread_mutex_unlock(&j->lock);
}

int journal__recipes_open(journal *j, char *err, size_t err_size)
{
  char why[512];
  struct recipes *r;

  if (j->explode) /* the options gave a set of their own (tests) */
    return 0;
  (void)err;
  (void)err_size;
  j->explode = journal_recipes_explode;
  j->recipes_from_db = 1;
  r = recipes_load(j->db, why, sizeof(why));
  if (!r) {
    /* Never a reason to refuse sales: they are taken and kept, and only
     * their stock is not counted (rows carry no deltas while no set is
     * loaded) until a recipe set is loaded again. */
    pthread_mutex_lock(&j->lock);
    snprintf(j->stats.recipes_error, sizeof(j->stats.recipes_error),
             "the stored recipes cannot be read (%.150s): sales are taken but stock is not "
             "counted; load a recipe set again (POST /v1/recipes), and if that is refused "
             "the recipe tables are damaged: head office must look at the journal",
             why);
    pthread_mutex_unlock(&j->lock);
    log_error("journal", "recipes_unreadable",
              "path=%s reason=\"%s\" action=\"sales are taken, stock is not counted until a "
              "recipe set is loaded again with POST /v1/recipes\"",
              j->path, why);
    return 0;
  }
  journal_use_recipes(j, r, recipes_version_count(r) ? clock_wall_ms() : 0);
  return 0;
}

void journal__recipes_op(journal *j, struct journal_op *op)
{
  char why[sizeof(op->message)];
  struct recipes *r = NULL;
  int rc, applied;

  if (!j->recipes_from_db) {
    op->error = JOURNAL_EINVAL;
    snprintf(op->message, sizeof(op->message), "this journal uses a fixed recipe set");
    return;
  }
  why[0] = '\0';
  rc = journal__step_done(j, j->begin);
  if (rc != SQLITE_OK) {
    op->error = journal__map_sqlite(rc);
    snprintf(op->message, sizeof(op->message), "recipes not stored in %s: %s", j->path,
             sqlite3_errstr(rc));
    return;
  }
  applied = recipes_apply_counted(j->db, op->recipes_update, op->now_ms ? op->now_ms
                                                                        : clock_wall_ms(),
                                  &op->recipes_stored, &op->recipes_unchanged, why,
                                  sizeof(why));
  if (applied == RECIPES_OK) {
    /* Loaded inside the transaction: if the set cannot be read back, the
     * file is not kept either. */
    r = recipes_load(j->db, why, sizeof(why));
    if (!r)
      applied = RECIPES_ENOMEM;
  }
  rc = applied == RECIPES_OK ? journal__step_done(j, j->commit) : SQLITE_ABORT;
  if (rc != SQLITE_OK && !sqlite3_get_autocommit(j->db))
    journal__step_done(j, j->rollback);
  if (rc != SQLITE_OK) {
    recipes_free(r);
    op->recipes_stored = op->recipes_unchanged = 0;
    op->error = applied == RECIPES_EINVAL   ? JOURNAL_EINVAL
                : applied == RECIPES_ENOMEM ? JOURNAL_ENOMEM
                : applied == RECIPES_EDB    ? JOURNAL_EIO
                                            : journal__map_sqlite(rc);
    snprintf(op->message, sizeof(op->message), "%s",
             why[0] ? why : "the recipes could not be stored; the recipes in force are kept");
    return;
  }
  journal_use_recipes(j, r, clock_wall_ms());
  pthread_mutex_lock(&j->lock);
  j->stats.recipes_error[0] = '\0';
  pthread_mutex_unlock(&j->lock);
  log_info("journal", "recipes_loaded", "path=%s versions_stored=%zu unchanged=%zu "
           "skus_in_force=%zu", j->path, op->recipes_stored, op->recipes_unchanged,
           recipes_count(r));
}

/* ---- a new journal in place of one moved aside ------------------------------------ */

/* Runs `sql` (no rows) with ?1 = a and, if it has one, ?2 = b. */
static int journal_run2(journal *j, const char *sql, int64_t a, int64_t b)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    if (sqlite3_bind_parameter_count(stmt) >= 1)
      sqlite3_bind_int64(stmt, 1, a);
    if (sqlite3_bind_parameter_count(stmt) >= 2)
      sqlite3_bind_int64(stmt, 2, b);
    rc = journal__step_done(j, stmt);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* The new base: the previous one less the deltas of its rows in
 * (after_seq, its sealing cursor], which the new journal holds as rows. */
static int journal_import_base(journal *j, int64_t after_seq)
{
  struct stock_deltas base = {0};
  sqlite3_stmt *stmt = NULL;
  int64_t sealed = 0;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_PREVIOUS_SEALED, -1, &stmt, NULL);

  if (rc == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW)
    sealed = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  stmt = NULL;
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_PREVIOUS_BASE, -1, &stmt, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const char *material = (const char *)sqlite3_column_text(stmt, 0);
    const char *unit = (const char *)sqlite3_column_text(stmt, 1);
    rc = material && unit && !journal_base_entry(&base, material, unit,
                                                 sqlite3_column_int64(stmt, 2))
             ? SQLITE_OK
             : SQLITE_CORRUPT;
  }
  sqlite3_finalize(stmt);
  stmt = NULL;
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  if (rc == SQLITE_OK && sealed > after_seq) {
    rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_PREVIOUS_ROW_DELTAS, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_int64(stmt, 1, after_seq);
      sqlite3_bind_int64(stmt, 2, sealed);
    }
    while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      struct stock_deltas row = {0};
      rc = stock_deltas_decode(sqlite3_column_blob(stmt, 0),
                               (size_t)sqlite3_column_bytes(stmt, 0), &j->names, &row)
               ? SQLITE_CORRUPT
               : SQLITE_OK;
      for (size_t i = 0; rc == SQLITE_OK && i < row.count; i++) {
        enum stock_reason kind = row.items[i].reason == STOCK_REASON_UNMAPPED
                                     ? STOCK_REASON_UNMAPPED
                                     : STOCK_REASON_DELIVERY;
        if (stock_deltas_add(&base, row.items[i].material_id, row.items[i].unit, kind,
                             -row.items[i].quantity_milli))
          rc = SQLITE_NOMEM;
      }
      stock_deltas_clear(&row);
    }
    sqlite3_finalize(stmt);
    if (rc == SQLITE_DONE)
      rc = SQLITE_OK;
  }
  if (rc == SQLITE_OK)
    rc = journal__base_add(j, &base, 1);
  stock_deltas_clear(&base);
  return rc;
}

int journal__stock_import_previous(journal *j, int64_t after_seq)
{
  sqlite3_stmt *stmt = NULL;
  int64_t next_seq = 1, last_seq = 0;
  char why[256];
  int rc = journal_run2(j, JOURNAL_SQL_IMPORT_RECIPE_VERSIONS, 0, 0);

  if (rc == SQLITE_OK)
    rc = journal_run2(j, JOURNAL_SQL_IMPORT_RECIPE_COMPONENTS, 0, 0);
  /* The names first: the carried rows' stored deltas refer to them. */
  if (rc == SQLITE_OK)
    rc = journal_run2(j, JOURNAL_SQL_IMPORT_NAMES, 0, 0);
  if (rc == SQLITE_OK)
    rc = journal__names_load(j);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(j->db,
                            "SELECT coalesce((SELECT seq FROM main.sqlite_sequence"
                            " WHERE name = 'sales'), 0) + 1",
                            -1, &stmt, NULL);
  if (rc == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW)
    next_seq = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  if (rc == SQLITE_OK)
    rc = journal_run2(j, JOURNAL_SQL_IMPORT_ADJUSTMENTS, after_seq, next_seq);
  if (rc == SQLITE_OK) {
    last_seq = next_seq - 1 + sqlite3_changes(j->db);
    if (last_seq >= next_seq) {
      sqlite3_bind_int64(j->bump_seq, 1, last_seq);
      rc = journal__step_done(j, j->bump_seq);
      sqlite3_bind_int64(j->start_seq, 1, last_seq);
      if (rc == SQLITE_OK)
        rc = journal__step_done(j, j->start_seq);
    }
  }
  if (rc == SQLITE_OK)
    rc = journal_import_base(j, after_seq);
  /* A base made otherwise than by a seal: the figures this new journal
   * kept at its open (none yet) do not cover it. */
  if (rc == SQLITE_OK)
    rc = journal_run2(j, JOURNAL_SQL_STOCK_KEPT_FORGET, 0, 0);
  if (rc == SQLITE_OK)
    rc = journal__stock_rebuild(j);
  /* The rebuild may have kept the figures, and with them the count of
   * unsent sales from j->stats, which are the new file's before the
   * import: the open after it counts them instead. */
  if (rc == SQLITE_OK)
    rc = journal_run2(j, JOURNAL_SQL_UNSENT_KEPT_FORGET, 0, 0);
  if (rc == SQLITE_OK && j->recipes_from_db) {
    struct recipes *r = recipes_load(j->db, why, sizeof(why));
    if (!r)
      return SQLITE_NOMEM;
    recipes_free(j->recipes_owned);
    j->recipes_owned = r;
    j->recipes = r;
    journal_seed_units(j, r);
    j->stats.recipes_in_force = recipes_count(r);
    j->stats.recipe_versions = recipes_version_count(r);
    j->stats.recipes_loaded_ms = clock_wall_ms();
  }
  return rc;
}
