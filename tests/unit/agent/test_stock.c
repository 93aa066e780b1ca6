/*
 * test_stock.c - inventory in the journal, against real SQLite files: each
 * row's deltas stored with it, unmapped SKUs that never block a sale,
 * adjustments idempotent and in the sales' seq space, a count booked as its
 * variance, on-hand exact after a reopen, and batches carrying the
 * aggregated deltas of exactly the rows they cover.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "inventory/stock.h"
#include "journal/journal.h"
#include "journal_fixture.h"
#include "proto/codec.h"
#include "uplink/batcher.h"

struct fixture {
  struct jf_fixture jf;
  struct batcher_identity identity;
  int refunds_restock;
};

/* The recipe change: ten days after the fixture's sales (jf_sale_init). */
#define RECIPE_CHANGE_MS (1763746925000LL + 10 * 86400000LL)

/* The test's own recipe book, written here and not by the agent's recipe
 * code: a pizza is 250 g of dough flour and 125 g of mozzarella; a drink is
 * one can (flour changes at RECIPE_CHANGE_MS). Anything else has no recipe. */
static int test_explode(const void *recipes, const char *sku, int64_t qty,
                        int64_t business_time_ms, stock_emit_fn emit, void *arg)
{
  (void)recipes;
  if (strcmp(sku, "PIZZA") == 0) {
    /* From RECIPE_CHANGE_MS a pizza takes 300 g of flour. */
    emit(arg, "FLOUR", "g", qty * (business_time_ms >= RECIPE_CHANGE_MS ? 300000 : 250000));
    emit(arg, "MOZZARELLA", "g", qty * 125000);
    return 1;
  }
  if (strcmp(sku, "COLA") == 0) {
    emit(arg, "COLA-CAN", "piece", qty * 1000);
    return 1;
  }
  return 0;
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  jf_setup(&f->jf, "test_stock");
  assert_int_equal(batcher_identity_init(&f->identity, "S001", "D1", 3), 0);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  jf_teardown(&f->jf);
  free(f);
  return 0;
}

static journal *open_journal(struct fixture *f)
{
  struct journal_options options = {.path = f->jf.path,
                                     .group_commit_max = 64,
                                     .busy_timeout_ms = 1000,
                                     .explode = test_explode,
                                     .refunds_restock = f->refunds_restock};
  char err[512];
  journal *j = journal_open(&f->jf.loop, &options, err, sizeof(err));
  if (!j)
    fail_msg("journal_open: %s", err);
  return j;
}

/* A sale of `pizzas` PIZZA and `other` of SKU `other_sku` (if any). */
static void make_sale(struct sale *sale, const char *sale_id, enum sale_kind kind, int64_t pizzas,
                      const char *other_sku, int64_t other)
{
  size_t n = 0;
  jf_sale_init(sale, sale_id, SALE_CHANNEL_POS, "");
  sale->kind = kind;
  if (kind != SALE_KIND_SALE)
    snprintf(sale->original_sale_id, sizeof(sale->original_sale_id), "ORIG");
  sale->lines = calloc(2, sizeof(*sale->lines));
  if (pizzas) {
    snprintf(sale->lines[n].sku, sizeof(sale->lines[n].sku), "PIZZA");
    sale->lines[n].qty = pizzas;
    sale->lines[n++].unit_price = 1000;
  }
  if (other_sku) {
    snprintf(sale->lines[n].sku, sizeof(sale->lines[n].sku), "%s", other_sku);
    sale->lines[n].qty = other;
    sale->lines[n++].unit_price = 1000;
  }
  sale->line_count = n;
  sale->total = 1000 * (pizzas + other);
  sale->payment_count = 1;
  sale->payments = calloc(1, sizeof(*sale->payments));
  snprintf(sale->payments[0].method, sizeof(sale->payments[0].method), "card");
  sale->payments[0].amount = sale->total;
}

static void sell(struct fixture *f, journal *j, const char *sale_id, enum sale_kind kind,
                 int64_t pizzas, const char *other_sku, int64_t other)
{
  struct sale sale;
  struct jf_write w;
  make_sale(&sale, sale_id, kind, pizzas, other_sku, other);
  jf_write_and_wait(&f->jf, j, &w, &sale, 1);
  if (w.write.error)
    fail_msg("sale %s: %s", sale_id, w.write.message);
  sale_clear(&sale);
}

static void on_adjusted(struct journal_write *write) { ((struct jf_write *)write->user)->done = 1; }

static void make_adjustment(struct stock_adjustment *a, const char *id,
                            enum stock_adjustment_kind kind, const char *material,
                            const char *unit, int64_t quantity_milli)
{
  memset(a, 0, sizeof(*a));
  snprintf(a->adjustment_id, sizeof(a->adjustment_id), "%s", id);
  a->kind = kind;
  snprintf(a->material_id, sizeof(a->material_id), "%s", material);
  snprintf(a->unit, sizeof(a->unit), "%s", unit);
  a->quantity_milli = quantity_milli;
  snprintf(a->business_time, sizeof(a->business_time), "2026-11-21T19:00:00+01:00");
  a->business_time_ms = 1763748000000LL;
  a->utc_offset_minutes = 60;
}

