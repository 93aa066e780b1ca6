/*
 * journal_stock.c - inventory in the journal (schema v5): adjustments
 * journaled like sales, each row's deltas computed once in the transaction
 * that journals it, on-hand kept on the writer thread and rebuilt at open.
 *
 * On-hand = stock_base (written by the seal transaction, as of the sealing
 * cursor) + the deltas of every row above the cursor. Between seals it
 * lives in memory only, so a sale costs no write beyond its own row; after
 * kill -9 the rebuild reads the same rows and comes to the same figure.
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
  j->staged[j->staged_count++].deltas = *deltas;
  memset(deltas, 0, sizeof(*deltas));
  return SQLITE_OK;
}

void journal__unstage(journal *j, size_t from)
{
  while (j->staged_count > from) {
    struct stock_deltas *d = &j->staged[--j->staged_count].deltas;
    stock_apply(&j->stock, d, -1);
    stock_deltas_clear(d);
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

int journal__stock_rebuild(journal *j)
{
  struct stock_deltas base = {0};
  struct journal_seal_row *rows = NULL;
  size_t count = 0;
  int64_t sealed_last_seq = 0;
  sqlite3_stmt *stmt = NULL;
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

  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_META, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, "sealed_last_seq", -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW)
      sealed_last_seq = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  if (rc == SQLITE_OK)
    rc = journal_load_base(j, &base);
  if (rc == SQLITE_OK && stock_apply(&j->stock, &base, 1))
    rc = SQLITE_NOMEM;
  if (rc == SQLITE_OK)
    rc = journal__read_rows(j, sealed_last_seq, INT64_MAX, &rows, &count);
  for (size_t i = 0; rc == SQLITE_OK && i < count; i++) {
    if (stock_apply(&j->stock, &rows[i].deltas, 1))
      rc = SQLITE_NOMEM;
  }
  journal__free_rows(rows, count);
  stock_deltas_clear(&base);
  return rc;
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
  if (rc == SQLITE_OK)
    rc = journal__stock_rebuild(j);
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