/* Journals `a` and waits; the write's error and the result in `w`. */
static void adjust(struct fixture *f, journal *j, struct jf_write *w,
                   const struct stock_adjustment *a)
{
  memset(w, 0, sizeof(*w));
  w->write.adjustments = a;
  w->write.count = 1;
  w->write.results = w->results;
  w->write.done = on_adjusted;
  w->write.user = w;
  assert_int_equal(journal_submit(j, &w->write), 0);
  jf_wait(&f->jf, w);
}

static int64_t on_hand(journal *j, const char *material)
{
  char unit[STOCK_UNIT_MAX + 1];
  return stock_on_hand(journal_stock(j), material, unit);
}

/* Seals the next batch from everything unsealed; returns the decoded body
 * (caller frees) and the stored batch in *batch (caller clears op). */
static Pos__V1__Batch *seal(struct fixture *f, journal *j, struct jf_op *w, int64_t batch_seq,
                            size_t max_sales)
{
  struct proto_limits limits = {PROTO_DEFAULT_MAX_COMPRESSED, PROTO_DEFAULT_MAX_DECODED,
                                PROTO_DEFAULT_MAX_SALES};
  Pos__V1__Batch *decoded = NULL;
  char err[256];

  memset(w, 0, sizeof(*w));
  w->op.kind = JOURNAL_OP_NEXT_BATCH;
  w->op.batch_seq = batch_seq;
  w->op.seal_upto_seq = INT64_MAX;
  w->op.max_sales = max_sales;
  w->op.max_bytes = 1 << 20;
  w->op.pack = batcher_pack;
  w->op.pack_arg = &f->identity;
  jf_run_op(&f->jf, j, w);
  if (w->op.error)
    fail_msg("NEXT_BATCH %lld: %s", (long long)batch_seq, w->op.message);
  assert_int_equal(w->op.batch.batch_seq, batch_seq);
  if (proto_batch_unpack(w->op.batch.body, w->op.batch.body_len, &limits, &decoded, err,
                         sizeof(err)))
    fail_msg("batch %lld does not decode: %s", (long long)batch_seq, err);
  assert_int_equal(decoded->envelope->first_seq, w->op.batch.first_seq);
  assert_int_equal(decoded->envelope->last_seq, w->op.batch.last_seq);
  return decoded;
}

/* The batch's delta for (material, reason), checked to name the rows it
 * covers; 0 when it has none. */
static int64_t batch_delta(const Pos__V1__Batch *b, const char *material, int reason)
{
  int64_t sum = 0;
  for (size_t i = 0; i < b->n_inventory_deltas; i++) {
    const Pos__V1__InventoryDelta *d = b->inventory_deltas[i];
    assert_int_equal(d->first_seq, b->envelope->first_seq);
    assert_int_equal(d->last_seq, b->envelope->last_seq);
    assert_string_equal(d->store_id, "S001");
    assert_int_equal(d->journal_id.len, 16);
    if (strcmp(d->material_id, material) == 0 && (int)d->reason == reason)
      sum += d->quantity_milli;
  }
  return sum;
}

/* ---- the tests ------------------------------------------------------------------ */

static void a_sale_stores_its_deltas_in_its_row_and_moves_on_hand(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);

  sell(f, j, "S-1", SALE_KIND_SALE, 2, "COLA", 3);
  assert_int_equal(on_hand(j, "FLOUR"), -500000);
  assert_int_equal(on_hand(j, "MOZZARELLA"), -250000);
  assert_int_equal(on_hand(j, "COLA-CAN"), -3000);
  jf_close_journal(&f->jf, j);
  /* One row per sale: the deltas are in it, no table of per-material rows. */
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM sales WHERE deltas IS NOT NULL"),
                   1);
  assert_true(jf_query_int(&f->jf, "SELECT length(deltas) FROM sales") < 80);
}

/* Items of `sku` sold without a recipe, as the status page shows them. */
static int64_t unmapped_items(journal *j, const char *sku, int64_t *total)
{
  struct stock_material *materials = NULL;
  struct stock_unmapped *skus = NULL;
  size_t count = 0, sku_count = 0;
  int64_t items = 0;

  assert_int_equal(stock_snapshot(journal_stock(j), &materials, &count, &skus, &sku_count,
                                  total),
                   0);
  for (size_t i = 0; i < sku_count; i++) {
    if (strcmp(skus[i].sku, sku) == 0)
      items = skus[i].items_milli / 1000;
  }
  free(materials);
  free(skus);
  return items;
}

static void an_unmapped_sku_never_blocks_a_sale_and_is_counted(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op op;
  int64_t total = 0;

  sell(f, j, "S-1", SALE_KIND_SALE, 1, "GARLIC-BREAD", 2);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 1, 100), NULL);
  journal_op_clear(&op.op);
  sell(f, j, "S-2", SALE_KIND_SALE, 0, "GARLIC-BREAD", 1);
  assert_int_equal(unmapped_items(j, "GARLIC-BREAD", &total), 3);
  assert_int_equal(total, 3000);
  assert_int_equal(on_hand(j, "FLOUR"), -250000);
  jf_close_journal(&f->jf, j);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM sales"), 2);
  /* The total is kept over the journal's life (the sealed part in the
   * stored base); per SKU, what is not sealed yet. */
  j = open_journal(f);
  assert_int_equal(unmapped_items(j, "GARLIC-BREAD", &total), 1);
  assert_int_equal(total, 3000);
  jf_close_journal(&f->jf, j);
}

static void adjustments_are_idempotent_and_share_the_sales_seqs(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a;
  struct jf_write w;

  sell(f, j, "S-1", SALE_KIND_SALE, 1, NULL, 0);
  make_adjustment(&a, "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 25000000);
  adjust(f, j, &w, &a);
  assert_int_equal(w.write.error, 0);
  assert_int_equal(w.results[0].seq, 2);
  assert_int_equal(w.results[0].outcome, JOURNAL_STORED);
  sell(f, j, "S-2", SALE_KIND_SALE, 1, NULL, 0);

  /* A retry: the first seq, nothing booked twice. */
  adjust(f, j, &w, &a);
  assert_int_equal(w.write.error, 0);
  assert_int_equal(w.results[0].seq, 2);
  assert_int_equal(w.results[0].outcome, JOURNAL_DUPLICATE);
  assert_int_equal(on_hand(j, "FLOUR"), 25000000 - 500000);

  /* The same id with other content: refused, nothing booked. */
  a.quantity_milli = 1000;
  adjust(f, j, &w, &a);
  assert_int_equal(w.write.error, JOURNAL_ECONFLICT);
  assert_int_equal(w.write.conflict_seq, 2);
  assert_int_equal(on_hand(j, "FLOUR"), 25000000 - 500000);
  {
    struct journal_stats stats;
    journal_get_stats(j, &stats);
    assert_int_equal(stats.last_seq, 3);
    assert_int_equal(stats.sales_journaled, 2);
  }
  sell(f, j, "S-3", SALE_KIND_SALE, 1, NULL, 0);
  jf_close_journal(&f->jf, j);
  assert_int_equal(jf_query_int(&f->jf, "SELECT max(seq) FROM sales"), 4);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM adjustments"), 1);
}

static void a_count_books_its_variance_against_what_was_expected(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a;
  struct jf_write w;
  Pos__V1__Batch *b;
  struct jf_op op;

  make_adjustment(&a, "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 10000000);
  adjust(f, j, &w, &a);
  sell(f, j, "S-1", SALE_KIND_SALE, 4, NULL, 0); /* expected: 10 kg - 1 kg = 9 kg */
  make_adjustment(&a, "WASTE-1", STOCK_ADJUSTMENT_WASTE, "FLOUR", "g", 500000);
  adjust(f, j, &w, &a); /* expected 8.5 kg */
  make_adjustment(&a, "COUNT-1", STOCK_ADJUSTMENT_COUNT, "FLOUR", "g", 8200000);
  adjust(f, j, &w, &a);
  assert_int_equal(w.write.error, 0);
  assert_int_equal(on_hand(j, "FLOUR"), 8200000);

  b = seal(f, j, &op, 1, 100);
  assert_int_equal(b->envelope->first_seq, 1);
  assert_int_equal(b->envelope->last_seq, 4);
  assert_int_equal(b->n_sales, 1);
  assert_int_equal(batch_delta(b, "FLOUR", POS__V1__DELTA_REASON__DELTA_REASON_DELIVERY),
                   10000000);
  assert_int_equal(batch_delta(b, "FLOUR", POS__V1__DELTA_REASON__DELTA_REASON_SALES), -1000000);
  assert_int_equal(batch_delta(b, "FLOUR", POS__V1__DELTA_REASON__DELTA_REASON_WASTE), -500000);
  assert_int_equal(batch_delta(b, "FLOUR", POS__V1__DELTA_REASON__DELTA_REASON_STOCK_COUNT),
                   -300000);
  pos__v1__batch__free_unpacked(b, NULL);
  journal_op_clear(&op.op);
  jf_close_journal(&f->jf, j);
}

static void on_hand_is_the_same_after_a_reopen_sealed_or_not(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a;
  struct jf_write w;
  struct jf_op op;
  int64_t flour, mozzarella;

  make_adjustment(&a, "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "MOZZARELLA", "g", 5000000);
  adjust(f, j, &w, &a);
  sell(f, j, "S-1", SALE_KIND_SALE, 3, "COLA", 1);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 1, 100), NULL);
  journal_op_clear(&op.op);
  /* After the seal: rows that only the in-memory figure holds. */
  sell(f, j, "S-2", SALE_KIND_SALE, 2, NULL, 0);
  make_adjustment(&a, "COUNT-1", STOCK_ADJUSTMENT_COUNT, "COLA-CAN", "piece", 24000);
  adjust(f, j, &w, &a);
  flour = on_hand(j, "FLOUR");
  mozzarella = on_hand(j, "MOZZARELLA");
  assert_int_equal(flour, -1250000);
  assert_int_equal(mozzarella, 5000000 - 625000);
  assert_int_equal(on_hand(j, "COLA-CAN"), 24000);
  jf_close_journal(&f->jf, j);
  /* The stored base is as of the sealing cursor (the first batch only). */
  assert_int_equal(jf_query_int(&f->jf, "SELECT on_hand_milli FROM stock_base WHERE "
                                        "material_id = 'FLOUR'"),
                   -750000);

  j = open_journal(f);
  assert_int_equal(on_hand(j, "FLOUR"), flour);
  assert_int_equal(on_hand(j, "MOZZARELLA"), mozzarella);
  assert_int_equal(on_hand(j, "COLA-CAN"), 24000);
  jf_close_journal(&f->jf, j);
}

static void batches_cover_contiguous_rows_and_carry_each_delta_once(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a;
  struct jf_write w;
  struct jf_op op;
  Pos__V1__Batch *b;
  int64_t flour_sent = 0, next_first = 1;

  /* sale, adjustment, sale, sale, adjustment: batches of at most 2 sales. */
  sell(f, j, "S-1", SALE_KIND_SALE, 1, NULL, 0);
  make_adjustment(&a, "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 1000000);
  adjust(f, j, &w, &a);
  sell(f, j, "S-2", SALE_KIND_SALE, 1, NULL, 0);
  sell(f, j, "S-3", SALE_KIND_SALE, 1, NULL, 0);
  make_adjustment(&a, "WASTE-1", STOCK_ADJUSTMENT_WASTE, "FLOUR", "g", 1000);
  adjust(f, j, &w, &a);
  for (int64_t batch_seq = 1; batch_seq <= 2; batch_seq++) {
    b = seal(f, j, &op, batch_seq, 2);
    assert_int_equal((int64_t)b->envelope->first_seq, next_first);
    next_first = (int64_t)b->envelope->last_seq + 1;
    for (size_t i = 0; i < b->n_inventory_deltas; i++) {
      if (strcmp(b->inventory_deltas[i]->material_id, "FLOUR") == 0)
        flour_sent += b->inventory_deltas[i]->quantity_milli;
    }
    pos__v1__batch__free_unpacked(b, NULL);
    journal_op_clear(&op.op);
  }
  /* Every row once: 3 pizzas, the delivery and the waste. */
  assert_int_equal(next_first, 6);
  assert_int_equal(flour_sent, -750000 + 1000000 - 1000);
  assert_int_equal(flour_sent, on_hand(j, "FLOUR"));

  /* Adjustments alone make a batch too (no sales in it). */
  make_adjustment(&a, "DEL-2", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 2000);
  adjust(f, j, &w, &a);
  b = seal(f, j, &op, 3, 2);
  assert_int_equal(b->n_sales, 0);
  assert_int_equal(b->envelope->first_seq, 6);
  assert_int_equal(b->envelope->last_seq, 6);
  assert_int_equal(batch_delta(b, "FLOUR", POS__V1__DELTA_REASON__DELTA_REASON_DELIVERY), 2000);
  pos__v1__batch__free_unpacked(b, NULL);
  journal_op_clear(&op.op);
  jf_close_journal(&f->jf, j);
}

static void a_resealed_batch_after_a_413_counts_each_delta_once(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op op;
  Pos__V1__Batch *b;

  sell(f, j, "S-1", SALE_KIND_SALE, 1, NULL, 0);
  sell(f, j, "S-2", SALE_KIND_SALE, 1, NULL, 0);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 1, 100), NULL);
  journal_op_clear(&op.op);
  memset(&op, 0, sizeof(op));
  op.op.kind = JOURNAL_OP_UNSEAL;
  op.op.batch_seq = 1;
  jf_run_op(&f->jf, j, &op);
  assert_int_equal(op.op.error, 0);
  jf_close_journal(&f->jf, j);
  /* The base went back with the cursor: nothing is counted twice. */
  assert_int_equal(jf_query_int(&f->jf, "SELECT coalesce(sum(on_hand_milli), 0) FROM "
                                        "stock_base"),
                   0);
  j = open_journal(f);
  assert_int_equal(on_hand(j, "FLOUR"), -500000);
  b = seal(f, j, &op, 1, 1);
  assert_int_equal(batch_delta(b, "FLOUR", POS__V1__DELTA_REASON__DELTA_REASON_SALES), -250000);
  pos__v1__batch__free_unpacked(b, NULL);
  journal_op_clear(&op.op);
  jf_close_journal(&f->jf, j);
  j = open_journal(f);
  assert_int_equal(on_hand(j, "FLOUR"), -500000);
  jf_close_journal(&f->jf, j);
}

static void refunds_restock_only_when_the_store_says_so(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);

  sell(f, j, "S-1", SALE_KIND_SALE, 2, NULL, 0);
  sell(f, j, "R-1", SALE_KIND_REFUND, 1, NULL, 0);
  assert_int_equal(on_hand(j, "FLOUR"), -500000); /* default: a refund is binned */
  jf_close_journal(&f->jf, j);

  f->refunds_restock = 1;
  j = open_journal(f);
  sell(f, j, "V-1", SALE_KIND_VOID, 1, NULL, 0);
  assert_int_equal(on_hand(j, "FLOUR"), -250000);
  jf_close_journal(&f->jf, j);
}

static void run_simple_op(struct fixture *f, journal *j, enum journal_op_kind kind,
                          int64_t batch_seq)
{
  struct jf_op op;
  memset(&op, 0, sizeof(op));
  op.op.kind = kind;
  op.op.batch_seq = batch_seq;
  op.op.reason = "test";
  jf_run_op(&f->jf, j, &op);
  if (op.op.error)
    fail_msg("op %d: %s", (int)kind, op.op.message);
}

static void a_new_journal_in_place_keeps_on_hand_and_unsent_adjustments(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a;
  struct jf_write w;
  struct jf_op op;
  Pos__V1__Batch *b;
  int64_t flour_resent = 0;

  make_adjustment(&a, "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 10000000);
  adjust(f, j, &w, &a);
  sell(f, j, "S-1", SALE_KIND_SALE, 1, NULL, 0);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 1, 100), NULL);
  journal_op_clear(&op.op);
  run_simple_op(f, j, JOURNAL_OP_ACK, 1);
  /* Sealed, not acknowledged: sent again by the new journal. */
  sell(f, j, "S-2", SALE_KIND_SALE, 2, NULL, 0);
  make_adjustment(&a, "WASTE-1", STOCK_ADJUSTMENT_WASTE, "FLOUR", "g", 1000);
  adjust(f, j, &w, &a);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 2, 100), NULL);
  journal_op_clear(&op.op);
  /* Not sealed at all. */
  sell(f, j, "S-3", SALE_KIND_SALE, 1, NULL, 0);
  assert_int_equal(on_hand(j, "FLOUR"), 10000000 - 1000000 - 1000);

  run_simple_op(f, j, JOURNAL_OP_NEW_JOURNAL, 0);
  assert_int_equal(on_hand(j, "FLOUR"), 10000000 - 1000000 - 1000);
  /* The new journal's first batch carries what the collector may lack:
   * S-2, the waste, S-3; not the acknowledged delivery and S-1. */
  b = seal(f, j, &op, 1, 100);
  for (size_t i = 0; i < b->n_inventory_deltas; i++) {
    if (strcmp(b->inventory_deltas[i]->material_id, "FLOUR") == 0)
      flour_resent += b->inventory_deltas[i]->quantity_milli;
  }
  assert_int_equal(b->n_sales, 2);
  assert_int_equal(flour_resent, -750000 - 1000);
  pos__v1__batch__free_unpacked(b, NULL);
  journal_op_clear(&op.op);
  make_adjustment(&a, "WASTE-1", STOCK_ADJUSTMENT_WASTE, "FLOUR", "g", 1000);
  adjust(f, j, &w, &a);
  assert_int_equal(w.results[0].outcome, JOURNAL_DUPLICATE);
  jf_close_journal(&f->jf, j);

  j = open_journal(f);
  assert_int_equal(on_hand(j, "FLOUR"), 10000000 - 1000000 - 1000);
  jf_close_journal(&f->jf, j);
}

static void a_refund_gives_back_what_its_original_consumed(void **state)
{
  struct fixture *f = *state;
  journal *j;
  struct sale sale;
  struct jf_write w;

  f->refunds_restock = 1;
  j = open_journal(f);
  sell(f, j, "S-1", SALE_KIND_SALE, 1, NULL, 0); /* before the change: 250 g */
  /* Refunded after the recipe change: the 250 g it used come back. */
  make_sale(&sale, "R-1", SALE_KIND_REFUND, 1, NULL, 0);
  snprintf(sale.original_sale_id, sizeof(sale.original_sale_id), "S-1");
  sale.business_time_ms = RECIPE_CHANGE_MS + 4 * 86400000LL;
  jf_write_and_wait(&f->jf, j, &w, &sale, 1);
  assert_int_equal(w.write.error, 0);
  sale_clear(&sale);
  assert_int_equal(on_hand(j, "FLOUR"), 0);
  /* An original this journal never held: reversed at the refund's time. */
  make_sale(&sale, "R-2", SALE_KIND_REFUND, 1, NULL, 0);
  sale.business_time_ms = RECIPE_CHANGE_MS + 4 * 86400000LL;
  jf_write_and_wait(&f->jf, j, &w, &sale, 1);
  assert_int_equal(w.write.error, 0);
  sale_clear(&sale);
  assert_int_equal(on_hand(j, "FLOUR"), 300000);
  jf_close_journal(&f->jf, j);
}

static void retention_deletes_old_rows_and_on_hand_stays(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a;
  struct jf_write w;
  struct jf_op op;

  make_adjustment(&a, "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 10000000);
  adjust(f, j, &w, &a);
  sell(f, j, "S-1", SALE_KIND_SALE, 2, NULL, 0);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 1, 100), NULL);
  journal_op_clear(&op.op);
  run_simple_op(f, j, JOURNAL_OP_ACK, 1);
  sell(f, j, "S-2", SALE_KIND_SALE, 1, NULL, 0);
  memset(&op, 0, sizeof(op));
  op.op.kind = JOURNAL_OP_RETENTION;
  op.op.now_ms = 4102444800000LL; /* 2100: everything acknowledged is old */
  op.op.retention_ms = 1000;
  jf_run_op(&f->jf, j, &op);
  assert_int_equal(op.op.error, 0);
  assert_int_equal(on_hand(j, "FLOUR"), 10000000 - 750000);
  jf_close_journal(&f->jf, j);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM adjustments"), 0);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM sales"), 1);
  j = open_journal(f);
  assert_int_equal(on_hand(j, "FLOUR"), 10000000 - 750000);
  jf_close_journal(&f->jf, j);
}

static void a_refused_write_takes_back_the_material_numbers_it_made(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a[2];
  struct jf_write w;

  make_adjustment(&a[0], "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 1000);
  adjust(f, j, &w, &a[0]);
  /* SALT's first use, then a conflict: the whole write is refused. */
  make_adjustment(&a[0], "DEL-SALT", STOCK_ADJUSTMENT_DELIVERY, "SALT", "g", 5000);
  make_adjustment(&a[1], "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 2000);
  memset(&w, 0, sizeof(w));
  w.write.adjustments = a;
  w.write.count = 2;
  w.write.results = w.results;
  w.write.done = on_adjusted;
  w.write.user = &w;
  assert_int_equal(journal_submit(j, &w.write), 0);
  jf_wait(&f->jf, &w);
  assert_int_equal(w.write.error, JOURNAL_ECONFLICT);
  assert_int_equal(on_hand(j, "SALT"), 0);
  /* SALT again, and a sale that numbers one more material. */
  adjust(f, j, &w, &a[0]);
  assert_int_equal(w.write.error, 0);
  sell(f, j, "S-1", SALE_KIND_SALE, 1, NULL, 0);
  jf_close_journal(&f->jf, j);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM stock_names"), 3);
  assert_int_equal(jf_query_int(&f->jf, "SELECT max(name_id) FROM stock_names"), 3);

  j = open_journal(f);
  assert_int_equal(on_hand(j, "SALT"), 5000);
  assert_int_equal(on_hand(j, "FLOUR"), 1000 - 250000);
  assert_int_equal(on_hand(j, "MOZZARELLA"), -125000);
  jf_close_journal(&f->jf, j);
}

/* ---- the kept figures: an open reads them, not every unsealed row ---------------- */

/* What the status page shows of stock: each material's on-hand and
 * consumption not yet in a batch, the unmapped SKUs listed, their total. */
struct figures {
  struct stock_material *materials;
  size_t count;
  struct stock_unmapped *skus;
  size_t sku_count;
  int64_t unmapped_total;
};

static void figures_take(journal *j, struct figures *fig)
{
  assert_int_equal(stock_snapshot(journal_stock(j), &fig->materials, &fig->count, &fig->skus,
                                  &fig->sku_count, &fig->unmapped_total),
                   0);
}

static void figures_free(struct figures *fig)
{
  free(fig->materials);
  free(fig->skus);
  memset(fig, 0, sizeof(*fig));
}

/* `j`'s figures are `before`'s (a material absent on one side counts 0). */
static void assert_figures_are(journal *j, const struct figures *before)
{
  struct figures after;
  figures_take(j, &after);
  for (size_t i = 0; i < before->count; i++) {
    const struct stock_material *m = &before->materials[i];
    char unit[STOCK_UNIT_MAX + 1];
    int64_t pending = 0;
    for (size_t k = 0; k < after.count; k++) {
      if (strcmp(after.materials[k].material_id, m->material_id) == 0)
        pending = after.materials[k].consumed_pending_milli;
    }
    if (stock_on_hand(journal_stock(j), m->material_id, unit) != m->on_hand_milli ||
        pending != m->consumed_pending_milli)
      fail_msg("%s: on-hand %lld, pending %lld after the reopen; %lld, %lld before",
               m->material_id, (long long)stock_on_hand(journal_stock(j), m->material_id, unit),
               (long long)pending, (long long)m->on_hand_milli,
               (long long)m->consumed_pending_milli);
  }
  for (size_t k = 0; k < after.count; k++) {
    int found = 0;
    for (size_t i = 0; i < before->count; i++)
      found |= strcmp(after.materials[k].material_id, before->materials[i].material_id) == 0;
    if (!found && (after.materials[k].on_hand_milli || after.materials[k].consumed_pending_milli))
      fail_msg("%s moved after the reopen only", after.materials[k].material_id);
  }
  assert_int_equal(after.unmapped_total, before->unmapped_total);
  assert_int_equal(after.sku_count, before->sku_count);
  for (size_t i = 0; i < before->sku_count; i++) {
    assert_string_equal(after.skus[i].sku, before->skus[i].sku);
    assert_int_equal(after.skus[i].items_milli, before->skus[i].items_milli);
  }
  figures_free(&after);
}

/* Consumption of `material` not yet in a batch. */
static int64_t pending(journal *j, const char *material)
{
  struct figures fig;
  int64_t value = 0;
  figures_take(j, &fig);
  for (size_t i = 0; i < fig.count; i++) {
    if (strcmp(fig.materials[i].material_id, material) == 0)
      value = fig.materials[i].consumed_pending_milli;
  }
  figures_free(&fig);
  return value;
}

/* Runs `sql` on the journal file (closed) as the sqlite3 CLI would. */
static void exec_sql(struct fixture *f, const char *sql)
{
  sqlite3 *db = NULL;
  char *err = NULL;
  assert_int_equal(sqlite3_open(f->jf.path, &db), SQLITE_OK);
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
    fail_msg("%s: %s", sql, err);
  sqlite3_close(db);
}

static void unseal(struct fixture *f, journal *j, int64_t batch_seq)
{
  struct jf_op op;
  memset(&op, 0, sizeof(op));
  op.op.kind = JOURNAL_OP_UNSEAL;
  op.op.batch_seq = batch_seq;
  jf_run_op(&f->jf, j, &op);
  assert_int_equal(op.op.error, 0);
}

static void pending_consumption_after_a_reopen_is_what_it_was_at_close(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a;
  struct jf_write w;
  struct jf_op op;
  struct figures before;

  sell(f, j, "S-1", SALE_KIND_SALE, 1, NULL, 0);
  sell(f, j, "S-2", SALE_KIND_SALE, 2, "COLA", 1);
  make_adjustment(&a, "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 10000000);
  adjust(f, j, &w, &a);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 1, 1), NULL);
  journal_op_clear(&op.op);
  assert_int_equal(pending(j, "FLOUR"), 500000);
  /* A 413: the batch is cut again, its rows pending meanwhile. */
  unseal(f, j, 1);
  assert_int_equal(pending(j, "FLOUR"), 750000);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 1, 100), NULL);
  journal_op_clear(&op.op);
  sell(f, j, "S-3", SALE_KIND_SALE, 1, "GARLIC-BREAD", 2);
  make_adjustment(&a, "WASTE-1", STOCK_ADJUSTMENT_WASTE, "MOZZARELLA", "g", 5000);
  adjust(f, j, &w, &a);
  make_adjustment(&a, "CNT-1", STOCK_ADJUSTMENT_COUNT, "COLA-CAN", "piece", 24000);
  adjust(f, j, &w, &a);
  sell(f, j, "S-4", SALE_KIND_SALE, 3, NULL, 0);
  assert_int_equal(pending(j, "FLOUR"), 1000000);
  assert_int_equal(on_hand(j, "FLOUR"), 10000000 - 1750000);
  figures_take(j, &before);
  jf_close_journal(&f->jf, j);

  j = open_journal(f);
  assert_figures_are(j, &before);
  jf_close_journal(&f->jf, j);
  /* Read from the kept figures, not from the rows: with every row's
   * deltas gone, the open still has them (it read none). */
  exec_sql(f, "UPDATE sales SET deltas = NULL; UPDATE adjustments SET deltas = NULL;");
  j = open_journal(f);
  assert_figures_are(j, &before);
  jf_close_journal(&f->jf, j);
  figures_free(&before);
}

/* The status page's counts of sales held and not acknowledged. */
static void assert_counts(journal *j, uint64_t journaled, uint64_t unsent)
{
  struct journal_stats stats;
  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_journaled, journaled);
  assert_int_equal(stats.sales_unsent, unsent);
}

/* One PIZZA (make_sale), for jf_add_sales. */
static void make_pizza_sale(struct sale *sale, const char *sale_id, size_t lines)
{
  (void)lines;
  make_sale(sale, sale_id, SALE_KIND_SALE, 1, NULL, 0);
}

#define KILLED_SALES 3000

static void a_kill_leaves_kept_figures_an_open_brings_up_to_date(void **state)
{
  struct fixture *f = *state;
  journal *j;
  int status = 0;
  pid_t child = fork();

  assert_true(child >= 0);
  if (child == 0) {
    /* An agent that journals, then dies without closing (kill -9). */
    struct fixture killed = *f;
    uv_loop_init(&killed.jf.loop);
    j = open_journal(&killed);
    jf_add_sales(&killed.jf, j, "K", KILLED_SALES, 1, make_pizza_sale);
    _exit(on_hand(j, "FLOUR") == -250000LL * KILLED_SALES ? 0 : 3);
  }
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  /* Kept while it journaled: an open reads at most what came after. */
  assert_true(jf_query_int(&f->jf, "SELECT CAST(value AS INTEGER) FROM meta "
                                   "WHERE key = 'stock_kept_seq'") >=
              KILLED_SALES - 2 * 1024);
  j = open_journal(f);
  assert_int_equal(on_hand(j, "FLOUR"), -250000LL * KILLED_SALES);
  assert_int_equal(pending(j, "FLOUR"), 250000LL * KILLED_SALES);
  assert_int_equal(pending(j, "MOZZARELLA"), 125000LL * KILLED_SALES);
  assert_counts(j, KILLED_SALES, KILLED_SALES);
  jf_close_journal(&f->jf, j);
}

static void figures_an_older_agent_left_behind_are_brought_up_to_date(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct stock_adjustment a;
  struct jf_write w;
  struct jf_op op;
  struct figures before;
  const char *save = "CREATE TABLE saved AS SELECT * FROM meta WHERE key LIKE 'stock_kept%'"
                     " OR key LIKE 'sales_unsent%' OR key LIKE 'sales_counted%';";
  const char *restore =
      "INSERT OR REPLACE INTO meta SELECT * FROM saved;";

  sell(f, j, "S-1", SALE_KIND_SALE, 1, NULL, 0);
  sell(f, j, "S-2", SALE_KIND_SALE, 1, NULL, 0);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 1, 100), NULL);
  journal_op_clear(&op.op);
  jf_close_journal(&f->jf, j);
  exec_sql(f, save);

  /* What an agent before the kept figures would leave: rows and a seal
   * it did not count in them. */
  j = open_journal(f);
  sell(f, j, "S-3", SALE_KIND_SALE, 2, NULL, 0);
  make_adjustment(&a, "DEL-1", STOCK_ADJUSTMENT_DELIVERY, "FLOUR", "g", 10000000);
  adjust(f, j, &w, &a);
  pos__v1__batch__free_unpacked(seal(f, j, &op, 2, 100), NULL);
  journal_op_clear(&op.op);
  run_simple_op(f, j, JOURNAL_OP_ACK, 2);
  sell(f, j, "S-5", SALE_KIND_SALE, 1, "GARLIC-BREAD", 1);
  figures_take(j, &before);
  assert_int_equal(pending(j, "FLOUR"), 250000);
  assert_counts(j, 4, 1);
  jf_close_journal(&f->jf, j);
  exec_sql(f, restore);
  assert_int_equal(jf_query_int(&f->jf, "SELECT CAST(value AS INTEGER) FROM meta "
                                        "WHERE key = 'stock_kept_sealed'"),
                   2);

  j = open_journal(f);
  assert_figures_are(j, &before);
  assert_counts(j, 4, 1);
  jf_close_journal(&f->jf, j);

  /* The same, and both batches' rows deleted as retention deletes them
   * (the oldest first), those that agent sealed too: the figures cannot be
   * brought up to date, on-hand is counted from the stored base and the
   * rows above the cursor. */
  exec_sql(f, restore);
  exec_sql(f, "DELETE FROM sales WHERE seq <= (SELECT max(last_seq) FROM batches);"
              " DELETE FROM adjustments;");
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM sales"), 1);
  j = open_journal(f);
  assert_figures_are(j, &before);
  assert_counts(j, 1, 1);
  jf_close_journal(&f->jf, j);
  /* None at all (an agent before them made this journal): the same. */
  exec_sql(f, "DELETE FROM meta WHERE key LIKE 'stock_kept%' OR key LIKE 'sales_unsent%';");
  j = open_journal(f);
  assert_figures_are(j, &before);
  assert_counts(j, 1, 1);
  jf_close_journal(&f->jf, j);
  figures_free(&before);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_sale_stores_its_deltas_in_its_row_and_moves_on_hand,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(an_unmapped_sku_never_blocks_a_sale_and_is_counted, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(adjustments_are_idempotent_and_share_the_sales_seqs, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_count_books_its_variance_against_what_was_expected,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(on_hand_is_the_same_after_a_reopen_sealed_or_not, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(batches_cover_contiguous_rows_and_carry_each_delta_once,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_resealed_batch_after_a_413_counts_each_delta_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(refunds_restock_only_when_the_store_says_so, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          a_new_journal_in_place_keeps_on_hand_and_unsent_adjustments, setup, teardown),
      cmocka_unit_test_setup_teardown(a_refund_gives_back_what_its_original_consumed, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(retention_deletes_old_rows_and_on_hand_stays, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          a_refused_write_takes_back_the_material_numbers_it_made, setup, teardown),
      cmocka_unit_test_setup_teardown(
          pending_consumption_after_a_reopen_is_what_it_was_at_close, setup, teardown),
      cmocka_unit_test_setup_teardown(a_kill_leaves_kept_figures_an_open_brings_up_to_date,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          figures_an_older_agent_left_behind_are_brought_up_to_date, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
